package restore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/pkg/restore"
	"github.com/imgcast/imgcast/pkg/restore/internal/pclenc"
	"github.com/imgcast/imgcast/pkg/restore/partclone"
)

// restoreTo restores src onto a fresh pattern-filled file of size bytes
// and returns its path and the error.
func restoreTo(t testing.TB, src io.Reader, size int64, opts restore.Options) (string, *restore.Result, error) {
	t.Helper()
	out := patterned(t, filepath.Join(t.TempDir(), "target.raw"), size)
	f, err := os.OpenFile(out, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := restore.RestorePartition(context.Background(), src, restore.NewTarget(f, 0, size), opts)
	return out, res, err
}

func restoreFile(t testing.TB, path string, size int64, opts restore.Options) (string, *restore.Result, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return restoreTo(t, f, size, opts)
}

// Every fixture and transport: byte for byte what partclone.restore writes
// on the same pattern-filled target, and fsck-clean.
func TestRealImages(t *testing.T) {
	for _, tc := range []struct {
		fixture, compression string
	}{
		{"ext4-4k", ""},
		{"ext4-4k", "pigz"},
		{"ext4-4k", "zstd"},
		{"ext4-4k", "gzip2"},
		{"ext4-1k", "zstd"},
		{"fat16", "pigz"},
		{"fat32", "zstd"},
		{"ntfs", "pigz"},
		{"imager", ""},
	} {
		t.Run(tc.fixture+"/"+tc.compression, func(t *testing.T) {
			f := getFixture(t, tc.fixture)
			ref := reference(t, f.pcl, f.size)
			var progress []restore.Progress
			out, res, err := restoreFile(t, compressed(t, f.pcl, tc.compression), f.size, restore.Options{
				Progress: func(p restore.Progress) { progress = append(progress, p) },
			})
			if err != nil {
				t.Fatal(err)
			}
			sameFiles(t, ref, out)
			fsck(t, f, out)
			if res.Header == nil || res.Written != int64(res.Header.UsedBytes()) || res.TrailingBytes != 0 {
				t.Errorf("result %+v", res)
			}
			last := progress[len(progress)-1]
			if last.Phase != "done" || last.Percent() != 100 || last.Written != res.Written || last.In != res.In {
				t.Errorf("last progress %+v (percent %.1f), result %+v", last, last.Percent(), res)
			}
		})
	}
}

// Images partclone writes with other checksum options (-a0 none, -k blocks
// per checksum, -K no reseed, -z buffer size), read by partclone.restore
// and by us.
func TestChecksumVariants(t *testing.T) {
	f := getFixture(t, "ext4-4k")
	want := reference(t, f.pcl, f.size)
	for _, v := range [][]string{{"-a0"}, {"-k1"}, {"-k17"}, {"-k12"}, {"-K"}, {"-K", "-k17"}, {"-k100000"}, {"-z65536"}} {
		t.Run(strings.Join(v, " "), func(t *testing.T) {
			img := f.variant(t, strings.ReplaceAll(strings.Join(v, ""), "-", ""), v...)
			sameFiles(t, want, reference(t, img, f.size))
			out, _, err := restoreFile(t, img, f.size, restore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			sameFiles(t, want, out)
		})
	}
}

// Formats Debian's partclone cannot write (format 0001, XXH64, XXH128),
// built from the ext4 fixture with the test encoder (internal/pclenc).
func TestSyntheticFormats(t *testing.T) {
	f := getFixture(t, "ext4-1k")
	want := reference(t, f.pcl, f.size)
	h := readHeader(t, f.pcl)
	data, err := os.ReadFile(f.fs)
	if err != nil {
		t.Fatal(err)
	}
	used := func(k int) bool { return h.Used(uint64(k)) }
	for _, tc := range []struct {
		name string
		img  pclenc.Image
	}{
		{"v1", pclenc.Image{Version: 1}},
		{"xxh64 reseed", pclenc.Image{Checksum: pclenc.XXH64, PerSum: 1024, Reseed: true}},
		{"xxh64 running k17", pclenc.Image{Checksum: pclenc.XXH64, PerSum: 17}},
		{"xxh128 reseed", pclenc.Image{Checksum: pclenc.XXH128, PerSum: 1024, Reseed: true}},
		{"xxh128 running k17", pclenc.Image{Checksum: pclenc.XXH128, PerSum: 17}},
		{"xxh128 clonezilla N", pclenc.Image{Checksum: pclenc.XXH128, PerSum: 10240, Reseed: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.img.FSType, tc.img.Creator, tc.img.BlockSize, tc.img.Data, tc.img.Used = "EXTFS", "0.3.47", 1024, data, used
			var b bytes.Buffer
			if err := pclenc.Write(&b, tc.img); err != nil {
				t.Fatal(err)
			}
			out, res, err := restoreTo(t, bytes.NewReader(b.Bytes()), f.size, restore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			sameFiles(t, want, out)
			if tc.img.Version == 1 {
				if res.Header.Version != 1 || res.Header.Checksum != partclone.ChecksumV1 {
					t.Errorf("header %v", res.Header)
				}
				// Debian's partclone reads format 0001 too: it must agree.
				img := filepath.Join(t.TempDir(), "v1.pcl")
				if err := os.WriteFile(img, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				run(t, "partclone.chkimg", "-s", img, "-L", img+".log")
				sameFiles(t, want, reference(t, img, f.size))
			}
		})
	}
}

// fsck checks a restored filesystem. NTFS keeps a backup boot sector in
// the partition's last sector, which partclone never images (T·B is one
// sector short of the device): ntfsfix may only complain about that, as it
// does for partclone.restore's own output.
func fsck(t *testing.T, f *fixture, path string) {
	t.Helper()
	if f.fsck == nil {
		return
	}
	if f.name != "ntfs" {
		run(t, f.fsck[0], append(f.fsck[1:], path)...)
		return
	}
	out, _ := exec.Command("ntfsfix", "-n", path).CombinedOutput()
	if !bytes.Contains(out, []byte("$MFT and $MFTMirr completed successfully")) ||
		bytes.Contains(bytes.ReplaceAll(out, []byte("Error: Failed to fix the alternate boot sector"), nil), []byte("rror")) {
		t.Errorf("ntfsfix -n:\n%s", out)
	}
}

func readHeader(t testing.TB, path string) *partclone.Header {
	t.Helper()
	r, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h, err := partclone.ReadHeader(r)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestBadImages(t *testing.T) {
	f := getFixture(t, "ext4-4k")
	good, err := os.ReadFile(f.pcl)
	if err != nil {
		t.Fatal(err)
	}
	h := readHeader(t, f.pcl)
	start := int(h.HeaderBytes())
	flip := func(i int) []byte { c := bytes.Clone(good); c[i] ^= 0x01; return c }
	zst, err := os.ReadFile(compressed(t, f.pcl, "zstd"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		in           []byte
		size         int64
		want         error
		writeNothing bool
	}{
		{"damaged header", flip(60), f.size, restore.ErrCorrupt, true},
		{"damaged bitmap", flip(200), f.size, restore.ErrCorrupt, true},
		{"unknown magic", bytes.Repeat([]byte("not an image "), 100), f.size, restore.ErrNotPartclone, true},
		{"lzop stream", []byte{0x89, 'L', 'Z', 'O', 0, 0x0D, 0x0A, 0x1A}, f.size, restore.ErrCompression, true},
		{"truncated xz stream", []byte{0xFD, '7', 'z', 'X', 'Z', 0, 0, 0}, f.size, restore.ErrTruncated, true},
		{"target too small", good, f.size - 4096, restore.ErrDoesNotFit, true},
		{"truncated in header", good[:50], f.size, restore.ErrTruncated, true},
		{"truncated in bitmap", good[:start-100], f.size, restore.ErrTruncated, true},
		{"truncated in data", good[:start+3<<20+17], f.size, restore.ErrTruncated, false},
		{"truncated zstd", zst[:len(zst)/2], f.size, restore.ErrTruncated, false},
		{"flipped data byte", flip(start + 5*256*4096 + 4096 + 3), f.size, restore.ErrChecksum, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var target string
			var err error
			out := patterned(t, filepath.Join(t.TempDir(), "t.raw"), f.size)
			before := digest(t, out)
			{
				fh, ferr := os.OpenFile(out, os.O_RDWR, 0)
				if ferr != nil {
					t.Fatal(ferr)
				}
				_, err = restore.RestorePartition(context.Background(), bytes.NewReader(tc.in), restore.NewTarget(fh, 0, tc.size), restore.Options{Partition: 3})
				fh.Close()
				target = out
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			var pe *restore.PartitionError
			if !errors.As(err, &pe) || pe.Partition != 3 || !strings.HasPrefix(err.Error(), "partition 3: ") {
				t.Errorf("error does not name the partition: %v", err)
			}
			t.Log(err)
			if tc.writeNothing && digest(t, target) != before {
				t.Error("the target was written")
			}
			if tc.want == restore.ErrChecksum {
				var ce *restore.ChecksumError
				if !errors.As(err, &ce) {
					t.Fatalf("not a ChecksumError: %v", err)
				}
				// The flipped byte is in used block 5*256+1, in group 6 (blocks of used index 1280–1535).
				if ce.FirstBlock > ce.LastBlock || !strings.Contains(err.Error(), "blocks ") {
					t.Errorf("checksum error %+v", ce)
				}
			}
		})
	}

	// FOG restores with --ignore_crc: the flipped byte is then written as is.
	out, _, err := restoreTo(t, bytes.NewReader(flip(start+4096+3)), f.size, restore.Options{IgnoreChecksums: true})
	if err != nil {
		t.Fatalf("ignore checksums: %v", err)
	}
	if bytes.Equal(mustRead(t, out), mustRead(t, reference(t, f.pcl, f.size))) {
		t.Error("ignore checksums: the flipped byte did not reach the target")
	}
}

func mustRead(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTrailingBytesAndRaw(t *testing.T) {
	f := getFixture(t, "ext4-4k")
	good := mustRead(t, f.pcl)
	var warned string
	out, res, err := restoreTo(t, bytes.NewReader(append(bytes.Clone(good), "junk"...)), f.size,
		restore.Options{Logf: func(format string, a ...any) { warned = format }})
	if err != nil || res.TrailingBytes != 4 || warned == "" {
		t.Fatalf("trailing bytes: %v %+v %q", err, res, warned)
	}
	sameFiles(t, reference(t, f.pcl, f.size), out)

	// A raw stream (partclone.dd output, say) is written as it is, only when asked.
	raw := mustRead(t, f.fs)[:5<<20]
	if _, _, err := restoreTo(t, bytes.NewReader(raw), f.size, restore.Options{}); !errors.Is(err, restore.ErrNotPartclone) {
		t.Fatalf("raw without AllowRaw: %v", err)
	}
	out, res, err = restoreTo(t, bytes.NewReader(raw), f.size, restore.Options{AllowRaw: true})
	if err != nil || res.Header != nil || res.Written != int64(len(raw)) {
		t.Fatalf("raw: %v %+v", err, res)
	}
	got := mustRead(t, out)
	if !bytes.Equal(got[:len(raw)], raw) || got[len(raw)] != pattern {
		t.Error("raw stream not written as it is")
	}
	if _, _, err := restoreTo(t, bytes.NewReader(raw), 4<<20, restore.Options{AllowRaw: true}); !errors.Is(err, restore.ErrDoesNotFit) {
		t.Errorf("raw stream larger than the target: %v", err)
	}
}

// The SHA-256 of the input as received, piece by piece.
func TestDigest(t *testing.T) {
	f := getFixture(t, "ext4-4k")
	in := mustRead(t, compressed(t, f.pcl, "pigz"))
	cut := len(in) / 3
	sum := func(b []byte) []byte { s := sha256.Sum256(b); return s[:] }
	pieces := []restore.Segment{
		{Name: "d1p1.img", Size: int64(cut), SHA256: sum(in[:cut])},
		{Name: "d1p1.img.001", Size: int64(len(in) - cut), SHA256: sum(in[cut:])},
	}
	if _, _, err := restoreTo(t, bytes.NewReader(in), f.size, restore.Options{Verify: pieces}); err != nil {
		t.Fatal(err)
	}
	whole := []restore.Segment{{Name: "whole", Size: -1, SHA256: sum(in)}}
	if _, _, err := restoreTo(t, bytes.NewReader(in), f.size, restore.Options{Verify: whole}); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(pieces[1].SHA256)
	bad[0] ^= 1
	for name, segs := range map[string][]restore.Segment{
		"wrong digest": {pieces[0], {Name: "d1p1.img.001", Size: pieces[1].Size, SHA256: bad}},
		"short stream": {pieces[0], {Name: "d1p1.img.001", Size: pieces[1].Size + 10, SHA256: pieces[1].SHA256}},
		"long stream":  {pieces[0], {Name: "d1p1.img.001", Size: pieces[1].Size - 10, SHA256: pieces[1].SHA256}},
	} {
		_, _, err := restoreTo(t, bytes.NewReader(in), f.size, restore.Options{Verify: segs})
		var de *restore.DigestError
		if !errors.Is(err, restore.ErrDigest) || !errors.As(err, &de) {
			t.Errorf("%s: got %v", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
}
