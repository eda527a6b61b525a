package restore_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/imgcast/imgcast/pkg/restore"
	"github.com/imgcast/imgcast/pkg/restore/decompress"
	"github.com/imgcast/imgcast/pkg/restore/internal/pclenc"
	"github.com/imgcast/imgcast/pkg/restore/partclone"
)

// compressedWith pipes an image through a Debian compressor.
func compressedWith(t testing.TB, path string, tool ...string) string {
	t.Helper()
	needTools(t, tool[0])
	out := path + "." + strings.Join(tool, "")
	run(t, "bash", append([]string{"-euo", "pipefail", "-c", `f=$1; o=$2; shift 2; "$@" < "$f" > "$o"`, "bash", path, out}, tool...)...)
	return out
}

// Clonezilla's other compressors, made by the real tools: restored byte
// for byte as partclone.restore restores the uncompressed image.
func TestClonezillaCompressors(t *testing.T) {
	f := getFixture(t, "ext4-4k")
	want := reference(t, f.pcl, f.size)
	for _, tc := range []struct {
		tool []string
		kind decompress.Kind
	}{
		{[]string{"xz", "-c", "-T2"}, decompress.Xz},
		{[]string{"lz4", "-c", "-q"}, decompress.Lz4},
		{[]string{"lz4", "-c", "-q", "-l"}, decompress.Lz4},
		{[]string{"bzip2", "-c"}, decompress.Bzip2},
	} {
		t.Run(strings.Join(tc.tool, " "), func(t *testing.T) {
			img := compressedWith(t, f.pcl, tc.tool...)
			out, res, err := restoreFile(t, img, f.size, restore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Compression != tc.kind {
				t.Errorf("compression %s, want %s", res.Compression, tc.kind)
			}
			sameFiles(t, want, out)
		})
	}
}

// FOG names the compression in the image's settings; a forced format is
// used instead of sniffing, and the wrong one fails before any write.
func TestForcedCompression(t *testing.T) {
	f := getFixture(t, "ext4-4k")
	gz := compressed(t, f.pcl, "pigz")
	if _, _, err := restoreFile(t, gz, f.size, restore.Options{Compression: decompress.Gzip}); err != nil {
		t.Fatal(err)
	}
	out := patterned(t, filepath.Join(t.TempDir(), "t.raw"), f.size)
	before := digest(t, out)
	fh, _ := os.OpenFile(out, os.O_RDWR, 0)
	defer fh.Close()
	src, _ := os.Open(compressed(t, f.pcl, "zstd"))
	defer src.Close()
	_, err := restore.RestorePartition(context.Background(), src, restore.NewTarget(fh, 0, f.size), restore.Options{Compression: decompress.Gzip})
	if err == nil {
		t.Fatal("zstd image restored as gzip")
	}
	if digest(t, out) != before {
		t.Error("the target was written")
	}
}

// Whatever is refused creates nothing: a target file that did not exist
// does not exist afterwards, whether the image was refused up front or
// failed half way.
func TestRefusedCreatesNothing(t *testing.T) {
	f := getFixture(t, "ext4-4k")
	good := mustRead(t, f.pcl)
	start := int(readHeader(t, f.pcl).HeaderBytes())
	for _, tc := range []struct {
		name string
		in   []byte
		opts restore.Options
		want error
	}{
		{"lzop", []byte{0x89, 'L', 'Z', 'O', 0, 0x0D, 0x0A, 0x1A}, restore.Options{}, restore.ErrCompression},
		{"lzma", []byte{0x5D, 0, 0, 0x80, 0, 0xFF, 0xFF, 0xFF}, restore.Options{}, restore.ErrCompression},
		{"not an image", bytes.Repeat([]byte("x"), 5000), restore.Options{}, restore.ErrNotPartclone},
		{"bad header", func() []byte { b := bytes.Clone(good); b[60] ^= 1; return b }(), restore.Options{}, restore.ErrCorrupt},
		{"truncated in data", good[:start+3<<20], restore.Options{}, restore.ErrTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "new.raw")
			tg, err := restore.OpenTarget(path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = restore.RestorePartition(context.Background(), bytes.NewReader(tc.in), tg, tc.opts)
			tg.Close()
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s was left behind (%v)", path, err)
			}
		})
	}
	// FOG's format 1 (partimage) is refused before anything is opened.
	if _, err := decompress.FOGFormat(1); !errors.Is(err, restore.ErrCompression) {
		t.Errorf("partimage: %v", err)
	}
}

// A format 0001 NTFS image restored to a new file is as long as the
// device it was taken from (the descriptor's device size, one cluster
// more than its blocks), so ntfs-3g accepts it.
func TestV1DeviceSizeNTFS(t *testing.T) {
	f := getFixture(t, "ntfs")
	needTools(t, "ntfsls")
	h := readHeader(t, f.pcl)
	if h.TotalBlocks*uint64(h.BlockSize) >= uint64(f.size) {
		t.Fatalf("fixture: NTFS blocks cover the whole device (%v)", h)
	}
	data := mustRead(t, f.fs)[:h.TotalBlocks*uint64(h.BlockSize)]
	var img bytes.Buffer
	err := pclenc.Write(&img, pclenc.Image{Version: 1, FSType: "NTFS", BlockSize: int(h.BlockSize), Data: data,
		DeviceSize: uint64(f.size), Used: func(k int) bool { return h.Used(uint64(k)) }})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ntfs.raw")
	tg, err := restore.OpenTarget(path)
	if err != nil {
		t.Fatal(err)
	}
	res, err := restore.RestorePartition(context.Background(), &img, tg, restore.Options{})
	tg.Close()
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Size() != f.size || res.Header.DeviceSize != uint64(f.size) {
		t.Fatalf("restored file is %d bytes, header device size %d; the device was %d", st.Size(), res.Header.DeviceSize, f.size)
	}
	out, err := exec.Command("ntfsls", "-f", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "big.bin") {
		t.Fatalf("ntfsls: %v\n%s", err, out)
	}
}

// zeros is an endless stream of zero bytes that counts what was read
// (atomically: restore's read-ahead may still be reading when it returns).
type zeros struct{ n atomic.Int64 }

func (z *zeros) Read(p []byte) (int, error) {
	clear(p)
	z.n.Add(int64(len(p)))
	return len(p), nil
}

// A hostile header declaring a huge bitmap is refused from its descriptor:
// neither the bitmap's memory is taken nor its bytes read (the bitmap used
// to be read first, then checked against the target).
func TestHostileBitmap(t *testing.T) {
	desc := func(total uint64, bs uint32, dev uint64) []byte {
		var b bytes.Buffer
		if err := pclenc.Write(&b, pclenc.Image{BlockSize: 512, Data: make([]byte, 512*8)}); err != nil {
			t.Fatal(err)
		}
		d := b.Bytes()[:110]
		binary.LittleEndian.PutUint64(d[52:], dev)
		binary.LittleEndian.PutUint64(d[60:], total)
		binary.LittleEndian.PutUint32(d[84:], bs)
		binary.LittleEndian.PutUint32(d[106:], partclone.CRC32(0xFFFFFFFF, d[:106]))
		return d
	}
	for _, tc := range []struct {
		name   string
		d      []byte
		target int64 // -1: a new file
		want   error
	}{
		// 1 GiB of bitmap for a 4 TiB device, onto a 32 MiB partition.
		{"device larger than the target", desc(1<<33, 512, 1<<42), 32 << 20, restore.ErrDoesNotFit},
		// The same onto a file that could grow: the bitmap bound refuses it.
		{"bitmap over the memory bound", desc(1<<33, 512, 1<<42), -1, restore.ErrUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &zeros{}
			var tg *restore.Target
			path := filepath.Join(t.TempDir(), "t.raw")
			if tc.target < 0 {
				tg, _ = restore.OpenTarget(path)
			} else {
				fh, _ := os.Create(path)
				defer fh.Close()
				tg = restore.NewTarget(fh, 0, tc.target)
			}
			defer tg.Close()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := restore.RestorePartition(context.Background(), io.MultiReader(bytes.NewReader(tc.d), io.LimitReader(src, 1<<30+4)),
				tg, restore.Options{})
			runtime.ReadMemStats(&after)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
				t.Errorf("%d MiB allocated for a refused header", alloc>>20)
			}
			// The readahead may run a few MiB ahead; the bitmap is 1 GiB.
			if n := src.n.Load(); n > 16<<20 {
				t.Errorf("%d MiB of the bitmap were read before the refusal", n>>20)
			}
		})
	}
}
