package fogplan

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/restore/sfdisk"
)

// Disk is a disk of the machine as the plan needs it.
type Disk struct {
	inventory.Disk
	// WWN is the disk's world wide name (ReadWWN), "" when it has none.
	WWN string
	// Table is the partition table on the disk now (ReadTable), needed
	// only to restore a single partition without writing a table; nil
	// when the disk has none.
	Table *sfdisk.Dump
}

// ReadWWN reads a disk's WWN from sysfs under root ("/" on a machine):
// /sys/block/NAME/wwid or /sys/block/NAME/device/wwid ("naa.5000c500…",
// "eui.…", "t10.…"). "" when there is none.
func ReadWWN(root, name string) string {
	for _, p := range []string{"sys/block/" + name + "/wwid", "sys/block/" + name + "/device/wwid"} {
		if b, err := os.ReadFile(filepath.Join(root, p)); err == nil {
			if s := strings.TrimSpace(string(b)); s != "" {
				return s
			}
		}
	}
	return ""
}

// normalize is FOS's comparison form: trimmed, lower case.
func normalize(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// wwnForms are the ways one WWN is written: lsblk's "0x5000c500a1b2c3d4",
// sysfs's "naa.5000c500a1b2c3d4", or the bare hex digits.
func wwnForms(s string) []string {
	s = normalize(s)
	if s == "" {
		return nil
	}
	bare := s
	for _, p := range []string{"0x", "naa.", "eui.", "t10."} {
		bare = strings.TrimPrefix(bare, p)
	}
	return []string{s, bare}
}

// matches reports whether one fdrive spec names d, by path (after
// resolving symbolic links), size in bytes, serial or WWN — FOS's
// getHardDisk rules.
func matches(spec, resolved string, d Disk) bool {
	n := normalize(spec)
	switch {
	case resolved == d.Path || spec == d.Path:
		return true
	case n == strconv.FormatUint(d.SizeBytes, 10):
		return true
	case d.Serial != "" && n == normalize(d.Serial):
		return true
	}
	for _, w := range wwnForms(d.WWN) {
		for _, s := range wwnForms(spec) {
			if w == s {
				return true
			}
		}
	}
	return false
}

// Resolver resolves a path's symbolic links (filepath.EvalSymlinks on a
// machine; /dev/disk/by-id/… names become /dev/sdX).
type Resolver func(string) (string, error)

// chooseDisks orders the machine's disks the way FOS's getHardDisk does
// and returns them, the target first, with warnings:
//
//   - fdrive: each comma-separated spec takes the first disk it matches
//     (by path, size, serial or WWN), in spec order; the other usable
//     disks follow. A spec that matches nothing is a warning; none
//     matching at all is an error. A disk fdrive names is used even when
//     it is on USB or removable.
//   - mpa: usable disks in order, then each image disk dN placed on the
//     one disk whose size is exactly dN.size when there is exactly one;
//     otherwise (or without dN.size) enumeration order.
//   - otherwise: the first usable disk, or the largest with largesize.
//
// Usable disks are those imgcast would choose by itself: physical, with
// a medium, not removable, not on USB.
func chooseDisks(t Task, disks []Disk, images []*DiskMeta, resolve Resolver) ([]Disk, []string, error) {
	var usable []Disk
	for _, d := range disks {
		if d.Skip(0) == "" {
			usable = append(usable, d)
		}
	}
	var warnings []string
	if strings.TrimSpace(t.FDrive) != "" {
		var chosen []Disk
		used := map[string]bool{}
		for _, spec := range strings.Split(t.FDrive, ",") {
			if spec = strings.TrimSpace(spec); spec == "" {
				continue
			}
			resolved := spec
			if resolve != nil && strings.HasPrefix(spec, "/") {
				if r, err := resolve(spec); err == nil {
					resolved = r
				}
			}
			found := false
			for _, d := range disks {
				if !used[d.Path] && d.SizeBytes > 0 && matches(spec, resolved, d) {
					chosen = append(chosen, d)
					used[d.Path] = true
					found = true
					break
				}
			}
			if !found {
				warnings = append(warnings, fmt.Sprintf("fdrive: %q matches none of the disks (%s)", spec, describe(disks)))
			}
		}
		if len(chosen) == 0 {
			return nil, warnings, fmt.Errorf("%w: the host's Primary Disk %q matches none of this machine's disks (%s)", ErrTask, t.FDrive, describe(disks))
		}
		for _, d := range usable {
			if !used[d.Path] {
				chosen = append(chosen, d)
			}
		}
		return chosen, warnings, nil
	}
	if len(usable) == 0 {
		why := []string{}
		for _, d := range disks {
			why = append(why, d.Name+": "+d.Skip(0))
		}
		if len(why) == 0 {
			return nil, nil, fmt.Errorf("no disk found: no block devices at all (is the storage driver loaded?)")
		}
		return nil, nil, fmt.Errorf("no disk found to write (%s)", strings.Join(why, "; "))
	}
	if strings.ToLower(strings.TrimSpace(t.Type)) == MultiAll {
		return bySize(usable, images)
	}
	if t.LargeSize {
		best := usable[0]
		for _, d := range usable[1:] {
			if d.SizeBytes > best.SizeBytes {
				best = d
			}
		}
		return []Disk{best}, nil, nil
	}
	return usable[:1], nil, nil
}

// bySize maps image disks to machine disks by dN.size, FOS's way: each
// dN needs exactly one unused disk of exactly its size, else the
// enumeration order is kept for all of them.
func bySize(usable []Disk, images []*DiskMeta) ([]Disk, []string, error) {
	var mapped []Disk
	used := map[string]bool{}
	for _, im := range images {
		if im.Size == 0 {
			return usable, nil, nil
		}
		var match *Disk
		count := 0
		for i := range usable {
			if !used[usable[i].Path] && int64(usable[i].SizeBytes) == im.Size {
				match = &usable[i]
				count++
			}
		}
		if count != 1 {
			return usable, []string{fmt.Sprintf("d%d.size is %d bytes and %d disks have exactly that size: disks are taken in order (%s)",
				im.Number, im.Size, count, describe(usable))}, nil
		}
		mapped = append(mapped, *match)
		used[match.Path] = true
	}
	for _, d := range usable {
		if !used[d.Path] {
			mapped = append(mapped, d)
		}
	}
	return mapped, nil, nil
}

func describe(disks []Disk) string {
	var s []string
	for _, d := range disks {
		desc := fmt.Sprintf("%s %d bytes", d.Path, d.SizeBytes)
		if d.Serial != "" {
			desc += " serial " + d.Serial
		}
		if d.WWN != "" {
			desc += " wwn " + d.WWN
		}
		if why := d.Skip(0); why != "" {
			desc += " (" + why + ")"
		}
		s = append(s, desc)
	}
	if len(s) == 0 {
		return "no disks"
	}
	return strings.Join(s, ", ")
}
