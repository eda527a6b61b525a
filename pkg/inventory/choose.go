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
		return Disk{}, fmt.Errorf("no disk found for an image of %s: no block devices at all (is the storage driver loaded?)", bytesize.Format(minSize))
	}
	return Disk{}, fmt.Errorf("no disk found for an image of %s (%s)", bytesize.Format(minSize), strings.Join(why, "; "))
}

// HumanBytes formats n like every imgcast message (bytesize.Format).
//
// Deprecated: use internal/bytesize.Format; kept for pkg/server until it
// moves over.
func HumanBytes(n uint64) string { return bytesize.Format(n) }
