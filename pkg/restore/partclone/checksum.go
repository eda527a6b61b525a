package partclone

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/cespare/xxhash/v2"
	"github.com/zeebo/xxh3"
)

// ChecksumMode is the checksum algorithm of the data section, with the value
// stored at offset 96 of a format 0002 descriptor.
type ChecksumMode uint16

// Checksum modes. ChecksumV1 is never stored: it labels format 0001 images,
// whose per-block CRC only ever looks at each block's first byte.
const (
	ChecksumNone   ChecksumMode = 0x00
	ChecksumCRC32  ChecksumMode = 0x20
	ChecksumXXH64  ChecksumMode = 0x30
	ChecksumXXH128 ChecksumMode = 0x31
	ChecksumV1     ChecksumMode = 0xFF
)

func (m ChecksumMode) String() string {
	switch m {
	case ChecksumNone:
		return "none"
	case ChecksumCRC32:
		return "CRC32"
	case ChecksumXXH64:
		return "XXH64"
	case ChecksumXXH128:
		return "XXH128"
	case ChecksumV1:
		return "CRC32 (format 0001)"
	}
	return fmt.Sprintf("unknown (0x%02x)", uint16(m))
}

// Size is the number of bytes a stored checksum of this mode takes.
func (m ChecksumMode) Size() int {
	switch m {
	case ChecksumCRC32, ChecksumV1:
		return 4
	case ChecksumXXH64:
		return 8
	case ChecksumXXH128:
		return 16
	}
	return 0
}

// CRC32 is partclone's CRC-32: the reflected IEEE CRC without the final
// complement, so a fresh value is the complement of the standard one
// It continues from reg, which starts as 0xFFFFFFFF.
func CRC32(reg uint32, p []byte) uint32 {
	return ^crc32.Update(^reg, crc32.IEEETable, p)
}

// V1BlockCRC advances format 0001's CRC register over one block of size
// blockSize that starts with firstByte: the buggy original fed the block's
// first byte blockSize times.
func V1BlockCRC(reg uint32, firstByte byte, blockSize int) uint32 {
	for range blockSize {
		reg = crc32.IEEETable[byte(reg)^firstByte] ^ (reg >> 8)
	}
	return reg
}

// summer is the running checksum state of a data section.
type summer interface {
	// add feeds whole blocks of data.
	add(blocks []byte)
	// sum appends the value to store (its on-disk byte order) to dst.
	sum(dst []byte) []byte
	reset()
}

func newSummer(mode ChecksumMode, blockSize int) (summer, error) {
	switch mode {
	case ChecksumCRC32:
		return &crcSummer{reg: 0xFFFFFFFF}, nil
	case ChecksumV1:
		return &v1Summer{reg: 0xFFFFFFFF, blockSize: blockSize}, nil
	case ChecksumXXH64:
		return &xxh64Summer{d: xxhash.New()}, nil
	case ChecksumXXH128:
		return &xxh128Summer{h: xxh3.New()}, nil
	}
	return nil, fmt.Errorf("no checksum state for mode %v", mode)
}

type crcSummer struct{ reg uint32 }

func (s *crcSummer) add(p []byte)          { s.reg = CRC32(s.reg, p) }
func (s *crcSummer) sum(dst []byte) []byte { return binary.LittleEndian.AppendUint32(dst, s.reg) }
func (s *crcSummer) reset()                { s.reg = 0xFFFFFFFF }

type v1Summer struct {
	reg       uint32
	blockSize int
}

func (s *v1Summer) add(p []byte) {
	for off := 0; off < len(p); off += s.blockSize {
		s.reg = V1BlockCRC(s.reg, p[off], s.blockSize)
	}
}
func (s *v1Summer) sum(dst []byte) []byte { return binary.LittleEndian.AppendUint32(dst, s.reg) }
func (s *v1Summer) reset()                { s.reg = 0xFFFFFFFF }

type xxh64Summer struct{ d *xxhash.Digest }

func (s *xxh64Summer) add(p []byte) { s.d.Write(p) }
func (s *xxh64Summer) sum(dst []byte) []byte {
	return binary.LittleEndian.AppendUint64(dst, s.d.Sum64())
}
func (s *xxh64Summer) reset() { s.d.Reset() }

// xxh128Summer stores XXH3-128 low half first, both halves little-endian
// i.e. the byte reverse of the canonical form.
type xxh128Summer struct{ h *xxh3.Hasher }

func (s *xxh128Summer) add(p []byte) { s.h.Write(p) }
func (s *xxh128Summer) sum(dst []byte) []byte {
	v := s.h.Sum128()
	dst = binary.LittleEndian.AppendUint64(dst, v.Lo)
	return binary.LittleEndian.AppendUint64(dst, v.Hi)
}
func (s *xxh128Summer) reset() { s.h.Reset() }
