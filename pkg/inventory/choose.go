package inventory

import (
	"fmt"
	"strings"

	"github.com/imgcast/imgcast/internal/bytesize"
)

// virtualPrefixes name block devices that are never an imaging target:
// loop and RAM disks, compressed swap, optical drives, floppies, network
// block devices, device-mapper volumes, and the boot/RPMB areas of eMMC.
var virtualPrefixes = []string{"loop", "ram", "zram", "sr", "fd", "nbd", "dm-", "md"}

// Skip says why ChooseDisk would not pick d for an image that needs minSize
// bytes, or returns "" when it would.
func (d Disk) Skip(minSize uint64) string {
	if d.USB {
		return "on USB"
	}
	for _, p := range virtualPrefixes {
		if strings.HasPrefix(d.Name, p) {
			return "not a physical disk"
		}
	}
	if strings.HasPrefix(d.Name, "mmcblk") && (strings.Contains(d.Name, "boot") || strings.Contains(d.Name, "rpmb")) {
		return "eMMC boot/RPMB area"
	}
	switch {
	case d.SizeBytes == 0:
		return "no medium (size 0)"
	case d.Removable:
		return "removable"
	case d.SizeBytes < minSize:
		return fmt.Sprintf("too small (%s < %s)", bytesize.Format(d.SizeBytes), bytesize.Format(minSize))
	}
	return ""
}

// Class is the kind of controller a disk hangs off, by its kernel name;
// ChooseDisk prefers the lower ones.
type Class int

// The classes, in the order ChooseDisk prefers them.
const (
	ClassNVMe   Class = iota // nvme*: the machine's system disk when it has one
	ClassSCSI                // sd*: SATA, SAS, SCSI (libata, mpt3sas, …)
	ClassVirtio              // vd*: virtio-blk (virtual machines)
	ClassOther               // everything else: mmcblk*, xvd*, hd*, …
)

func (c Class) String() string {
	return [...]string{"NVMe", "SATA/SAS/SCSI", "virtio", "other"}[c]
}

// Class is the disk's class.
func (d Disk) Class() Class {
	switch {
	case strings.HasPrefix(d.Name, "nvme"):
		return ClassNVMe
	case strings.HasPrefix(d.Name, "sd"):
		return ClassSCSI
	case strings.HasPrefix(d.Name, "vd"):
		return ClassVirtio
	}
	return ClassOther
}

// String describes the disk for people: "/dev/nvme0n1 465.8 GiB (Samsung
// SSD 970, serial S4EV…)".
func (d Disk) String() string {
	s := fmt.Sprintf("%s %s", d.Path, bytesize.Format(d.SizeBytes))
	var notes []string
	if d.Model != "" {
		notes = append(notes, d.Model)
	}
	if d.Serial != "" {
		notes = append(notes, "serial "+d.Serial)
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

// ChooseDisk returns the disk to image when none is named: among the
// disks that are physical, not removable, not on USB and at least minSize
// bytes, an NVMe disk first, then SATA/SAS/SCSI, then virtio, then any
// other, and within a class the first in kernel name order (sda, sdb, …,
// sdz, sdaa; nvme0n1, nvme1n1, …, nvme10n1). The rule only sees the disks
// present: WaitDisk waits until the storage drivers have found them all.
// The error lists every disk and why it was passed over, so a machine that
// cannot be imaged says why.
func ChooseDisk(disks []Disk, minSize uint64) (Disk, error) {
	var why []string
	var best *Disk
	for i, d := range disks {
		if reason := d.Skip(minSize); reason != "" {
			why = append(why, d.Name+": "+reason)
			continue
		}
		if best == nil || d.Class() < best.Class() || (d.Class() == best.Class() && kernelNameLess(d.Name, best.Name)) {
			best = &disks[i]
		}
	}
	if best != nil {
		return *best, nil
	}
	if len(why) == 0 {
		return Disk{}, fmt.Errorf("no disk found for an image of %s: no block devices at all (is the storage driver loaded?)", bytesize.Format(minSize))
	}
	return Disk{}, fmt.Errorf("no disk found for an image of %s (%s)", bytesize.Format(minSize), strings.Join(why, "; "))
}

// kernelNameLess orders block device names the way the kernel hands them
// out: numbers by value, and letter suffixes by length first (sdz before
// sdaa), so the order is the order of discovery on one controller.
func kernelNameLess(a, b string) bool {
	ra, rb := nameRuns(a), nameRuns(b)
	for i := 0; i < len(ra) && i < len(rb); i++ {
		x, y := ra[i], rb[i]
		if len(x) != len(y) && !(isDigits(x) && isDigits(y)) {
			return len(x) < len(y)
		}
		if isDigits(x) && isDigits(y) {
			x, y = strings.TrimLeft(x, "0"), strings.TrimLeft(y, "0")
			if len(x) != len(y) {
				return len(x) < len(y)
			}
		}
		if x != y {
			return x < y
		}
	}
	if len(ra) != len(rb) {
		return len(ra) < len(rb)
	}
	return a < b
}

// nameRuns splits a name into runs of digits and runs of other bytes.
func nameRuns(s string) []string {
	var runs []string
	for i := 0; i < len(s); {
		j := i + 1
		for j < len(s) && isDigit(s[j]) == isDigit(s[i]) {
			j++
		}
		runs = append(runs, s[i:j])
		i = j
	}
	return runs
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isDigits(s string) bool { return s != "" && isDigit(s[0]) }

// HumanBytes formats n like every imgcast message (bytesize.Format).
//
// Deprecated: use internal/bytesize.Format; kept for pkg/server until it
// moves over.
func HumanBytes(n uint64) string { return bytesize.Format(n) }
