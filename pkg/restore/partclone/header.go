package partclone

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
)

// Magic is what every partclone image starts with.
const Magic = "partclone-image"

const (
	v2DescriptorSize = 110
	v1DescriptorSize = 4160
	v2OptionsSize    = 18
	v1BitmapMagic    = "BiTmAgIc"
	maxBlockSize     = 64 << 20
	maxTotalBlocks   = 1 << 43 // partclone's own cap: a 1 TiB bitmap
	bitmapModeBits   = 0x01
	endianMarkerLE   = 0xC0DE
)

// Header is an image's descriptor plus its block bitmap.
type Header struct {
	Version int    // 1 or 2
	Creator string // version of the partclone that wrote it (format 2 only)
	FSType  string // informational: EXTFS, NTFS, FAT32, raw, …
	// DeviceSize is the size of the source partition in bytes. For format
	// 0001 it is the descriptor's figure (as current partclone uses it; an
	// NTFS image records one cluster more than its blocks cover), or
	// TotalBlocks*BlockSize when the descriptor's figure is smaller.
	DeviceSize  uint64
	TotalBlocks uint64
	// FSUsedBlocks is the filesystem's own figure (informational).
	FSUsedBlocks uint64
	// UsedBlocks is the number of blocks in the data section: the bitmap
	// count, which partclone trusts over any header field.
	UsedBlocks        uint64
	BlockSize         uint32
	Checksum          ChecksumMode
	BlocksPerChecksum uint32
	Reseed            bool

	// bitmap has bit k set when block k is in the image (LSB first).
	// Format 0001's byte map is converted to this form.
	bitmap []byte
	// size is the number of bytes the descriptor and bitmap took.
	size int64
}

// Used reports whether block k is in the image.
func (h *Header) Used(k uint64) bool {
	return k < h.TotalBlocks && h.bitmap[k/8]&(1<<(k%8)) != 0
}

// ChecksumSize is the size of each stored checksum (0 without checksums).
func (h *Header) ChecksumSize() int { return h.Checksum.Size() }

// UsedBytes is the amount of block data the image holds: UsedBlocks*BlockSize.
func (h *Header) UsedBytes() uint64 { return h.UsedBlocks * uint64(h.BlockSize) }

// HeaderBytes is the number of stream bytes before the data section.
func (h *Header) HeaderBytes() int64 { return h.size }

// Checksums is the number of checksums stored in the data section.
func (h *Header) Checksums() uint64 {
	if h.Checksum == ChecksumNone {
		return 0
	}
	n := uint64(h.BlocksPerChecksum)
	return (h.UsedBlocks + n - 1) / n
}

// ImageSize is the exact length of the whole decompressed image stream.
func (h *Header) ImageSize() uint64 {
	return uint64(h.size) + h.UsedBytes() + h.Checksums()*uint64(h.ChecksumSize())
}

// nextUsed returns the first used block ≥ k, or TotalBlocks if none.
func (h *Header) nextUsed(k uint64) uint64 {
	for k < h.TotalBlocks {
		if k%64 == 0 && k+64 <= h.TotalBlocks {
			w := binary.LittleEndian.Uint64(h.bitmap[k/8:])
			if w == 0 {
				k += 64
				continue
			}
			return k + uint64(bits.TrailingZeros64(w))
		}
		if h.bitmap[k/8]&(1<<(k%8)) != 0 {
			return k
		}
		k++
	}
	return h.TotalBlocks
}

// runLength returns how many consecutive used blocks start at k (k used),
// at most max.
func (h *Header) runLength(k, max uint64) uint64 {
	n := uint64(0)
	for n < max && k+n < h.TotalBlocks {
		if (k+n)%64 == 0 && k+n+64 <= h.TotalBlocks && n+64 <= max {
			if binary.LittleEndian.Uint64(h.bitmap[(k+n)/8:]) == ^uint64(0) {
				n += 64
				continue
			}
		}
		if h.bitmap[(k+n)/8]&(1<<((k+n)%8)) == 0 {
			break
		}
		n++
	}
	return n
}

func (h *Header) String() string {
	s := fmt.Sprintf("partclone format %04d, %s, %d-byte blocks, %d of %d used, device %d bytes, checksum %v",
		h.Version, h.FSType, h.BlockSize, h.UsedBlocks, h.TotalBlocks, h.DeviceSize, h.Checksum)
	if h.Checksum != ChecksumNone && h.Version == 2 {
		s += fmt.Sprintf(" every %d blocks", h.BlocksPerChecksum)
		if !h.Reseed {
			s += " (running)"
		}
	}
	return s
}

// BitmapBytes is the memory the bitmap takes once read (one bit per block).
func (h *Header) BitmapBytes() uint64 { return (h.TotalBlocks + 7) / 8 }

// MaxBitmapBytes is the largest bitmap ReadHeader accepts by default: 64 MiB
// covers 2 TiB of 4 KiB blocks (256 GiB of 512-byte ones) and keeps a
// 256 MiB client within its budget.
const MaxBitmapBytes = 64 << 20

// ReadHeader reads and checks the descriptor and the bitmap, leaving r at
// the first byte of the data section. It reads nothing past the bitmap.
func ReadHeader(r io.Reader) (*Header, error) {
	return ReadHeaderChecked(r, nil)
}

// ReadHeaderChecked is ReadHeader with a check of the descriptor before the
// bitmap is read: check sees every field except UsedBlocks and can refuse
// the image (e.g. a device size larger than the target) before the bitmap
// costs any memory. Without check, a bitmap above MaxBitmapBytes is refused;
// a check that returns nil for a larger one lets it through.
func ReadHeaderChecked(r io.Reader, check func(*Header) error) (*Header, error) {
	if check == nil {
		check = func(h *Header) error {
			if h.BitmapBytes() > MaxBitmapBytes {
				return BitmapTooLarge(h, MaxBitmapBytes)
			}
			return nil
		}
	}
	h, err := readDescriptor(r)
	if err != nil {
		return nil, err
	}
	if err := check(h); err != nil {
		return nil, err
	}
	if h.Version == 1 {
		err = h.readByteMap(r)
	} else {
		err = h.readBitmap(r)
	}
	if err != nil {
		return nil, err
	}
	return h, nil
}

// BitmapTooLarge is the error for a bitmap above limit bytes.
func BitmapTooLarge(h *Header, limit uint64) error {
	return fmt.Errorf("%w: the image's bitmap (%d blocks of %d bytes) would take %d MiB of memory; at most %d MiB is allowed",
		ErrUnsupported, h.TotalBlocks, h.BlockSize, h.BitmapBytes()>>20, limit>>20)
}

// readDescriptor reads and validates the descriptor, leaving r at the
// bitmap.
func readDescriptor(r io.Reader) (*Header, error) {
	var d [v1DescriptorSize]byte
	if n, err := io.ReadFull(r, d[:34]); err != nil {
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("reading the image descriptor: %w", err)
		}
		if m := min(n, len(Magic)); string(d[:m]) != Magic[:m] {
			return nil, notPartclone(d[:n])
		}
		return nil, truncated(int64(n), "the image descriptor")
	}
	if string(d[:len(Magic)]) != Magic {
		return nil, notPartclone(d[:34])
	}
	switch string(d[30:34]) {
	case "0002":
		return readV2(r, d[:v2DescriptorSize])
	case "0001":
		return readV1(r, d[:v1DescriptorSize])
	}
	return nil, unsupported("image format %q (this decoder reads 0001 and 0002)", printable(d[30:34]))
}

func notPartclone(b []byte) error {
	n := min(len(b), 16)
	return fmt.Errorf("%w: it starts with % x", ErrNotPartclone, b[:n])
}

func printable(b []byte) string {
	out := make([]byte, len(b))
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		out[i] = c
	}
	return string(out)
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return printable(b)
}

func readV2(r io.Reader, d []byte) (*Header, error) {
	if _, err := io.ReadFull(r, d[34:]); err != nil {
		return nil, readErr(err, 34, "the image descriptor")
	}
	le := binary.LittleEndian
	switch le.Uint16(d[34:]) {
	case endianMarkerLE:
	case 0xDEC0:
		return nil, unsupported("written by a big-endian machine")
	default:
		return nil, corrupt("endianness marker is % x, want de c0", d[34:36])
	}
	if got, want := le.Uint32(d[106:]), CRC32(0xFFFFFFFF, d[:106]); got != want {
		return nil, corrupt("descriptor CRC is %08x, computed %08x", got, want)
	}
	h := &Header{
		Version:           2,
		Creator:           cstring(d[16:30]),
		FSType:            cstring(d[36:52]),
		DeviceSize:        le.Uint64(d[52:]),
		TotalBlocks:       le.Uint64(d[60:]),
		FSUsedBlocks:      le.Uint64(d[68:]),
		BlockSize:         le.Uint32(d[84:]),
		Checksum:          ChecksumMode(le.Uint16(d[96:])),
		BlocksPerChecksum: le.Uint32(d[100:]),
		Reseed:            d[104] == 1,
	}
	if n := le.Uint32(d[88:]); n != v2OptionsSize {
		return nil, unsupported("options area of %d bytes (want %d)", n, v2OptionsSize)
	}
	if v := le.Uint16(d[92:]); v != 2 {
		return nil, corrupt("binary format version %d in a 0002 image", v)
	}
	if m := d[105]; m != bitmapModeBits {
		return nil, unsupported("bitmap mode 0x%02x (only 0x01, one bit per block, is ever written)", m)
	}
	switch h.Checksum {
	case ChecksumNone, ChecksumCRC32, ChecksumXXH64, ChecksumXXH128:
	default:
		return nil, unsupported("checksum mode 0x%02x", uint16(h.Checksum))
	}
	if cs := int(le.Uint16(d[98:])); cs != h.Checksum.Size() {
		return nil, corrupt("checksum size %d does not match mode %v (want %d)", cs, h.Checksum, h.Checksum.Size())
	}
	if h.Checksum != ChecksumNone && h.BlocksPerChecksum == 0 {
		return nil, corrupt("checksum mode %v with 0 blocks per checksum", h.Checksum)
	}
	if err := h.checkGeometry(); err != nil {
		return nil, err
	}
	if bitmapUsed := le.Uint64(d[76:]); bitmapUsed > h.TotalBlocks {
		return nil, corrupt("%d used blocks of %d total", bitmapUsed, h.TotalBlocks)
	}
	if hi, lo := bits.Mul64(h.TotalBlocks, uint64(h.BlockSize)); hi != 0 || lo > h.DeviceSize {
		return nil, corrupt("%d blocks of %d bytes exceed the device size %d", h.TotalBlocks, h.BlockSize, h.DeviceSize)
	}
	return h, nil
}

// readBitmap reads format 0002's bitmap and its CRC.
func (h *Header) readBitmap(r io.Reader) error {
	off := int64(v2DescriptorSize)
	n := h.BitmapBytes()
	bm, err := readGrowing(r, n)
	if err != nil {
		return readErr(err, off+int64(len(bm)), "the bitmap")
	}
	var crc [4]byte
	if _, err := io.ReadFull(r, crc[:]); err != nil {
		return readErr(err, off+int64(n), "the bitmap CRC")
	}
	if got, want := binary.LittleEndian.Uint32(crc[:]), CRC32(0xFFFFFFFF, bm); got != want {
		return corrupt("bitmap CRC is %08x, computed %08x", got, want)
	}
	h.bitmap = bm
	h.size = off + int64(n) + 4
	h.countUsed()
	return nil
}

func readV1(r io.Reader, d []byte) (*Header, error) {
	if _, err := io.ReadFull(r, d[34:]); err != nil {
		return nil, readErr(err, 34, "the image descriptor")
	}
	le := binary.LittleEndian
	h := &Header{
		Version:           1,
		FSType:            cstring(d[15:30]),
		BlockSize:         le.Uint32(d[36:]),
		TotalBlocks:       le.Uint64(d[48:]),
		FSUsedBlocks:      le.Uint64(d[56:]),
		Checksum:          ChecksumV1,
		BlocksPerChecksum: 1,
	}
	if err := h.checkGeometry(); err != nil {
		return nil, err
	}
	h.DeviceSize = max(le.Uint64(d[40:]), h.TotalBlocks*uint64(h.BlockSize)) // checkGeometry bounds the product
	if h.DeviceSize > math.MaxInt64 {
		return nil, corrupt("device size %d", h.DeviceSize)
	}
	return h, nil
}

// readByteMap reads format 0001's byte map and its signature.
func (h *Header) readByteMap(r io.Reader) error {
	// The byte map (one byte per block, exactly 1 = used) is converted to
	// bits a chunk at a time, so memory only grows as real data arrives.
	h.bitmap = make([]byte, 0, min((h.TotalBlocks+7)/8, 1<<20))
	off := int64(v1DescriptorSize)
	chunk := make([]byte, 64<<10)
	for k := uint64(0); k < h.TotalBlocks; {
		c := chunk[:min(uint64(len(chunk)), h.TotalBlocks-k)]
		if _, err := io.ReadFull(r, c); err != nil {
			return readErr(err, off+int64(k), "the block map")
		}
		for i, v := range c {
			bit := k + uint64(i)
			if bit%8 == 0 {
				h.bitmap = append(h.bitmap, 0)
			}
			if v == 1 {
				h.bitmap[bit/8] |= 1 << (bit % 8)
			}
		}
		k += uint64(len(c))
	}
	var magic [8]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return readErr(err, off+int64(h.TotalBlocks), "the bitmap signature")
	}
	if string(magic[:]) != v1BitmapMagic {
		return corrupt("no %q after the block map (found % x)", v1BitmapMagic, magic[:])
	}
	h.size = off + int64(h.TotalBlocks) + 8
	h.countUsed()
	return nil
}

func (h *Header) checkGeometry() error {
	if h.BlockSize == 0 || h.BlockSize > maxBlockSize {
		return corrupt("block size %d", h.BlockSize)
	}
	if h.TotalBlocks > maxTotalBlocks {
		return corrupt("%d total blocks", h.TotalBlocks)
	}
	if hi, _ := bits.Mul64(h.TotalBlocks, uint64(h.BlockSize)); hi != 0 {
		return corrupt("%d blocks of %d bytes overflow", h.TotalBlocks, h.BlockSize)
	}
	return nil
}

// countUsed sets UsedBlocks from the bitmap, ignoring padding bits.
func (h *Header) countUsed() {
	full := h.TotalBlocks / 8
	var u uint64
	i := uint64(0)
	for ; i+8 <= full; i += 8 {
		u += uint64(bits.OnesCount64(binary.LittleEndian.Uint64(h.bitmap[i:])))
	}
	for ; i < full; i++ {
		u += uint64(bits.OnesCount8(h.bitmap[i]))
	}
	if rem := h.TotalBlocks % 8; rem != 0 {
		u += uint64(bits.OnesCount8(h.bitmap[full] & (1<<rem - 1)))
	}
	h.UsedBlocks = u
}

// readGrowing reads exactly n bytes, growing its buffer as data arrives so
// that a bogus huge length in a short stream costs no memory.
func readGrowing(r io.Reader, n uint64) ([]byte, error) {
	const step = 1 << 20
	buf := make([]byte, 0, min(n, step))
	for uint64(len(buf)) < n {
		want := min(n-uint64(len(buf)), step)
		start := len(buf)
		buf = append(buf, make([]byte, want)...)
		if _, err := io.ReadFull(r, buf[start:]); err != nil {
			return buf[:start], err
		}
	}
	return buf, nil
}

// readErr turns an early EOF into ErrTruncated at byte off.
func readErr(err error, off int64, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return truncated(off, what)
	}
	return fmt.Errorf("reading %s: %w", what, err)
}
