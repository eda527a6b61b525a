package imaging

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/diskfs/go-diskfs/partition"

	"github.com/imgcast/imgcast/pkg/restore"
)

// verifyTable reads the partition table back from the disk and checks that
// every planned partition is there with its start and size. The partition
// data were verified while they streamed (partclone checksums, d1.sha256).
func verifyTable(disk *os.File, plan *restore.Plan) error {
	g := plan.Geometry
	t, err := partition.Read(disk, int(g.LogicalSectorSize), int(g.PhysicalSectorSize))
	if err != nil {
		return fmt.Errorf("reading back the partition table: %w", err)
	}
	if t.Type() != plan.Image.Dump.Label && !(t.Type() == "mbr" && plan.Image.Dump.Label == "dos") {
		return fmt.Errorf("the disk holds a %s table, the image a %s one", t.Type(), plan.Image.Dump.Label)
	}
	// go-diskfs reads an MBR in 512-byte sectors whatever the disk's
	// sector size; scale its figures back for 4Kn disks.
	scale := int64(1)
	if t.Type() == "mbr" {
		scale = g.LogicalSectorSize / 512
	}
	found := map[int][2]int64{}
	for _, p := range t.GetPartitions() {
		if p.GetSize() > 0 {
			found[p.GetIndex()] = [2]int64{p.GetStart() * scale, p.GetSize() * scale}
		}
	}
	for _, pp := range plan.Partitions {
		got, ok := found[pp.Number]
		if !ok {
			return fmt.Errorf("partition %d is missing from the table read back", pp.Number)
		}
		if got[0] != pp.Offset || got[1] != pp.Size {
			return fmt.Errorf("partition %d reads back at %d+%d bytes, want %d+%d", pp.Number, got[0], got[1], pp.Offset, pp.Size)
		}
	}
	return nil
}

// kernelPartitions lists the partitions the kernel knows of a block
// device (vda1, vda2, …) from sysfs under root; ok is false when path is
// not a block device.
func kernelPartitions(root, path string) (parts []string, ok bool) {
	st, err := os.Stat(path)
	if err != nil || st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
		return nil, false
	}
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		resolved = path
	}
	name := filepath.Base(resolved)
	entries, err := os.ReadDir(filepath.Join(root, "sys", "class", "block", name))
	if err != nil {
		return nil, true
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), name) {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, "sys", "class", "block", name, e.Name(), "partition")); err == nil {
			parts = append(parts, e.Name())
		}
	}
	sort.Strings(parts)
	return parts, true
}
