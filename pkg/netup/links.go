package netup

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NIC is a network interface as the operator needs to see it.
type NIC struct {
	Name  string
	Index int
	MAC   net.HardwareAddr
	// Driver is the kernel driver bound to the device ("" if none found).
	Driver string
	// Device is the device behind the interface: "pci 0000:00:03.0",
	// "usb 2-1:1.0", or "" for virtual interfaces.
	Device string
}

func (n NIC) String() string {
	s := fmt.Sprintf("%s (%s", n.Name, n.MAC)
	if n.Driver != "" {
		s += ", driver " + n.Driver
	}
	if n.Device != "" {
		s += ", " + n.Device
	}
	return s + ")"
}

// nicFromLink fills in a NIC from a link and sysfs.
func nicFromLink(sysfs string, l netlink.Link) NIC {
	a := l.Attrs()
	n := NIC{Name: a.Name, Index: a.Index, MAC: a.HardwareAddr}
	dev := filepath.Join(sysfs, "class", "net", a.Name, "device")
	if target, err := filepath.EvalSymlinks(dev); err == nil {
		n.Device = describeDevice(target)
	}
	if drv, err := os.Readlink(filepath.Join(dev, "driver")); err == nil {
		n.Driver = filepath.Base(drv)
	}
	return n
}

// describeDevice turns a sysfs device path into "bus address".
func describeDevice(path string) string {
	sub, err := os.Readlink(filepath.Join(path, "subsystem"))
	if err != nil {
		return filepath.Base(path)
	}
	bus := filepath.Base(sub)
	if bus == "virtio" {
		// virtioN sits below its PCI function; name that one.
		if parent := filepath.Dir(path); strings.Contains(filepath.Base(parent), ":") {
			return "virtio on pci " + filepath.Base(parent)
		}
	}
	return bus + " " + filepath.Base(path)
}

// IsPhysicalEthernet reports whether the named interface is a real
// Ethernet NIC: it has a device behind it in sysfs, is not wireless, and
// carries Ethernet frames. This is the default NIC filter of Up.
func IsPhysicalEthernet(sysfs, name string) bool {
	base := filepath.Join(sysfs, "class", "net", name)
	if _, err := os.Stat(filepath.Join(base, "device")); err != nil {
		return false
	}
	for _, w := range []string{"wireless", "phy80211"} {
		if _, err := os.Stat(filepath.Join(base, w)); err == nil {
			return false
		}
	}
	t, err := os.ReadFile(filepath.Join(base, "type"))
	return err == nil && strings.TrimSpace(string(t)) == "1" // ARPHRD_ETHER
}

// hasCarrier reports whether the link is up with carrier. It looks at
// IFF_LOWER_UP (the driver's carrier state) rather than IFF_RUNNING: the
// kernel sets RUNNING only when its link watcher gets round to the
// operstate, which it rate-limits to once a second. Frames flow as soon as
// the device is up with carrier.
func hasCarrier(l netlink.Link) bool {
	f := l.Attrs().RawFlags
	return f&unix.IFF_UP != 0 && f&unix.IFF_LOWER_UP != 0
}

// carrierWaiter is told (via kick) whenever the link changes, and re-reads
// the link to see whether carrier came.
type carrierWaiter struct {
	index int
	kick  chan struct{}
}

func newCarrierWaiter(index int) *carrierWaiter {
	return &carrierWaiter{index: index, kick: make(chan struct{}, 1)}
}

// notify wakes the waiter without ever blocking the dispatcher.
func (w *carrierWaiter) notify() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// ErrNoCarrier is returned when a link stays without carrier.
var ErrNoCarrier = errors.New("no carrier (cable unplugged, switch port down or disabled?)")

// bringUp sets the link up and waits for carrier until deadline. The
// caller must have subscribed to link updates before calling, and feeds
// them to w.
func (w *carrierWaiter) bringUp(ctx context.Context, deadline time.Time) (time.Duration, error) {
	start := time.Now()
	link, err := netlink.LinkByIndex(w.index)
	if err != nil {
		return 0, fmt.Errorf("link %d: %w", w.index, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return 0, fmt.Errorf("set %s up: %w", link.Attrs().Name, err)
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		link, err := netlink.LinkByIndex(w.index)
		if err != nil {
			return 0, fmt.Errorf("link %d: %w", w.index, err)
		}
		if hasCarrier(link) {
			return time.Since(start), nil
		}
		select {
		case <-w.kick:
		case <-timer.C:
			return time.Since(start), ErrNoCarrier
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		}
	}
}

// Interface is the state of a network interface, for banners and
// diagnostics.
type Interface struct {
	NIC
	Up, Carrier bool
	Addrs       []*net.IPNet
}

func (i Interface) String() string {
	state := "down"
	switch {
	case i.Carrier:
		state = "carrier"
	case i.Up:
		state = "up, no carrier"
	}
	s := fmt.Sprintf("%s %s", i.NIC, state)
	for _, a := range i.Addrs {
		s += " " + a.String()
	}
	return s
}

// Interfaces lists the interfaces other than loopback with their state.
func Interfaces(sysfs string) ([]Interface, error) {
	links, err := netlink.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []Interface
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 {
			continue
		}
		it := Interface{NIC: nicFromLink(sysfs, l), Up: a.Flags&net.FlagUp != 0, Carrier: hasCarrier(l)}
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		for _, ad := range addrs {
			it.Addrs = append(it.Addrs, ad.IPNet)
		}
		out = append(out, it)
	}
	return out, nil
}
