// Package pclenc writes partclone images from the format specification. It
// exists for tests only: Debian's partclone 0.3.23 cannot write format 0001
// or the XXH64/XXH128 checksum modes, so the test suites build such images
// with this encoder. Its checksum code is written independently of package
// partclone's decoder so that the two check each other.
package pclenc

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/cespare/xxhash/v2"
	"github.com/zeebo/xxh3"
)

// Checksum modes as stored in a format 0002 descriptor.
const (
	None   = 0x00
	CRC32  = 0x20
	XXH64  = 0x30
	XXH128 = 0x31
)

// Image describes the image to write.
type Image struct {
	Version    int    // 1 or 2 (0 means 2)
	FSType     string // e.g. "EXTFS"
	Creator    string // format 2 writer version, e.g. "0.3.47"
	BlockSize  int
	DeviceSize uint64 // 0 means len(Data)
	// Data is the whole source device; block k is Data[k*B:(k+1)*B]. Its
	// length must be a multiple of BlockSize.
	Data []byte
	// Used tells which blocks go into the image (nil: all). PadBits sets
	// the unused bits of the last bitmap byte, as partclone.imager does.
	Used    func(k int) bool
	PadBits bool
	// Checksum mode (format 2 only), blocks per checksum and reseed.
	Checksum int
	PerSum   int
	Reseed   bool
}

// Write encodes img to w.
func Write(w io.Writer, img Image) error {
	if img.BlockSize <= 0 || len(img.Data)%img.BlockSize != 0 {
		return fmt.Errorf("pclenc: data of %d bytes is not whole %d-byte blocks", len(img.Data), img.BlockSize)
	}
	total := len(img.Data) / img.BlockSize
	used := func(k int) bool { return img.Used == nil || img.Used(k) }
	dev := img.DeviceSize
	if dev == 0 {
		dev = uint64(len(img.Data))
	}
	nUsed := 0
	for k := range total {
		if used(k) {
			nUsed++
		}
	}
	if img.Version == 1 {
		return writeV1(w, img, dev, total, nUsed, used)
	}
	le := binary.LittleEndian
	d := make([]byte, 110)
	copy(d, "partclone-image\x00")
	copy(d[16:30], img.Creator)
	copy(d[30:34], "0002")
	le.PutUint16(d[34:], 0xC0DE)
	copy(d[36:52], img.FSType)
	le.PutUint64(d[52:], dev)
	le.PutUint64(d[60:], uint64(total))
	le.PutUint64(d[68:], uint64(nUsed))
	le.PutUint64(d[76:], uint64(nUsed))
	le.PutUint32(d[84:], uint32(img.BlockSize))
	le.PutUint32(d[88:], 18)
	le.PutUint16(d[92:], 2)
	le.PutUint16(d[94:], 64)
	le.PutUint16(d[96:], uint16(img.Checksum))
	le.PutUint16(d[98:], uint16(sumSize(img.Checksum)))
	if img.Checksum != None {
		le.PutUint32(d[100:], uint32(img.PerSum))
	}
	if img.Reseed || img.Checksum == None {
		d[104] = 1
	}
	d[105] = 0x01
	le.PutUint32(d[106:], crc(0xFFFFFFFF, d[:106]))

	bm := make([]byte, (total+7)/8)
	for k := range total {
		if used(k) {
			bm[k/8] |= 1 << (k % 8)
		}
	}
	if img.PadBits && total%8 != 0 {
		bm[len(bm)-1] |= byte(0xFF << (total % 8))
	}
	out := append(d, bm...)
	out = le.AppendUint32(out, crc(0xFFFFFFFF, bm))
	if _, err := w.Write(out); err != nil {
		return err
	}

	st := newState(img.Checksum)
	inGroup := 0
	for k := range total {
		if !used(k) {
			continue
		}
		blk := img.Data[k*img.BlockSize : (k+1)*img.BlockSize]
		if _, err := w.Write(blk); err != nil {
			return err
		}
		if st == nil {
			continue
		}
		st.write(blk)
		inGroup++
		nUsed--
		if inGroup == img.PerSum || nUsed == 0 {
			if _, err := w.Write(st.sum()); err != nil {
				return err
			}
			if img.Reseed {
				st = newState(img.Checksum)
			}
			inGroup = 0
		}
	}
	return nil
}

func writeV1(w io.Writer, img Image, dev uint64, total, nUsed int, used func(int) bool) error {
	le := binary.LittleEndian
	d := make([]byte, 4160)
	copy(d, "partclone-image")
	copy(d[15:30], img.FSType)
	copy(d[30:34], "0001")
	le.PutUint32(d[36:], uint32(img.BlockSize))
	le.PutUint64(d[40:], dev)
	le.PutUint64(d[48:], uint64(total))
	le.PutUint64(d[56:], uint64(nUsed))
	out := d
	for k := range total {
		if used(k) {
			out = append(out, 1)
		} else {
			out = append(out, 0)
		}
	}
	out = append(out, "BiTmAgIc"...)
	if _, err := w.Write(out); err != nil {
		return err
	}
	reg := uint32(0xFFFFFFFF)
	for k := range total {
		if !used(k) {
			continue
		}
		blk := img.Data[k*img.BlockSize : (k+1)*img.BlockSize]
		// The defective original: the first byte, BlockSize times.
		for range img.BlockSize {
			reg = crc32.IEEETable[byte(reg)^blk[0]] ^ (reg >> 8)
		}
		if _, err := w.Write(blk); err != nil {
			return err
		}
		if _, err := w.Write(le.AppendUint32(nil, reg)); err != nil {
			return err
		}
	}
	return nil
}

func sumSize(mode int) int {
	switch mode {
	case CRC32:
		return 4
	case XXH64:
		return 8
	case XXH128:
		return 16
	}
	return 0
}

// crc is partclone's CRC-32 written out byte by byte (no final complement).
func crc(reg uint32, p []byte) uint32 {
	for _, b := range p {
		reg = crc32.IEEETable[byte(reg)^b] ^ (reg >> 8)
	}
	return reg
}

type state struct {
	mode int
	reg  uint32
	x64  *xxhash.Digest
	x128 *xxh3.Hasher
}

func newState(mode int) *state {
	switch mode {
	case CRC32:
		return &state{mode: mode, reg: 0xFFFFFFFF}
	case XXH64:
		return &state{mode: mode, x64: xxhash.New()}
	case XXH128:
		return &state{mode: mode, x128: xxh3.New()}
	}
	return nil
}

func (s *state) write(p []byte) {
	switch s.mode {
	case CRC32:
		s.reg = crc(s.reg, p)
	case XXH64:
		s.x64.Write(p)
	case XXH128:
		s.x128.Write(p)
	}
}

func (s *state) sum() []byte {
	le := binary.LittleEndian
	switch s.mode {
	case CRC32:
		return le.AppendUint32(nil, s.reg)
	case XXH64:
		return le.AppendUint64(nil, s.x64.Sum64())
	}
	v := s.x128.Sum128()
	return le.AppendUint64(le.AppendUint64(nil, v.Lo), v.Hi)
}
