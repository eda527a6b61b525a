package inventory

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/imgcast/imgcast/internal/bytesize"
)

// DefaultSettle is how long the list of disks must stay the same before
// WaitDisk chooses one.
const DefaultSettle = time.Second

// DiskWait waits for the disk to write to appear, as storage drivers load
// and probe after boot. Its zero value (with Root set) looks once.
type DiskWait struct {
	// Root is the root of the tree sysfs is read from ("/" on a machine).
	Root string
	// Named is the disk the operator named (imgcast.disk=/dev/sda or
	// imgcast.disk=serial:SERIAL, see CheckDiskName); empty lets
	// ChooseDisk choose.
	Named string
	// Timeout bounds the whole wait (imgcast.disktimeout).
	Timeout time.Duration
	// Settle is how long the disks present must stay unchanged (no disk
	// appearing, none changing size) before a choice is made; 0 means
	// DefaultSettle. A named disk is taken as soon as it is there.
	Settle time.Duration
	// Changed returns a channel closed at the next device event
	// (kmod.Drivers.Changed); the wait looks again then instead of
	// polling. Nil: no events, the settle window and timeout still run.
	Changed func() <-chan struct{}
	// Loaded is closed once the modules for the devices present at boot
	// are loaded (kmod.Drivers.Settled); nil when nothing is loading.
	Loaded <-chan struct{}
	// LastChange, if set, says when the last device event came
	// (kmod.Drivers.LastChange), so a settle window that passed before
	// the wait began is not waited for again. Nil: the window starts with
	// the wait.
	LastChange func() time.Time
}

// WaitDisk returns the disk to write for an image of minSize bytes.
//
// A named disk is waited for until it exists, then its size is checked.
// Otherwise the choice is made only once the storage drivers are done:
// driver loading for the devices present has finished (Loaded), every
// NVMe controller is live with its namespaces listed, and the disks
// present have not changed for the settle window; then ChooseDisk's rule
// picks among them. Every wait ends at Timeout with a *DiskError listing
// the disks there are and why each was passed over; a disk that suits
// when the time is up is still taken.
func (w DiskWait) WaitDisk(ctx context.Context, minSize uint64) (Disk, error) {
	start := time.Now()
	settle := w.Settle
	if settle <= 0 {
		settle = DefaultSettle
	}
	deadline := time.NewTimer(w.Timeout)
	defer deadline.Stop()
	loaded := w.Loaded
	var last string // the disks as last seen
	looked := false
	lastChange := time.Now()
	if w.LastChange != nil {
		lastChange = w.LastChange()
	}
	settleTimer := time.NewTimer(settle - time.Since(lastChange))
	defer settleTimer.Stop()
	for {
		var wake <-chan struct{}
		if w.Changed != nil {
			wake = w.Changed() // before looking, so no event is missed
		}
		disks, _ := ReadDisks(w.Root)
		if w.Named != "" {
			d, ok, err := LookupDisk(disks, w.Named)
			if err != nil {
				return Disk{}, &DiskError{Named: w.Named, MinSize: minSize, Disks: disks, Err: err}
			}
			if ok {
				if d.SizeBytes < minSize {
					label := w.Named
					if label != d.Path {
						label += " (" + d.Path + ")"
					}
					return Disk{}, &DiskError{Named: w.Named, MinSize: minSize, Disks: disks,
						Err: fmt.Errorf("disk %s has %s, the image needs %s", label, bytesize.Format(d.SizeBytes), bytesize.Format(minSize))}
				}
				return d, nil
			}
		} else {
			if seen := disksKey(disks); !looked || seen != last {
				if looked {
					lastChange = time.Now()
					settleTimer.Reset(settle)
				}
				last, looked = seen, true
			}
			loadedDone := loaded == nil || isClosed(loaded)
			if loadedDone && loaded != nil {
				// The settle window runs from the end of loading: the
				// last driver may still be probing its disks.
				loaded, lastChange = nil, time.Now()
				settleTimer.Reset(settle)
			}
			if loadedDone && time.Since(lastChange) >= settle && nvmeSettled(w.Root) {
				if d, err := ChooseDisk(disks, minSize); err == nil {
					return d, nil
				}
			}
		}
		select {
		case <-wake:
		case <-loaded:
		case <-settleTimer.C:
		case <-deadline.C:
			disks, _ = ReadDisks(w.Root)
			if w.Named != "" {
				if d, ok, err := LookupDisk(disks, w.Named); err == nil && ok && d.SizeBytes >= minSize {
					return d, nil // appeared without an event
				}
			} else if d, err := ChooseDisk(disks, minSize); err == nil {
				return d, nil
			}
			return Disk{}, &DiskError{Named: w.Named, MinSize: minSize, Waited: time.Since(start), Disks: disks}
		case <-ctx.Done():
			return Disk{}, ctx.Err()
		}
	}
}

// SerialPrefix starts a disk name that gives the disk's serial number
// (imgcast.disk=serial:S4EVNX0N123456). Kernel names follow the order in
// which drivers probe, which can change between boots of a machine with
// several disks of one kind, and the initramfs has no udev to make
// /dev/disk/by-id links; the serial stays with the drive.
const SerialPrefix = "serial:"

// CheckDiskName checks a name DiskWait.Named takes: a /dev path or
// SerialPrefix and a serial number.
func CheckDiskName(name string) error {
	if serial, ok := strings.CutPrefix(name, SerialPrefix); ok {
		if strings.TrimSpace(serial) == "" {
			return fmt.Errorf("%q gives no serial number", name)
		}
		return nil
	}
	if !strings.HasPrefix(name, "/dev/") {
		return fmt.Errorf("%q is neither a /dev path nor serial:SERIAL", name)
	}
	return nil
}

// LookupDisk finds the disk name (a /dev path or serial:SERIAL) stands
// for among disks. A serial that more than one disk reports is an error:
// some USB bridges and cheap drives all report the same one.
func LookupDisk(disks []Disk, name string) (Disk, bool, error) {
	if serial, ok := strings.CutPrefix(name, SerialPrefix); ok {
		want := normalizeSerial(serial)
		var found []Disk
		for _, d := range disks {
			if d.Serial != "" && normalizeSerial(d.Serial) == want {
				found = append(found, d)
			}
		}
		switch len(found) {
		case 0:
			return Disk{}, false, nil
		case 1:
			return found[0], true, nil
		}
		paths := make([]string, len(found))
		for i, d := range found {
			paths[i] = d.Path
		}
		return Disk{}, false, fmt.Errorf("%d disks report serial %q (%s): name the disk by its /dev path instead",
			len(found), strings.TrimSpace(serial), strings.Join(paths, ", "))
	}
	path := name
	if resolved, err := filepath.EvalSymlinks(path); err == nil && strings.HasPrefix(resolved, "/dev/") {
		path = resolved // /dev/disk/by-id/… names
	}
	for _, d := range disks {
		if d.Path == path {
			return d, true, nil
		}
	}
	return Disk{}, false, nil
}

// normalizeSerial is the form serials are compared in: drives pad them
// with spaces, and operators type them in either case.
func normalizeSerial(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

func disksKey(disks []Disk) string {
	var b strings.Builder
	for _, d := range disks {
		fmt.Fprintf(&b, "%s:%d ", d.Name, d.SizeBytes)
	}
	return b.String()
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// nvmeSettled reports whether every NVMe controller has finished probing:
// its state is "live" and its namespaces are listed (an NVMe driver loads
// at once, then resets and identifies the controller in the background,
// so its disks appear a while after the module loaded). A controller that
// has failed ("dead", "deleting") is not waited for.
func nvmeSettled(root string) bool {
	ctrls, _ := filepath.Glob(filepath.Join(root, "sys/class/nvme/nvme*"))
	for _, c := range ctrls {
		state := readString(c, "state")
		switch state {
		case "live":
			if ns, _ := filepath.Glob(filepath.Join(c, filepath.Base(c)+"n*")); len(ns) == 0 {
				if ns, _ := filepath.Glob(filepath.Join(c, "nvme*c*n*")); len(ns) == 0 {
					return false // live, namespaces not scanned yet
				}
			}
		case "dead", "deleting", "deleting (no IO)":
		default: // new, resetting, connecting
			return false
		}
	}
	return true
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
		fmt.Fprintf(&b, "no disk of at least %s found after %s", bytesize.Format(e.MinSize), e.Waited.Round(time.Millisecond))
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

// Unwrap returns the cause, if any.
func (e *DiskError) Unwrap() error { return e.Err }

// Hint says what to check.
func (e *DiskError) Hint() string {
	return "is the disk controller's driver in the image (dmesg, lsmod, pci -n)? name the disk with imgcast.disk=/dev/... or imgcast.disk=serial:SERIAL, or wait longer with imgcast.disktimeout"
}
