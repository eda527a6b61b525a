package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Disk is a whole-disk block device.
type Disk struct {
	Name      string // vda, sda, nvme0n1
	Size      int64  // bytes
	Removable bool
	USB       bool   // attached over USB
	Model     string // as the device reports it, may be empty
}

// Path is the device node.
func (d Disk) Path() string { return "/dev/" + d.Name }

func (d Disk) String() string {
	s := fmt.Sprintf("%s %s", d.Path(), humanBytes(d.Size))
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

// notDisks are block devices that are never imaging targets.
var notDisks = []string{"loop", "ram", "zram", "sr", "fd", "dm-", "md", "nbd"}

// listDisks reads the whole-disk block devices from sysfs, sorted by name.
func listDisks(sysfs string) []Disk {
	entries, _ := os.ReadDir(filepath.Join(sysfs, "block"))
	var out []Disk
	for _, e := range entries {
		name := e.Name()
		skip := false
		for _, p := range notDisks {
			if strings.HasPrefix(name, p) {
				skip = true
			}
		}
		if skip {
			continue
		}
		dir := filepath.Join(sysfs, "block", name)
		read := func(f string) string {
			b, _ := os.ReadFile(filepath.Join(dir, f))
			return strings.TrimSpace(string(b))
		}
		sectors, _ := strconv.ParseInt(read("size"), 10, 64) // always 512-byte units
		d := Disk{Name: name, Size: sectors * 512, Removable: read("removable") == "1", Model: read("device/model")}
		if target, err := filepath.EvalSymlinks(dir); err == nil {
			d.USB = strings.Contains(target, "/usb")
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// chooseDisk picks the disk to write: the named one (it must exist and be
// large enough), or else the first non-removable, non-USB disk of at least
// minSize bytes. ok is false when there is none (yet).
func chooseDisk(disks []Disk, named string, minSize int64) (d Disk, ok bool, err error) {
	for _, d := range disks {
		if named != "" && d.Path() == named {
			if d.Size < minSize {
				return d, false, fmt.Errorf("disk %s has %s, the image needs %s", named, humanBytes(d.Size), humanBytes(minSize))
			}
			return d, true, nil
		}
	}
	if named != "" {
		return Disk{}, false, nil
	}
	for _, d := range disks {
		if !d.Removable && !d.USB && d.Size > 0 && d.Size >= minSize {
			return d, true, nil
		}
	}
	return Disk{}, false, nil
}

// DiskError says no disk fits, listing the disks there are.
type DiskError struct {
	Named   string
	MinSize int64
	Waited  time.Duration
	Disks   []Disk
	Err     error
}

func (e *DiskError) Error() string {
	var b strings.Builder
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else if e.Named != "" {
		fmt.Fprintf(&b, "disk %s not found after %s", e.Named, e.Waited.Round(time.Millisecond))
	} else {
		fmt.Fprintf(&b, "no non-removable, non-USB disk of at least %s found after %s", humanBytes(e.MinSize), e.Waited.Round(time.Millisecond))
	}
	b.WriteString("\ndisks present:")
	if len(e.Disks) == 0 {
		b.WriteString(" none")
	}
	for _, d := range e.Disks {
		b.WriteString("\n  " + d.String())
	}
	return b.String()
}

// Hint says what to check.
func (e *DiskError) Hint() string {
	return "is the disk controller's driver in the image (dmesg, lsmod, pci -n)? name the disk with imgcast.disk=/dev/..., or wait longer with imgcast.disktimeout"
}

// waitForDisk waits until chooseDisk finds a disk, up to timeout, looking
// again whenever a device event arrives (changed) rather than polling.
func waitForDisk(ctx context.Context, sysfs, named string, minSize int64, timeout time.Duration, changed func() <-chan struct{}) (Disk, error) {
	start := time.Now()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		var wake <-chan struct{}
		if changed != nil {
			wake = changed() // before looking, so no event is missed
		}
		disks := listDisks(sysfs)
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
			return Disk{}, &DiskError{Named: named, MinSize: minSize, Waited: time.Since(start), Disks: listDisks(sysfs)}
		case <-ctx.Done():
			return Disk{}, ctx.Err()
		}
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
