package inventory

import (
	"fmt"
	"strings"
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
		return fmt.Sprintf("too small (%s < %s)", HumanBytes(d.SizeBytes), HumanBytes(minSize))
	}
	return ""
}

// ChooseDisk returns the first disk (in name order) that is physical, not
// removable, not on USB and at least minSize bytes. The error lists every disk and why
// it was passed over, so a machine that cannot be imaged says why.
func ChooseDisk(disks []Disk, minSize uint64) (Disk, error) {
	var why []string
	for _, d := range disks {
		reason := d.Skip(minSize)
		if reason == "" {
			return d, nil
		}
		why = append(why, d.Name+": "+reason)
	}
	if len(why) == 0 {
		return Disk{}, fmt.Errorf("no disk found for an image of %s: no block devices at all (is the storage driver loaded?)", HumanBytes(minSize))
	}
	return Disk{}, fmt.Errorf("no disk found for an image of %s (%s)", HumanBytes(minSize), strings.Join(why, "; "))
}

// HumanBytes formats n with binary units, e.g. "64 MiB", "1.5 GiB".
func HumanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	suffix := "KMGTPE"[exp : exp+1]
	if v == float64(uint64(v)) {
		return fmt.Sprintf("%d %siB", uint64(v), suffix)
	}
	return fmt.Sprintf("%.1f %siB", v, suffix)
}
