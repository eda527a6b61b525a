package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/imgcast/imgcast/pkg/inventory"
)

// Disk is a whole disk as the inventory reads it.
type Disk struct {
	inventory.Disk
}

func (d Disk) String() string {
	s := fmt.Sprintf("%s %s", d.Path, inventory.HumanBytes(d.SizeBytes))
	var notes []string
	if d.Model != "" {
		notes = append(notes, d.Model)
	}
	if d.USB {
		notes = append(notes, "USB")
	}
	if d.Removable {
		notes = append(notes, "removable")
	}
	if len(notes) > 0 {
		s += " (" + strings.Join(notes, ", ") + ")"
	}
	return s
}

// listDisks reads the whole-disk block devices under root (/), sorted by
// name.
func listDisks(root string) []Disk {
	found, _ := inventory.ReadDisks(root)
	out := make([]Disk, 0, len(found))
	for _, d := range found {
		out = append(out, Disk{d})
	}
	return out
}

// chooseDisk picks the disk to write: the named one (it must exist and be
// large enough), or else the first (by name) physical, non-removable,
// non-USB disk of at least minSize bytes. ok is false when there is none
// (yet).
func chooseDisk(disks []Disk, named string, minSize uint64) (d Disk, ok bool, err error) {
	for _, d := range disks {
		if named != "" && d.Path == named {
			if d.SizeBytes < minSize {
				return d, false, fmt.Errorf("disk %s has %s, the image needs %s", named,
					inventory.HumanBytes(d.SizeBytes), inventory.HumanBytes(minSize))
			}
			return d, true, nil
		}
	}
	if named != "" {
		return Disk{}, false, nil
	}
	for _, d := range disks {
		if d.Skip(minSize) == "" {
			return d, true, nil
		}
	}
	return Disk{}, false, nil
}

// DiskError says no disk fits, listing the disks there are and why each
// was passed over.
type DiskError struct {
	Named   string
	MinSize uint64
	Waited  time.Duration
	Disks   []Disk
	Err     error
}

func (e *DiskError) Error() string {
	var b strings.Builder
	switch {
	case e.Err != nil:
		b.WriteString(e.Err.Error())
	case e.Named != "":
		fmt.Fprintf(&b, "disk %s not found after %s", e.Named, e.Waited.Round(time.Millisecond))
	default:
		fmt.Fprintf(&b, "no disk of at least %s found after %s", inventory.HumanBytes(e.MinSize), e.Waited.Round(time.Millisecond))
	}
	b.WriteString("\ndisks present:")
	if len(e.Disks) == 0 {
		b.WriteString(" none")
	}
	for _, d := range e.Disks {
		b.WriteString("\n  " + d.String())
		if why := d.Skip(e.MinSize); why != "" && e.Named == "" {
			b.WriteString(": " + why)
		}
	}
	return b.String()
}

// Hint says what to check.
func (e *DiskError) Hint() string {
	return "is the disk controller's driver in the image (dmesg, lsmod, pci -n)? name the disk with imgcast.disk=/dev/..., or wait longer with imgcast.disktimeout"
}

// waitForDisk waits until chooseDisk finds a disk, up to timeout, looking
// again whenever a device event arrives (changed) rather than polling.
func waitForDisk(ctx context.Context, root, named string, minSize uint64, timeout time.Duration, changed func() <-chan struct{}) (Disk, error) {
	start := time.Now()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		var wake <-chan struct{}
		if changed != nil {
			wake = changed() // before looking, so no event is missed
		}
		disks := listDisks(root)
		d, ok, err := chooseDisk(disks, named, minSize)
		if err != nil {
			return Disk{}, &DiskError{Named: named, MinSize: minSize, Disks: disks, Err: err}
		}
		if ok {
			return d, nil
		}
		select {
		case <-wake:
		case <-timer.C:
			return Disk{}, &DiskError{Named: named, MinSize: minSize, Waited: time.Since(start), Disks: listDisks(root)}
		case <-ctx.Done():
			return Disk{}, ctx.Err()
		}
	}
}
