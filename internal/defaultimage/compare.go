package defaultimage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// Partition is one partition of the default disk.
type Partition struct {
	Number       int
	FS           string // "ext4" or "vfat"
	Offset, Size int64  // bytes
}

// Partitions are the default disk's partitions.
var Partitions = []Partition{
	{1, "ext4", Part1Offset, Part1Size},
	{2, "vfat", Part2Offset, Part2Size},
}

// ComparePartitions checks that every partition of disk holds the same
// bytes as in the reference disk, and names those that differ and where.
// Only the partitions are compared: a disk larger than DiskSize has its
// backup GPT elsewhere.
func ComparePartitions(disk, reference string) error {
	var errs []error
	for _, p := range Partitions {
		if err := compareRange(disk, reference, p.Offset, p.Size); err != nil {
			errs = append(errs, fmt.Errorf("partition %d (%s): %w", p.Number, p.FS, err))
		}
	}
	return errors.Join(errs...)
}

func compareRange(a, b string, off, size int64) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	ra, rb := io.NewSectionReader(fa, off, size), io.NewSectionReader(fb, off, size)
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for pos := int64(0); pos < size; {
		n := min(int64(len(ba)), size-pos)
		if _, err := io.ReadFull(ra, ba[:n]); err != nil {
			return fmt.Errorf("%s at partition byte %d: %w", a, pos, err)
		}
		if _, err := io.ReadFull(rb, bb[:n]); err != nil {
			return fmt.Errorf("%s at partition byte %d: %w", b, pos, err)
		}
		if !bytes.Equal(ba[:n], bb[:n]) {
			for i := range n {
				if ba[i] != bb[i] {
					return fmt.Errorf("differs from the reference at partition byte %d", pos+i)
				}
			}
		}
		pos += n
	}
	return nil
}

// Extract copies partition p of disk to the file dst (e.g. to fsck it).
func (p Partition) Extract(disk, dst string) error {
	f, err := os.Open(disk)
	if err != nil {
		return err
	}
	defer f.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, io.NewSectionReader(f, p.Offset, p.Size)); err != nil {
		out.Close()
		return fmt.Errorf("extracting partition %d of %s: %w", p.Number, disk, err)
	}
	return out.Close()
}
