package decompress_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/imgcast/imgcast/internal/testtools"
	"github.com/imgcast/imgcast/pkg/restore/decompress"
)

func payload() []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 3<<20)
	for i := range b {
		if i%7 == 0 {
			b[i] = byte(rng.Uint32())
		}
	}
	return b
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

func zs(b []byte) []byte {
	var out bytes.Buffer
	w, _ := zstd.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

func TestFormats(t *testing.T) {
	p := payload()
	half := len(p) / 2
	skippable := append([]byte{0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 1, 2, 3, 4}, zs(p)...)
	for _, tc := range []struct {
		name string
		in   []byte
		kind decompress.Kind
	}{
		{"none", p, decompress.None},
		{"gzip", gz(p), decompress.Gzip},
		{"gzip two members", append(gz(p[:half]), gz(p[half:])...), decompress.Gzip},
		{"zstd", zs(p), decompress.Zstd},
		{"zstd two frames", append(zs(p[:half]), zs(p[half:])...), decompress.Zstd},
		{"zstd skippable frame first", skippable, decompress.Zstd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// One byte per Read: the decoders must not need more than a stream.
			r, kind, err := decompress.NewReader(io.LimitReader(bytes.NewReader(tc.in), int64(len(tc.in))))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if kind != tc.kind {
				t.Errorf("kind %s, want %s", kind, tc.kind)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, p) {
				t.Fatal("decompressed data differs")
			}
		})
	}
}

// Streams made by the real tools: pigz (multi-threaded gzip), zstd -T0.
func TestRealTools(t *testing.T) {
	p := payload()
	for _, tc := range []struct {
		tool string
		args []string
	}{
		{"pigz", []string{"-c", "-p", "2"}},
		{"zstd", []string{"-c", "-T0", "-3", "-q"}},
		{"gzip", []string{"-c"}},
		{"xz", []string{"-c", "-T2"}},
		{"xz", []string{"-c", "-9e"}},
		{"lz4", []string{"-c", "-q"}},
		{"lz4", []string{"-c", "-q", "-l"}}, // legacy format
		{"lz4", []string{"-c", "-q", "-BD", "--no-frame-crc"}},
		{"bzip2", []string{"-c"}},
	} {
		t.Run(tc.tool+strings.Join(tc.args, ""), func(t *testing.T) {
			testtools.Require(t, tc.tool)
			cmd := exec.Command(tc.tool, tc.args...)
			cmd.Stdin = bytes.NewReader(p)
			out, err := cmd.Output()
			if err != nil {
				t.Fatal(err)
			}
			r, _, err := decompress.NewReader(bytes.NewReader(out))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(got, p) {
				t.Fatalf("round trip through %s failed: %v", tc.tool, err)
			}
		})
	}
}

func TestUnsupportedAndDamaged(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"lzop", []byte{0x89, 'L', 'Z', 'O', 0, 0x0D}},
		{"lzma", []byte{0x5D, 0, 0, 0x80, 0, 0xFF}},
		{"lzip", []byte("LZIP\x01\x0c")},
	} {
		if _, _, err := decompress.NewReader(bytes.NewReader(tc.in)); !errors.Is(err, decompress.ErrUnsupported) {
			t.Errorf("%s: got %v", tc.name, err)
		}
	}
	// Damaged and truncated compressed streams fail, never end quietly.
	z := zs(payload())
	g := gz(payload())
	for name, in := range map[string][]byte{
		"zstd truncated": z[:len(z)/2],
		"gzip truncated": g[:len(g)/2],
		"gzip damaged":   func() []byte { c := bytes.Clone(g); c[len(c)/2] ^= 0xFF; return c }(),
		"zstd damaged":   func() []byte { c := bytes.Clone(z); c[len(c)/2] ^= 0xFF; return c }(),
	} {
		r, _, err := decompress.NewReader(bytes.NewReader(in))
		if err == nil {
			_, err = io.ReadAll(r)
		}
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// Streams cut short or damaged fail in every decoder, named in the error.
func TestTruncatedNewFormats(t *testing.T) {
	p := payload()
	for _, tool := range []string{"xz", "lz4", "bzip2"} {
		cmd := exec.Command(tool, "-c")
		cmd.Stdin = bytes.NewReader(p)
		c, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		for name, in := range map[string][]byte{
			"truncated": c[:len(c)/2],
			"damaged":   func() []byte { d := bytes.Clone(c); d[len(d)/2] ^= 0x55; return d }(),
		} {
			r, _, err := decompress.NewReader(bytes.NewReader(in))
			var got []byte
			if err == nil {
				got, err = io.ReadAll(r)
			}
			if err == nil && bytes.Equal(got, p) {
				t.Errorf("%s %s: decoded the whole payload", tool, name)
			} else if err == nil {
				t.Errorf("%s %s: no error", tool, name)
			}
		}
	}
}

func TestForcedKind(t *testing.T) {
	p := payload()
	r, kind, err := decompress.NewReaderKind(bytes.NewReader(gz(p)), decompress.Gzip)
	if err != nil || kind != decompress.Gzip {
		t.Fatal(kind, err)
	}
	if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, p) {
		t.Fatal("forced gzip did not decode", err)
	}
	// Forced "none" passes compressed bytes through untouched.
	r, _, _ = decompress.NewReaderKind(bytes.NewReader(zs(p)), decompress.None)
	if got, _ := io.ReadAll(r); !bytes.Equal(got, zs(p)) {
		t.Error("forced none changed the bytes")
	}
	// The wrong forced kind fails instead of passing data on.
	r, _, err = decompress.NewReaderKind(bytes.NewReader(zs(p)), decompress.Gzip)
	if err == nil {
		_, err = io.ReadAll(r)
	}
	if err == nil {
		t.Error("zstd data read as gzip without an error")
	}
	for n, want := range map[int]decompress.Kind{0: decompress.Gzip, 2: decompress.Gzip, 3: decompress.None, 4: decompress.None, 5: decompress.Zstd, 6: decompress.Zstd} {
		if k, err := decompress.FOGFormat(n); err != nil || k != want {
			t.Errorf("FOG format %d: %q %v", n, k, err)
		}
	}
	for _, n := range []int{1, 7, -1} {
		if _, err := decompress.FOGFormat(n); !errors.Is(err, decompress.ErrUnsupported) {
			t.Errorf("FOG format %d: %v", n, err)
		}
	}
}

// An xz stream that asks for a dictionary above the limit is refused before
// the decoder allocates it.
func TestXzDictionaryLimit(t *testing.T) {
	cmd := exec.Command("xz", "-c", "-1")
	cmd.Stdin = bytes.NewReader(payload())
	c, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	// Stream header (12 bytes), then the block header: size byte, flags,
	// filter id 0x21, props size 1, the dictionary byte, padding, CRC32.
	h := c[12 : 12+(int(c[12])+1)*4]
	i := bytes.Index(h, []byte{0x21, 0x01})
	if i < 0 {
		t.Fatalf("no LZMA2 filter in % x", h)
	}
	h[i+2] = 40 // 4 GiB
	binary.LittleEndian.PutUint32(h[len(h)-4:], crc32.ChecksumIEEE(h[:len(h)-4]))
	if _, _, err := decompress.NewReader(bytes.NewReader(c)); !errors.Is(err, decompress.ErrUnsupported) {
		t.Fatalf("4 GiB dictionary: %v", err)
	}
	h[i+2] = 36 // 1 GiB... still too big
	binary.LittleEndian.PutUint32(h[len(h)-4:], crc32.ChecksumIEEE(h[:len(h)-4]))
	if _, _, err := decompress.NewReader(bytes.NewReader(c)); !errors.Is(err, decompress.ErrUnsupported) {
		t.Fatalf("1 GiB dictionary: %v", err)
	}
}
