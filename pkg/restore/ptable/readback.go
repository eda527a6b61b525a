package ptable

import (
	"fmt"
	"os"

	"github.com/diskfs/go-diskfs/partition"
)

// Entry is one partition of a table read back from a disk, in bytes.
type Entry struct {
	Number       int
	Offset, Size int64
}

// Table is a partition table as read back from a disk.
type Table struct {
	// Label is "dos" or "gpt", as sfdisk dumps name them.
	Label   string
	Entries []Entry
}

// Entry returns partition n.
func (t *Table) Entry(n int) (Entry, bool) {
	for _, e := range t.Entries {
		if e.Number == n {
			return e, true
		}
	}
	return Entry{}, false
}

// Read reads the partition table of the disk f of geometry g back, for a
// check after writing. Empty entries are left out.
func Read(f *os.File, g Geometry) (*Table, error) {
	pt, err := partition.Read(f, int(g.LogicalSectorSize), int(g.PhysicalSectorSize))
	if err != nil {
		return nil, fmt.Errorf("reading the partition table of %s: %w", f.Name(), err)
	}
	t := &Table{Label: pt.Type()}
	// go-diskfs reads an MBR in 512-byte sectors whatever the disk's
	// sector size (GPT it reads in the given logical size); scale its
	// figures back for 4Kn disks.
	scale := int64(1)
	if t.Label == "mbr" {
		t.Label = "dos"
		scale = g.LogicalSectorSize / 512
	}
	for _, p := range pt.GetPartitions() {
		if p.GetSize() > 0 {
			t.Entries = append(t.Entries, Entry{Number: p.GetIndex(), Offset: p.GetStart() * scale, Size: p.GetSize() * scale})
		}
	}
	return t, nil
}
