package netup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgcast/imgcast/pkg/kmod"
)

// Diagnosis explains why no NIC came up: every NIC with its driver and
// carrier state and what happened to it, the network devices that have no
// driver, the drivers that failed to load, and what was tried. It is the
// error Up returns when it fails.
type Diagnosis struct {
	// Cause is the kind of failure, for callers that branch on it.
	Cause Cause
	// Reason is the one-line summary.
	Reason string
	// Attempts are the NICs that were tried.
	Attempts []*Attempt
	// Ignored are NICs present but not tried (another MAC was asked for).
	Ignored []NIC
	// NoDriver lists network devices without a bound driver.
	NoDriver []NetDevice
	// FailedModules lists driver modules that did not load.
	FailedModules []kmod.Result
	// Firmware lists firmware that drivers asked for and did not get, as
	// the kernel logged it.
	Firmware []FirmwareFailure
	// Tried lists what Up did, in words.
	Tried []string
}

// Cause is why Up failed, from the first stage that nothing passed.
type Cause int

// The causes.
const (
	CauseOther       Cause = iota
	CauseNoNIC             // no NIC appeared (no driver, or no hardware)
	CauseNoMAC             // NICs appeared, none with the requested MAC
	CauseNoCarrier         // no NIC got carrier
	CauseNoLease           // carrier, but no DHCP lease
	CauseUnreachable       // a lease, but the server did not answer
	CauseInterrupted       // the context ended
)

// NetDevice is a network device (a PCI function of class 0x02, or a
// virtio network device) as sysfs shows it.
type NetDevice struct {
	Bus      string // "pci" or "virtio"
	Addr     string // 0000:00:03.0, virtio0
	ID       string // vendor:device, e.g. 10ec:8029
	Modalias string
	// Modules are the modules in the image whose aliases match.
	Modules []string
}

func (d *Diagnosis) Error() string {
	var b strings.Builder
	b.WriteString(d.Reason)
	b.WriteString("\n")
	if len(d.Attempts) > 0 {
		b.WriteString("NICs tried:\n")
		for _, a := range d.Attempts {
			carrier := "no carrier"
			if a.Carrier {
				carrier = fmt.Sprintf("carrier after %s", a.CarrierAfter.Round(time.Millisecond))
			}
			fmt.Fprintf(&b, "  %s: %s", a.NIC, carrier)
			if a.Lease != nil {
				fmt.Fprintf(&b, ", lease %s", a.Lease)
			}
			if a.Err != nil {
				fmt.Fprintf(&b, "\n    -> %v", a.Err)
			}
			b.WriteString("\n")
		}
	}
	if len(d.Ignored) > 0 {
		b.WriteString("NICs present but not tried:\n")
		for _, n := range d.Ignored {
			fmt.Fprintf(&b, "  %s\n", n)
		}
	}
	if len(d.NoDriver) > 0 {
		b.WriteString("Network devices without a driver:\n")
		for _, p := range d.NoDriver {
			fmt.Fprintf(&b, "  %s %s [%s]: ", p.Bus, p.Addr, p.ID)
			if len(p.Modules) == 0 {
				fmt.Fprintf(&b, "no driver for it in this image (no modules.alias entry matches %s)\n", p.Modalias)
			} else {
				fmt.Fprintf(&b, "module %s matches but did not bind (see the load errors)\n", strings.Join(p.Modules, ", "))
			}
		}
	}
	if len(d.FailedModules) > 0 {
		b.WriteString("Driver modules that failed to load:\n")
		for _, m := range d.FailedModules {
			fmt.Fprintf(&b, "  %v\n", m.Err)
		}
	}
	if len(d.Firmware) > 0 {
		b.WriteString("Firmware that failed to load:\n")
		for _, f := range d.Firmware {
			fmt.Fprintf(&b, "  %s\n", f)
		}
	}
	if len(d.Tried) > 0 {
		b.WriteString("What was tried:\n")
		for _, t := range d.Tried {
			fmt.Fprintf(&b, "  %s\n", t)
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

// diagnose builds the Diagnosis after a failed Up.
func (u *upRun) diagnose(ctx context.Context, attempts []*Attempt) *Diagnosis {
	cfg := u.cfg
	d := &Diagnosis{Attempts: attempts}
	tried := map[int]bool{}
	for _, a := range attempts {
		tried[a.NIC.Index] = true
	}
	u.mu.Lock()
	for _, n := range u.nics {
		if !tried[n.Index] {
			d.Ignored = append(d.Ignored, n)
		}
	}
	u.mu.Unlock()

	var matches func(string) []string
	if cfg.Drivers != nil {
		matches = cfg.Drivers.Loader.Index.Match
		for _, m := range cfg.Drivers.Loader.Results() {
			if m.Err != nil {
				d.FailedModules = append(d.FailedModules, m)
			}
		}
	}
	d.NoDriver = networkDevicesWithoutDriver(cfg.Sysfs, matches)
	if msgs, err := readKernelLog(); err == nil {
		d.Firmware = firmwareFailures(msgs)
	}

	withCarrier, withLease, unreachable := 0, 0, 0
	for _, a := range attempts {
		if a.Carrier {
			withCarrier++
		}
		if a.Lease != nil {
			withLease++
		}
		var ue *UnreachableError
		if errors.As(a.Err, &ue) {
			unreachable++
		}
	}
	switch {
	case ctx.Err() != nil:
		d.Cause, d.Reason = CauseInterrupted, "network bring-up was interrupted: "+ctx.Err().Error()
	case len(attempts) == 0 && cfg.MAC != nil && len(d.Ignored) > 0:
		d.Cause, d.Reason = CauseNoMAC, fmt.Sprintf("no NIC has the MAC address %s that the command line asks for", cfg.MAC)
	case len(attempts) == 0:
		d.Cause, d.Reason = CauseNoNIC, "no network interface found: no driver for the NIC, or no NIC"
	case withCarrier == 0:
		d.Cause, d.Reason = CauseNoCarrier, "no NIC got carrier: check the cable and the switch port"
	case withLease == 0:
		d.Cause, d.Reason = CauseNoLease, "no DHCP lease on any NIC with carrier: is a DHCP server (or relay) serving this network?"
	case unreachable > 0:
		d.Cause, d.Reason = CauseUnreachable, fmt.Sprintf("got an address, but the server %s is not reachable through any NIC", cfg.Server)
	default:
		d.Cause, d.Reason = CauseOther, "no NIC could be configured"
	}

	elapsed := time.Since(u.start).Round(time.Millisecond)
	d.Tried = append(d.Tried, fmt.Sprintf("watched for NICs and carrier for %s (link timeout %s), in parallel on all NICs", elapsed, cfg.LinkTimeout))
	if cfg.MAC != nil {
		d.Tried = append(d.Tried, fmt.Sprintf("only the NIC with MAC %s", cfg.MAC))
	}
	if withCarrier > 0 {
		d.Tried = append(d.Tried, fmt.Sprintf("DHCP for up to %s on each NIC with carrier (vendor class %q)", cfg.DHCPTimeout, cfg.VendorClass))
	}
	if cfg.Server != nil {
		d.Tried = append(d.Tried, fmt.Sprintf("a TCP connection to %s port %d through each NIC with a lease", cfg.Server, cfg.ServerPort))
	}
	if cfg.Drivers != nil {
		select {
		case <-cfg.Drivers.Settled():
			d.Tried = append(d.Tried, fmt.Sprintf("loaded drivers for the devices found (%d modules tried, coldplug %s)",
				len(cfg.Drivers.Loader.Results()), cfg.Drivers.ColdplugTime().Round(time.Millisecond)))
		default:
			d.Tried = append(d.Tried, "driver loading had not finished yet")
		}
	}
	return d
}

// networkDevicesWithoutDriver lists PCI functions of class "network
// controller" (0x02) and virtio network devices (virtio_pci bound the PCI
// function, but nothing drives the network device) that no driver has
// bound. matches, if set, finds the image's modules for a modalias.
func networkDevicesWithoutDriver(sysfs string, matches func(string) []string) []NetDevice {
	read := func(dir, name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return strings.TrimPrefix(strings.TrimSpace(string(b)), "0x")
	}
	var out []NetDevice
	for _, bus := range []string{"pci", "virtio"} {
		dirs, _ := filepath.Glob(filepath.Join(sysfs, "bus", bus, "devices", "*"))
		sort.Strings(dirs)
		for _, dir := range dirs {
			isNet := false
			switch bus {
			case "pci":
				isNet = strings.HasPrefix(read(dir, "class"), "02")
			case "virtio":
				isNet = read(dir, "device") == "0001" // VIRTIO_ID_NET
			}
			if !isNet {
				continue
			}
			if _, err := os.Lstat(filepath.Join(dir, "driver")); err == nil {
				continue
			}
			dev := NetDevice{
				Bus:      bus,
				Addr:     filepath.Base(dir),
				ID:       read(dir, "vendor") + ":" + read(dir, "device"),
				Modalias: read(dir, "modalias"),
			}
			if matches != nil {
				dev.Modules = matches(dev.Modalias)
			}
			out = append(out, dev)
		}
	}
	return out
}

// FirmwareFailure is a firmware file a driver asked for and did not get.
type FirmwareFailure struct {
	Driver string // r8169
	Device string // 0000:02:00.0
	File   string // rtl_nic/rtl8168h-2.fw
	Errno  int    // the kernel's error, e.g. -2 (ENOENT: no such file)
}

func (f FirmwareFailure) String() string {
	why := fmt.Sprintf("error %d", f.Errno)
	if f.Errno == -int(unix.ENOENT) {
		why = "not in this image"
	}
	return fmt.Sprintf("driver %s (%s): %s, %s; Debian package %s (component non-free-firmware) has it: install it where the image is built and rebuild the initramfs",
		f.Driver, f.Device, f.File, why, FirmwarePackage(f.File))
}

// firmwarePackages maps firmware directories to the Debian package
// (non-free-firmware component) that ships them, for the NIC drivers the
// image carries.
var firmwarePackages = []struct{ prefix, pkg string }{
	{"rtl_nic/", "firmware-realtek"},
	{"bnx2/", "firmware-bnx2"},
	{"bnx2x/", "firmware-bnx2x"},
	{"tigon/", "firmware-misc-nonfree"},
	{"intel/ice/", "firmware-misc-nonfree"}, // firmware-intel-misc from Debian 13 on
	{"qed/", "firmware-qlogic"},
	{"cxgb4/", "firmware-misc-nonfree"},
}

// FirmwarePackage names the Debian package that holds a firmware file
// (a path under /lib/firmware).
func FirmwarePackage(file string) string {
	for _, p := range firmwarePackages {
		if strings.HasPrefix(file, p.prefix) {
			return p.pkg
		}
	}
	return "firmware-misc-nonfree (or another firmware-* package)"
}

// firmwareFailures finds the firmware loads that failed in kernel log
// messages. The kernel's firmware loader logs, through the device,
// "DRIVER DEVICE: Direct firmware load for FILE failed with error N".
func firmwareFailures(msgs []string) []FirmwareFailure {
	const marker = ": Direct firmware load for "
	var out []FirmwareFailure
	seen := map[FirmwareFailure]bool{}
	for _, m := range msgs {
		dev, rest, ok := strings.Cut(m, marker)
		if !ok {
			continue
		}
		file, errno, ok := strings.Cut(rest, " failed with error ")
		if !ok || file == "" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(errno))
		if err != nil {
			continue
		}
		driver, device, _ := strings.Cut(dev, " ")
		f := FirmwareFailure{Driver: driver, Device: device, File: file, Errno: n}
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}

// readKernelLog returns the messages in the kernel's log buffer
// (/dev/kmsg), without waiting for new ones. Tests replace it.
var readKernelLog = func() ([]string, error) {
	// Raw file descriptor calls: an *os.File would wait in Go's poller
	// for the next message instead of returning EAGAIN at the end.
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("/dev/kmsg: %w", err)
	}
	defer unix.Close(fd)
	return kmsgMessages(fdReader(fd)), nil
}

// fdReader reads a file descriptor with read(2), errors as they are.
type fdReader int

func (fd fdReader) Read(p []byte) (int, error) {
	n, err := unix.Read(int(fd), p)
	if n < 0 {
		n = 0
	}
	return n, err
}

// kmsgMessages reads /dev/kmsg records ("PRI,SEQ,TIME,FLAGS;MESSAGE\n",
// then " KEY=VALUE" lines) until there are no more, and returns the
// messages. A record that was overwritten before it was read (EPIPE) is
// skipped.
func kmsgMessages(r io.Reader) []string {
	var out []string
	buf := make([]byte, 8192) // one record per read; records are at most ~1 KiB
	for i := 0; i < 1<<16; i++ {
		n, err := r.Read(buf)
		if errors.Is(err, unix.EPIPE) {
			continue
		}
		if err != nil || n == 0 {
			break
		}
		rec, _, _ := strings.Cut(string(buf[:n]), "\n")
		if _, msg, ok := strings.Cut(rec, ";"); ok {
			out = append(out, msg)
		}
	}
	return out
}
