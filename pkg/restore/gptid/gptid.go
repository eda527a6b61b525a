// Package gptid reads and sets the identifiers of a GPT in place: the
// disk GUID and each partition's type GUID and unique GUID, in both the
// primary and the backup table, with their CRCs. FOG's client does this
// after the data (sgdisk -U, -t and -u from the image's dN.partitions), so
// a restored system finds its partitions by PARTUUID and its boot entries
// by disk GUID; imgcast's table writer already writes them from the same
// dump, so this is needed when the table is not rewritten (a single
// partition restore) and serves to verify it otherwise.
package gptid

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"strings"
)

// ErrNoGPT: the disk has no valid GPT.
var ErrNoGPT = errors.New("no valid GPT")

// Entry is one used partition entry.
type Entry struct {
	Type, UUID  string // upper-case text GUIDs
	First, Last uint64 // LBAs
}

// Table is what a GPT says about identity.
type Table struct {
	DiskGUID string
	Entries  map[int]Entry // by partition number (entry index + 1)
}

// IDs are the identifiers to set on one partition; an empty field is left
// as it is.
type IDs struct{ Type, UUID string }

// Disk is a disk or disk image opened for reading and writing.
type Disk interface {
	io.ReaderAt
	io.WriterAt
}

// header is a parsed GPT header with its raw bytes.
type header struct {
	raw         []byte
	lba         uint64
	altLBA      uint64
	entriesLBA  uint64
	count, size uint32
	entries     []byte
}

const maxEntriesBytes = 1 << 20

// readHeader reads and checks the header at lba and its entry array.
func readHeader(r io.ReaderAt, lba uint64, ss int64) (*header, error) {
	raw := make([]byte, ss)
	if _, err := r.ReadAt(raw, int64(lba)*ss); err != nil {
		return nil, fmt.Errorf("reading sector %d: %w", lba, err)
	}
	if string(raw[:8]) != "EFI PART" {
		return nil, fmt.Errorf("%w: no GPT header at sector %d", ErrNoGPT, lba)
	}
	hsize := binary.LittleEndian.Uint32(raw[12:])
	if hsize < 92 || int64(hsize) > ss {
		return nil, fmt.Errorf("%w: GPT header at sector %d has size %d", ErrNoGPT, lba, hsize)
	}
	want := binary.LittleEndian.Uint32(raw[16:])
	c := bytes.Clone(raw[:hsize])
	clear(c[16:20])
	if crc32.ChecksumIEEE(c) != want {
		return nil, fmt.Errorf("%w: GPT header at sector %d fails its CRC", ErrNoGPT, lba)
	}
	h := &header{
		raw: raw, lba: binary.LittleEndian.Uint64(raw[24:]), altLBA: binary.LittleEndian.Uint64(raw[32:]),
		entriesLBA: binary.LittleEndian.Uint64(raw[72:]),
		count:      binary.LittleEndian.Uint32(raw[80:]), size: binary.LittleEndian.Uint32(raw[84:]),
	}
	if h.lba != lba {
		return nil, fmt.Errorf("%w: the GPT header at sector %d says it is at %d", ErrNoGPT, lba, h.lba)
	}
	n := int64(h.count) * int64(h.size)
	if h.size < 128 || h.size%8 != 0 || n > maxEntriesBytes || n == 0 {
		return nil, fmt.Errorf("%w: GPT header at sector %d has %d entries of %d bytes", ErrNoGPT, lba, h.count, h.size)
	}
	h.entries = make([]byte, n)
	if _, err := r.ReadAt(h.entries, int64(h.entriesLBA)*ss); err != nil {
		return nil, fmt.Errorf("reading the GPT entries at sector %d: %w", h.entriesLBA, err)
	}
	if crc32.ChecksumIEEE(h.entries) != binary.LittleEndian.Uint32(raw[88:]) {
		return nil, fmt.Errorf("%w: the GPT entries at sector %d fail their CRC", ErrNoGPT, h.entriesLBA)
	}
	return h, nil
}

// read returns the primary and backup headers.
func read(r io.ReaderAt, ss int64) (primary, backup *header, err error) {
	if ss < 512 {
		return nil, nil, fmt.Errorf("sector size %d", ss)
	}
	if primary, err = readHeader(r, 1, ss); err != nil {
		return nil, nil, err
	}
	if backup, err = readHeader(r, primary.altLBA, ss); err != nil {
		return nil, nil, fmt.Errorf("backup table: %w", err)
	}
	if backup.count != primary.count || backup.size != primary.size {
		return nil, nil, fmt.Errorf("%w: the primary and backup GPT differ in shape", ErrNoGPT)
	}
	return primary, backup, nil
}

// Read returns the disk GUID and the used entries of the primary GPT
// (the backup must be valid too). ss is the logical sector size.
func Read(r io.ReaderAt, ss int64) (*Table, error) {
	h, _, err := read(r, ss)
	if err != nil {
		return nil, err
	}
	t := &Table{DiskGUID: guidString(h.raw[56:72]), Entries: map[int]Entry{}}
	for i := 0; i < int(h.count); i++ {
		e := h.entries[i*int(h.size):]
		if isZero(e[:16]) {
			continue
		}
		t.Entries[i+1] = Entry{
			Type: guidString(e[0:16]), UUID: guidString(e[16:32]),
			First: binary.LittleEndian.Uint64(e[32:]), Last: binary.LittleEndian.Uint64(e[40:]),
		}
	}
	return t, nil
}

// Set gives the disk the GUID disk (empty: unchanged) and each listed
// partition its IDs, in both tables, and returns what it changed, for the
// log. A listed partition that has no entry is an error; nothing is
// written unless every check passes. The caller syncs.
func Set(d Disk, ss int64, disk string, parts map[int]IDs) ([]string, error) {
	primary, backup, err := read(d, ss)
	if err != nil {
		return nil, err
	}
	var diskGUID []byte
	if disk != "" {
		if diskGUID, err = guidBytes(disk); err != nil {
			return nil, fmt.Errorf("disk GUID: %w", err)
		}
	}
	type change struct {
		off   int // in the entry array
		guid  []byte
		what  string
		index int
	}
	var changes []change
	nums := make([]int, 0, len(parts))
	for n := range parts {
		nums = append(nums, n)
	}
	sort.Ints(nums)
	for _, n := range nums {
		ids := parts[n]
		if n < 1 || n > int(primary.count) {
			return nil, fmt.Errorf("partition %d: the GPT has %d entries", n, primary.count)
		}
		off := (n - 1) * int(primary.size)
		if isZero(primary.entries[off : off+16]) {
			return nil, fmt.Errorf("partition %d: no such partition in the GPT", n)
		}
		for _, f := range []struct {
			val   string
			at    int
			label string
		}{{ids.Type, 0, "type"}, {ids.UUID, 16, "uuid"}} {
			if f.val == "" {
				continue
			}
			g, err := guidBytes(f.val)
			if err != nil {
				return nil, fmt.Errorf("partition %d %s: %w", n, f.label, err)
			}
			if f.label == "type" && isZero(g) {
				return nil, fmt.Errorf("partition %d: the empty type would delete it", n)
			}
			if !bytes.Equal(primary.entries[off+f.at:off+f.at+16], g) || !bytes.Equal(backup.entries[off+f.at:off+f.at+16], g) {
				changes = append(changes, change{off + f.at, g, fmt.Sprintf("partition %d %s %s", n, f.label, strings.ToUpper(f.val)), n})
			}
		}
	}
	diskChanged := diskGUID != nil && (!bytes.Equal(primary.raw[56:72], diskGUID) || !bytes.Equal(backup.raw[56:72], diskGUID))
	if !diskChanged && len(changes) == 0 {
		return nil, nil
	}
	var log []string
	if diskChanged {
		log = append(log, "disk GUID "+strings.ToUpper(disk))
	}
	for _, c := range changes {
		log = append(log, c.what)
	}
	// Backup first: if the machine dies in between, the primary still
	// matches its own entries and tools repair the backup from it.
	for _, h := range []*header{backup, primary} {
		for _, c := range changes {
			copy(h.entries[c.off:], c.guid)
		}
		if diskGUID != nil {
			copy(h.raw[56:72], diskGUID)
		}
		binary.LittleEndian.PutUint32(h.raw[88:], crc32.ChecksumIEEE(h.entries))
		hsize := binary.LittleEndian.Uint32(h.raw[12:])
		clear(h.raw[16:20])
		binary.LittleEndian.PutUint32(h.raw[16:], crc32.ChecksumIEEE(h.raw[:hsize]))
		if _, err := d.WriteAt(h.entries, int64(h.entriesLBA)*ss); err != nil {
			return nil, fmt.Errorf("writing the GPT entries at sector %d: %w", h.entriesLBA, err)
		}
		if _, err := d.WriteAt(h.raw, int64(h.lba)*ss); err != nil {
			return nil, fmt.Errorf("writing the GPT header at sector %d: %w", h.lba, err)
		}
	}
	return log, nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// guidBytes encodes a text GUID the way GPT stores it: the first three
// fields little-endian, the rest as written.
func guidBytes(s string) ([]byte, error) {
	h := strings.ReplaceAll(s, "-", "")
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' || len(h) != 32 {
		return nil, fmt.Errorf("%q is not a GUID", s)
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return nil, fmt.Errorf("%q is not a GUID", s)
	}
	out := make([]byte, 16)
	out[0], out[1], out[2], out[3] = b[3], b[2], b[1], b[0]
	out[4], out[5] = b[5], b[4]
	out[6], out[7] = b[7], b[6]
	copy(out[8:], b[8:])
	return out, nil
}

func guidString(g []byte) string {
	b := []byte{g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6]}
	b = append(b, g[8:16]...)
	h := strings.ToUpper(hex.EncodeToString(b))
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
