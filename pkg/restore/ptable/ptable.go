// Package ptable turns an sfdisk dump into a go-diskfs MBR or GPT table,
// checks it against a disk before anything is written, and writes it
// together with the boot area FOG saves as dN.mbr.
//
// go-diskfs writes the table itself; this package adds what a restore
// needs around it: the dos disk identifier, CHS fields and the GPT usable
// area exactly as sfdisk writes them from the same dump, the boot code,
// and the removal of a stale table of the other kind.
package ptable

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"strconv"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/partition"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"

	"github.com/imgcast/imgcast/internal/bytesize"
	"github.com/imgcast/imgcast/pkg/restore/sfdisk"
)

// Errors to test for with errors.Is.
var (
	// ErrDoesNotFit: a partition (or image) is larger than the room for it.
	ErrDoesNotFit = errors.New("does not fit")
	// ErrSectorSize: the dump was taken from a disk with another logical
	// sector size; its sector numbers would mean other bytes here.
	ErrSectorSize = errors.New("sector size mismatch")
	// ErrUnsupported: a table this package cannot write.
	ErrUnsupported = errors.New("unsupported partition table")
	// ErrBootArea: the saved boot area (dN.mbr) is unusable.
	ErrBootArea = errors.New("bad boot area")
)

// Geometry is what matters about a target disk.
type Geometry struct {
	Size               int64 // bytes
	LogicalSectorSize  int64
	PhysicalSectorSize int64
}

// Sectors is the number of logical sectors.
func (g Geometry) Sectors() uint64 { return uint64(g.Size / g.LogicalSectorSize) }

// FitError says which partition does not fit the disk.
type FitError struct {
	Partition int
	// End is the partition's end in bytes; Need the disk size the whole
	// table needs; Have the disk's size.
	End, Need, Have int64
}

func (e *FitError) Error() string {
	return fmt.Sprintf("partition %d ends at %s but the disk holds %s: this image needs a disk of at least %s (%d bytes)",
		e.Partition, bytesize.Format(e.End), bytesize.Format(e.Have), bytesize.Format(e.Need), e.Need)
}

// Is makes errors.Is(err, ErrDoesNotFit) true.
func (e *FitError) Is(target error) bool { return target == ErrDoesNotFit }

// gptEntrySectors is the size of the 128-entry GPT partition array.
func gptEntrySectors(ss int64) uint64 { return uint64((128*128 + ss - 1) / ss) }

// Check verifies, without touching the disk, that the dump can be written
// to a disk of geometry g: same logical sector size, a table kind this
// package writes, and every partition inside the disk. It also checks the
// boot area when one is given (boot may be nil).
func Check(d *sfdisk.Dump, g Geometry, boot []byte) error {
	if g.LogicalSectorSize <= 0 || g.Size <= 0 {
		return fmt.Errorf("disk geometry unknown (size %d, sector %d)", g.Size, g.LogicalSectorSize)
	}
	if int64(d.SectorSize) != g.LogicalSectorSize {
		return fmt.Errorf("%w: the image was taken from a disk with %d-byte sectors, this disk has %d-byte sectors",
			ErrSectorSize, d.SectorSize, g.LogicalSectorSize)
	}
	ss := g.LogicalSectorSize
	sectors := g.Sectors()
	var tail uint64 // sectors the table needs after the last partition
	first := uint64(1)
	switch d.Label {
	case "dos":
		for _, p := range d.Partitions {
			if p.Number > 4 {
				return fmt.Errorf("%w: logical partition %d (dos extended partitions are not supported yet)", ErrUnsupported, p.Number)
			}
		}
	case "gpt":
		if d.TableLength != 0 && d.TableLength != 128 {
			return fmt.Errorf("%w: a GPT with %d entries (only the standard 128)", ErrUnsupported, d.TableLength)
		}
		tail = gptEntrySectors(ss) + 1
		first = 2 + gptEntrySectors(ss)
	default:
		return fmt.Errorf("%w: label %q", ErrUnsupported, d.Label)
	}
	var maxEnd uint64
	worst := 0
	for _, p := range d.Partitions {
		if p.Start < first {
			return fmt.Errorf("%w: partition %d starts at sector %d, inside the partition table", ErrUnsupported, p.Number, p.Start)
		}
		if p.End() >= maxEnd {
			maxEnd, worst = p.End(), p.Number
		}
	}
	if len(d.Partitions) > 0 && (maxEnd+tail >= sectors || maxEnd+tail+1 < maxEnd) {
		return &FitError{Partition: worst, End: int64(maxEnd+1) * ss, Need: int64(maxEnd+1+tail) * ss, Have: g.Size}
	}
	if boot != nil {
		if _, err := bootCode(d, boot, ss); err != nil {
			return err
		}
	}
	return nil
}

// bootCode checks the saved boot area and returns what to write at byte 0:
// for dos all of it (boot code and whatever lies before the first
// partition, e.g. GRUB's core image), for gpt the boot code of the
// protective MBR inside the sgdisk backup.
func bootCode(d *sfdisk.Dump, boot []byte, ss int64) ([]byte, error) {
	if d.Label == "gpt" {
		if int64(len(boot)) < 2*ss || string(boot[ss:ss+8]) != "EFI PART" {
			return nil, fmt.Errorf("%w: the dump is a gpt table but the boot area is not an sgdisk backup (no \"EFI PART\" at byte %d)", ErrBootArea, ss)
		}
		return boot[:440], nil
	}
	if len(boot) < 512 || boot[510] != 0x55 || boot[511] != 0xAA {
		return nil, fmt.Errorf("%w: %d bytes without an MBR signature", ErrBootArea, len(boot))
	}
	if string(boot[512:min(len(boot), 520)]) == "EFI PART" {
		return nil, fmt.Errorf("%w: the dump is a dos table but the boot area holds a GPT", ErrBootArea)
	}
	for _, p := range d.Partitions {
		if start := int64(p.Start) * ss; int64(len(boot)) > start {
			return nil, fmt.Errorf("%w: it is %d bytes long and would overwrite partition %d, which starts at byte %d", ErrBootArea, len(boot), p.Number, start)
		}
	}
	return boot, nil
}

// Build converts the dump into the go-diskfs table to write on a disk of
// geometry g. Call Check first.
func Build(d *sfdisk.Dump, g Geometry) (partition.Table, error) {
	ss := int(g.LogicalSectorSize)
	if d.Label == "dos" {
		t := &mbr.Table{LogicalSectorSize: ss, PhysicalSectorSize: int(g.PhysicalSectorSize)}
		for _, p := range d.Partitions {
			e := &mbr.Partition{Index: p.Number, Bootable: p.Bootable, Type: mbr.Type(p.TypeByte()),
				Start: uint32(p.Start), Size: uint32(p.Size)}
			e.StartHead, e.StartSector, e.StartCylinder = chs(p.Start)
			e.EndHead, e.EndSector, e.EndCylinder = chs(p.End())
			t.Partitions = append(t.Partitions, e)
		}
		// go-diskfs writes entries in slice order: put each at its number.
		slots := make([]*mbr.Partition, 4)
		for _, p := range t.Partitions {
			slots[p.Index-1] = p
		}
		for i := range slots {
			if slots[i] == nil {
				slots[i] = &mbr.Partition{Index: i + 1, Type: mbr.Empty}
			}
		}
		t.Partitions = slots
		return t, nil
	}
	t := &gpt.Table{LogicalSectorSize: ss, PhysicalSectorSize: int(g.PhysicalSectorSize), ProtectiveMBR: true, GUID: d.ID}
	for _, p := range d.Partitions {
		t.Partitions = append(t.Partitions, &gpt.Partition{
			Index: p.Number, Start: p.Start, End: p.End(), Size: p.Size * uint64(ss),
			Type: gpt.Type(p.Type), Name: p.Name, GUID: p.UUID, Attributes: p.Attrs,
		})
	}
	return t, nil
}

// chs encodes a sector number as the CHS triple libfdisk writes (255
// heads, 63 sectors per track, clamped to the last CHS-addressable sector).
func chs(lba uint64) (head, sector, cylinder byte) {
	const heads, spt = 255, 63
	lba = min(lba, 1024*heads*spt-1)
	c := lba / (heads * spt)
	h := (lba / spt) % heads
	s := lba%spt + 1
	return byte(h), byte(s) | byte((c>>2)&0xC0), byte(c)
}

// ReadGeometry asks the disk (block device ioctls, or 512-byte sectors for
// an image file) for its size and sector sizes. sectorSize, when not 0,
// overrides the sector size of an image file.
func ReadGeometry(f *os.File, sectorSize int64) (Geometry, error) {
	opts := []diskfs.OpenOpt{diskfs.WithOpenMode(diskfs.ReadWrite)}
	if sectorSize != 0 {
		opts = append(opts, diskfs.WithSectorSize(diskfs.SectorSize(sectorSize)))
	}
	dk, err := diskfs.OpenBackend(file.New(f, false), opts...)
	if err != nil {
		return Geometry{}, fmt.Errorf("reading the geometry of %s: %w", f.Name(), err)
	}
	st, err := f.Stat()
	if err != nil {
		return Geometry{}, err
	}
	g := Geometry{Size: dk.Size, LogicalSectorSize: dk.LogicalBlocksize, PhysicalSectorSize: dk.PhysicalBlocksize}
	if st.Mode().IsRegular() && sectorSize != 0 {
		g.LogicalSectorSize, g.PhysicalSectorSize = sectorSize, sectorSize
	}
	return g, nil
}

// Write writes the table of d (and the boot area, when boot is not nil)
// to the disk f of geometry g, then makes the kernel re-read the table
// when f is a block device. It checks everything first and writes nothing
// when a check fails.
func Write(f *os.File, d *sfdisk.Dump, g Geometry, boot []byte) error {
	if err := Check(d, g, boot); err != nil {
		return err
	}
	ss := g.LogicalSectorSize
	var code []byte
	if boot != nil {
		code, _ = bootCode(d, boot, ss)
	}
	table, err := Build(d, g)
	if err != nil {
		return err
	}
	if err := clearStale(f, d, g, len(code)); err != nil {
		return err
	}
	if d.Label == "dos" && code != nil {
		if err := writeAt(f, code, 0, "the boot area"); err != nil {
			return err
		}
	}
	opts := []diskfs.OpenOpt{diskfs.WithOpenMode(diskfs.ReadWrite), diskfs.WithSectorSize(diskfs.SectorSize(ss))}
	if st, err := f.Stat(); err == nil && st.Mode()&os.ModeDevice != 0 {
		opts = opts[:1] // a block device reports its own sector size
	}
	dk, err := diskfs.OpenBackend(file.New(f, false), opts...)
	if err != nil {
		return fmt.Errorf("opening %s with go-diskfs: %w", f.Name(), err)
	}
	// Table.Write (inside Partition) only writes from byte 446 of sector 0
	// on, so the boot code stays; the fix-ups follow before the re-read.
	rw, err := dk.Backend.Writable()
	if err != nil {
		return err
	}
	if err := table.Write(rw, g.Size); err != nil {
		return fmt.Errorf("writing the %s partition table: %w", d.Label, err)
	}
	if d.Label == "dos" {
		err = fixDOS(f, d)
	} else {
		err = fixGPT(f, d, g, code)
	}
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing the partition table: %w", err)
	}
	if err := dk.ReReadPartitionTable(); err != nil {
		return fmt.Errorf("the table is written, but the kernel did not take it: %w", err)
	}
	return nil
}

func writeAt(f *os.File, b []byte, off int64, what string) error {
	if _, err := f.WriteAt(b, off); err != nil {
		return fmt.Errorf("writing %s: %w", what, err)
	}
	return nil
}

// fixDOS writes the disk identifier where sfdisk puts it (bytes 440–443,
// then two zero bytes).
func fixDOS(f *os.File, d *sfdisk.Dump) error {
	var id [6]byte
	if d.ID != "" {
		v, err := strconv.ParseUint(d.ID[2:], 16, 32)
		if err != nil {
			return fmt.Errorf("label-id %q: %w", d.ID, err)
		}
		binary.LittleEndian.PutUint32(id[:], uint32(v))
	}
	return writeAt(f, id[:], 440, "the disk identifier")
}

// fixGPT makes the GPT what sfdisk writes from the same dump: the
// protective MBR entry with sfdisk's CHS values and a size clamped to
// 32 bits, no disk signature, the saved boot code, and the usable area
// from the dump's first-lba/last-lba (go-diskfs always uses the largest).
func fixGPT(f *os.File, d *sfdisk.Dump, g Geometry, code []byte) error {
	ss := g.LogicalSectorSize
	sector0 := make([]byte, 512)
	if _, err := f.ReadAt(sector0, 0); err != nil {
		return fmt.Errorf("reading back sector 0: %w", err)
	}
	if code != nil {
		copy(sector0, code[:440])
	}
	clear(sector0[440:446])
	e := sector0[446:462]
	clear(e)
	e[2], e[4], e[5], e[6], e[7] = 0x02, 0xEE, 0xFF, 0xFF, 0xFF
	binary.LittleEndian.PutUint32(e[8:], 1)
	binary.LittleEndian.PutUint32(e[12:], uint32(min(g.Sectors()-1, 0xFFFFFFFF)))
	if err := writeAt(f, sector0, 0, "the protective MBR"); err != nil {
		return err
	}

	first, last := d.FirstLBA, d.LastLBA
	maxLast := g.Sectors() - 2 - gptEntrySectors(ss)
	if last == 0 || last > maxLast {
		last = maxLast
	}
	if first == 0 {
		first = 2 + gptEntrySectors(ss)
	}
	for _, lba := range []uint64{1, g.Sectors() - 1} {
		h := make([]byte, ss)
		if _, err := f.ReadAt(h, int64(lba)*ss); err != nil {
			return fmt.Errorf("reading back the GPT header at sector %d: %w", lba, err)
		}
		if string(h[:8]) != "EFI PART" {
			return fmt.Errorf("no GPT header at sector %d after writing it", lba)
		}
		size := binary.LittleEndian.Uint32(h[12:])
		if size < 92 || int64(size) > ss {
			return fmt.Errorf("GPT header at sector %d has size %d", lba, size)
		}
		binary.LittleEndian.PutUint64(h[40:], first)
		binary.LittleEndian.PutUint64(h[48:], last)
		clear(h[16:20])
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:size]))
		if err := writeAt(f, h, int64(lba)*ss, "the GPT header"); err != nil {
			return err
		}
	}
	return nil
}

// clearStale wipes the headers of a GPT that a dos table would leave
// behind (tools would still find it), the way sfdisk does. keep is the
// number of bytes at the start of the disk the boot area will overwrite
// anyway.
func clearStale(f *os.File, d *sfdisk.Dump, g Geometry, keep int) error {
	if d.Label != "dos" {
		return nil
	}
	ss := g.LogicalSectorSize
	for _, lba := range []uint64{1, g.Sectors() - 1} {
		if int64(lba)*ss < int64(keep) {
			continue
		}
		sig := make([]byte, 8)
		if _, err := f.ReadAt(sig, int64(lba)*ss); err != nil {
			return fmt.Errorf("reading sector %d: %w", lba, err)
		}
		if string(sig) == "EFI PART" {
			if err := writeAt(f, make([]byte, ss), int64(lba)*ss, "over a stale GPT header"); err != nil {
				return err
			}
		}
	}
	return nil
}
