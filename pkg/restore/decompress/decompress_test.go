package decompress_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os/exec"
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
	} {
		t.Run(tc.tool, func(t *testing.T) {
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
		{"xz", []byte{0xFD, '7', 'z', 'X', 'Z', 0, 1, 2}},
		{"bzip2", []byte("BZh91AY&SY")},
		{"lz4", []byte{0x04, 0x22, 0x4D, 0x18, 0x64}},
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
