package partclone_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/imgcast/imgcast/pkg/restore/internal/pclenc"
	"github.com/imgcast/imgcast/pkg/restore/partclone"
)

// Test vectors of partclone's checksums: CRC-32 without the final
// complement, format 0001's first-byte CRC, the XXH byte orders.
func TestChecksumVectors(t *testing.T) {
	if got := partclone.CRC32(0xFFFFFFFF, []byte("123456789")); got != 0x340BC6D9 {
		t.Errorf("CRC32(123456789) = %08x, want 340bc6d9", got)
	}
	if got := partclone.CRC32(0xFFFFFFFF, nil); got != 0xFFFFFFFF {
		t.Errorf("CRC32(empty) = %08x", got)
	}
	// Feeding in pieces gives the same register.
	if got := partclone.CRC32(partclone.CRC32(0xFFFFFFFF, []byte("1234")), []byte("56789")); got != 0x340BC6D9 {
		t.Errorf("CRC32 in pieces = %08x", got)
	}
	zero := partclone.V1BlockCRC(0xFFFFFFFF, 0x00, 4096)
	if zero != 0x38E3FFEE {
		t.Errorf("v1 CRC of a 0x00 block = %08x, want 38e3ffee", zero)
	}
	if got := partclone.V1BlockCRC(0xFFFFFFFF, 0x41, 4096); got != 0x0159CBBF {
		t.Errorf("v1 CRC of a 0x41 block = %08x, want 0159cbbf", got)
	}
	if got := partclone.V1BlockCRC(zero, 0x41, 4096); got != 0x1EB1523A {
		t.Errorf("v1 CRC of 0x00 then 0x41 blocks = %08x, want 1eb1523a", got)
	}

	// XXH64 and XXH128 as stored: one 9-byte block, one checksum.
	for _, tc := range []struct {
		mode int
		want string
	}{
		{pclenc.CRC32, "d9c60b34"},
		{pclenc.XXH64, "83aee640db41b88c"},
		{pclenc.XXH128, "60581d68276471e9d5dce5ed77941133"},
	} {
		img := encode(t, pclenc.Image{BlockSize: 9, Data: []byte("123456789"), Checksum: tc.mode, PerSum: 1, Reseed: true})
		stored := hex.EncodeToString(img[len(img)-len(tc.want)/2:])
		if stored != tc.want {
			t.Errorf("mode %#x: encoder stored %s, want %s", tc.mode, stored, tc.want)
		}
		if _, err := decodeAll(img, partclone.Options{}); err != nil {
			t.Errorf("mode %#x: %v", tc.mode, err)
		}
	}
}

func encode(t testing.TB, img pclenc.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := pclenc.Write(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// decodeAll decodes an image into a device-sized buffer (unused blocks 0xAA).
func decodeAll(img []byte, opts partclone.Options) ([]byte, error) {
	return decodeWith(bytes.NewReader(img), opts, 3)
}

func decodeWith(r io.Reader, opts partclone.Options, batchBlocks int) ([]byte, error) {
	d, err := partclone.NewReader(r, opts)
	if err != nil {
		return nil, err
	}
	h := d.Header()
	out := bytes.Repeat([]byte{0xAA}, int(h.TotalBlocks)*int(h.BlockSize))
	buf := make([]byte, batchBlocks*int(h.BlockSize))
	var runs []partclone.Run
	for {
		var n int
		runs, n, err = d.ReadBatch(buf, runs[:0])
		if err == io.EOF {
			break
		}
		if err != nil {
			return out, err
		}
		off := 0
		for _, r := range runs {
			l := int(r.Count) * int(h.BlockSize)
			copy(out[int(r.Block)*int(h.BlockSize):], buf[off:off+l])
			off += l
		}
		if off != n {
			return out, errors.New("runs do not cover the batch")
		}
	}
	if d.BlocksDone() != h.UsedBlocks {
		return out, errors.New("not every used block delivered")
	}
	if rest, _ := io.ReadAll(r); len(rest) != 0 {
		return out, errors.New("bytes left after the image")
	}
	if uint64(d.Offset()) != h.ImageSize() {
		return out, errors.New("offset differs from ImageSize")
	}
	return out, nil
}

// source returns a device of total blocks with random content and a bitmap
// that mixes runs and gaps.
func source(blockSize, total int, seed uint64) ([]byte, func(int) bool) {
	rng := rand.New(rand.NewPCG(seed, 1))
	data := make([]byte, blockSize*total)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	used := make([]bool, total)
	for k := 0; k < total; {
		n := 1 + rng.IntN(90)
		on := rng.IntN(3) != 0
		for ; n > 0 && k < total; n, k = n-1, k+1 {
			used[k] = on
		}
	}
	used[0] = true
	return data, func(k int) bool { return used[k] }
}

// expect is what a decode should produce: used blocks from data, the rest 0xAA.
func expect(data []byte, blockSize int, used func(int) bool) []byte {
	out := bytes.Repeat([]byte{0xAA}, len(data))
	for k := 0; k*blockSize < len(data); k++ {
		if used(k) {
			copy(out[k*blockSize:], data[k*blockSize:(k+1)*blockSize])
		}
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	data, used := source(512, 1003, 7)
	nUsed := 0
	for k := range 1003 {
		if used(k) {
			nUsed++
		}
	}
	want := expect(data, 512, used)
	for _, tc := range []struct {
		name string
		img  pclenc.Image
	}{
		{"v1", pclenc.Image{Version: 1}},
		{"none", pclenc.Image{Checksum: pclenc.None}},
		{"crc32 N=1", pclenc.Image{Checksum: pclenc.CRC32, PerSum: 1, Reseed: true}},
		{"crc32 N=17", pclenc.Image{Checksum: pclenc.CRC32, PerSum: 17, Reseed: true}},
		{"crc32 N=17 running", pclenc.Image{Checksum: pclenc.CRC32, PerSum: 17}},
		{"crc32 N=2048 (> U)", pclenc.Image{Checksum: pclenc.CRC32, PerSum: 2048, Reseed: true}},
		{"crc32 N=U", pclenc.Image{Checksum: pclenc.CRC32, PerSum: nUsed, Reseed: true}},
		{"xxh64 N=12", pclenc.Image{Checksum: pclenc.XXH64, PerSum: 12, Reseed: true}},
		{"xxh64 N=12 running", pclenc.Image{Checksum: pclenc.XXH64, PerSum: 12}},
		{"xxh128 N=17", pclenc.Image{Checksum: pclenc.XXH128, PerSum: 17, Reseed: true}},
		{"xxh128 N=17 running", pclenc.Image{Checksum: pclenc.XXH128, PerSum: 17}},
		{"xxh128 padding bits", pclenc.Image{Checksum: pclenc.XXH128, PerSum: 256, Reseed: true, PadBits: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.img.BlockSize, tc.img.Data, tc.img.Used, tc.img.FSType = 512, data, used, "EXTFS"
			img := encode(t, tc.img)
			for _, batch := range []int{1, 5, 64, 4096} {
				got, err := decodeWith(bytes.NewReader(img), partclone.Options{}, batch)
				if err != nil {
					t.Fatalf("batch %d: %v", batch, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("batch %d: decoded data differs", batch)
				}
			}
			h, err := partclone.ReadHeader(bytes.NewReader(img))
			if err != nil {
				t.Fatal(err)
			}
			if h.UsedBlocks != uint64(nUsed) || h.ImageSize() != uint64(len(img)) || h.FSType != "EXTFS" {
				t.Errorf("header: used %d (want %d), image size %d (want %d), fs %q", h.UsedBlocks, nUsed, h.ImageSize(), len(img), h.FSType)
			}
		})
	}
}

// flip returns a copy of b with byte i changed.
func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x10
	return c
}

func TestBadInput(t *testing.T) {
	data, used := source(1024, 300, 3)
	good := encode(t, pclenc.Image{BlockSize: 1024, Data: data, Used: used, Checksum: pclenc.CRC32, PerSum: 16, Reseed: true})
	h, err := partclone.ReadHeader(bytes.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	dataStart := int(h.HeaderBytes())
	withField := func(off int, v uint16, fixCRC bool) []byte {
		c := bytes.Clone(good)
		binary.LittleEndian.PutUint16(c[off:], v)
		if fixCRC {
			binary.LittleEndian.PutUint32(c[106:], partclone.CRC32(0xFFFFFFFF, c[:106]))
		}
		return c
	}
	v1 := encode(t, pclenc.Image{Version: 1, BlockSize: 1024, Data: data, Used: used})
	for _, tc := range []struct {
		name  string
		img   []byte
		want  error
		check func(t *testing.T, err error)
	}{
		{"empty", nil, partclone.ErrTruncated, nil},
		{"unknown magic", []byte("hello world, this is not an image at all"), partclone.ErrNotPartclone, nil},
		{"gzip bytes", []byte{0x1f, 0x8b, 8, 0}, partclone.ErrNotPartclone, nil},
		{"short magic", []byte("partclone"), partclone.ErrTruncated, nil},
		{"version 0003", func() []byte { c := bytes.Clone(good); copy(c[30:], "0003"); return c }(), partclone.ErrUnsupported, nil},
		{"header byte flipped", flip(good, 60), partclone.ErrCorrupt, nil},
		{"header CRC flipped", flip(good, 107), partclone.ErrCorrupt, nil},
		{"big endian", withField(34, 0xDEC0, true), partclone.ErrUnsupported, nil},
		{"checksum size vs mode", withField(98, 8, true), partclone.ErrCorrupt, nil},
		{"unknown checksum mode", withField(96, 0x40, true), partclone.ErrUnsupported, nil},
		{"zero blocks per checksum", withField(100, 0, true), partclone.ErrCorrupt, nil},
		{"bitmap flipped", flip(good, 115), partclone.ErrCorrupt, nil},
		{"bitmap CRC flipped", flip(good, dataStart-2), partclone.ErrCorrupt, nil},
		{"truncated in descriptor", good[:60], partclone.ErrTruncated, nil},
		{"truncated in bitmap", good[:120], partclone.ErrTruncated, nil},
		{"truncated in data", good[:dataStart+5000], partclone.ErrTruncated, nil},
		{"truncated at a checksum", good[:dataStart+16*1024], partclone.ErrTruncated, nil},
		{"truncated before last checksum", good[:len(good)-4], partclone.ErrTruncated, nil},
		{"data byte flipped", flip(good, dataStart+3*1024+100), partclone.ErrChecksum, func(t *testing.T, err error) {
			var ce *partclone.ChecksumError
			if !errors.As(err, &ce) {
				t.Fatalf("%v is not a ChecksumError", err)
			}
			// Byte 3*1024+100 lies in the 4th used block, which is in the first group of 16.
			if ce.FirstBlock != 0 || ce.LastBlock < 3 {
				t.Errorf("checksum error names blocks %d–%d", ce.FirstBlock, ce.LastBlock)
			}
		}},
		{"stored checksum flipped", flip(good, dataStart+16*1024+1), partclone.ErrChecksum, nil},
		{"v1 first byte flipped", flip(v1, 4160+300+8), partclone.ErrChecksum, nil},
		{"v1 no bitmagic", flip(v1, 4160+300+2), partclone.ErrCorrupt, nil},
		{"v1 truncated", v1[:len(v1)-3], partclone.ErrTruncated, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeAll(tc.img, partclone.Options{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			t.Log(err)
			if tc.check != nil {
				tc.check(t, err)
			}
		})
	}

	// Ignoring checksums restores a flipped data byte as it is, but still
	// enforces the descriptor and bitmap CRCs.
	bad := flip(good, dataStart+3*1024+100)
	got, err := decodeAll(bad, partclone.Options{IgnoreChecksums: true})
	if err != nil {
		t.Fatalf("ignore checksums: %v", err)
	}
	if want := expect(data, 1024, used); bytes.Equal(got, want) || got[3*1024+100] != want[3*1024+100]^0x10 {
		t.Error("ignore checksums: corrupted byte not restored as stored")
	}
	if _, err := decodeAll(flip(good, 115), partclone.Options{IgnoreChecksums: true}); !errors.Is(err, partclone.ErrCorrupt) {
		t.Errorf("ignore checksums with a bad bitmap: %v", err)
	}
}

// A huge declared bitmap in a short stream must fail fast, not allocate.
func TestHugeBitmapShortStream(t *testing.T) {
	img := encode(t, pclenc.Image{BlockSize: 4096, Data: make([]byte, 4096*8)})
	binary.LittleEndian.PutUint64(img[60:], 1<<42)
	binary.LittleEndian.PutUint64(img[52:], 1<<62)
	binary.LittleEndian.PutUint32(img[106:], partclone.CRC32(0xFFFFFFFF, img[:106]))
	accept := func(*partclone.Header) error { return nil }
	if _, err := partclone.ReadHeaderChecked(bytes.NewReader(img), accept); !errors.Is(err, partclone.ErrTruncated) {
		t.Fatalf("got %v", err)
	}
	// By default a bitmap above MaxBitmapBytes is refused before it is read.
	if _, err := partclone.ReadHeader(bytes.NewReader(img)); !errors.Is(err, partclone.ErrUnsupported) {
		t.Fatalf("got %v", err)
	}
}

// The check sees the descriptor before a byte of the bitmap is read, and
// its refusal stops the read there.
func TestCheckBeforeBitmap(t *testing.T) {
	for _, version := range []int{1, 2} {
		img := encode(t, pclenc.Image{Version: version, BlockSize: 512, Data: make([]byte, 512*64), DeviceSize: 512*64 + 512})
		r := &countReader{r: bytes.NewReader(img)}
		refuse := errors.New("refused")
		var seen *partclone.Header
		_, err := partclone.ReadHeaderChecked(r, func(h *partclone.Header) error { seen = h; return refuse })
		if !errors.Is(err, refuse) {
			t.Fatalf("v%d: got %v", version, err)
		}
		want := int64(110)
		if version == 1 {
			want = 4160
		}
		if r.n != want || seen.TotalBlocks != 64 || seen.DeviceSize != 512*65 {
			t.Errorf("v%d: read %d bytes (want the %d of the descriptor), header %v", version, r.n, want, seen)
		}
	}
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func FuzzReader(f *testing.F) {
	data, used := source(512, 40, 9)
	for _, img := range []pclenc.Image{
		{Version: 1},
		{Checksum: pclenc.None},
		{Checksum: pclenc.CRC32, PerSum: 3, Reseed: true},
		{Checksum: pclenc.XXH64, PerSum: 5},
		{Checksum: pclenc.XXH128, PerSum: 7, Reseed: true, PadBits: true},
	} {
		img.BlockSize, img.Data, img.Used = 512, data, used
		f.Add(encode(f, img))
	}
	f.Add([]byte("partclone-image\x000.3.23"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := partclone.NewReader(bytes.NewReader(b), partclone.Options{})
		if err != nil {
			return
		}
		h := d.Header()
		if h.BlockSize == 0 || h.UsedBlocks > h.TotalBlocks {
			t.Fatalf("accepted header %v", h)
		}
		buf := make([]byte, 2*int(h.BlockSize))
		var runs []partclone.Run
		for {
			var n int
			runs, n, err = d.ReadBatch(buf, runs[:0])
			if err != nil {
				break
			}
			sum := 0
			for _, r := range runs {
				if r.Block+r.Count > h.TotalBlocks {
					t.Fatalf("run %v past %d blocks", r, h.TotalBlocks)
				}
				sum += int(r.Count) * int(h.BlockSize)
			}
			if sum != n {
				t.Fatalf("runs cover %d bytes, batch %d", sum, n)
			}
		}
	})
}
