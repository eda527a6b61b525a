package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/netup"
)

// bannerInfo is what the debug banner shows.
type bannerInfo struct {
	Settings   *Settings
	Ready      bool
	NIC        string
	Lease      string
	Took       time.Duration // init start to network ready
	Since      string        // what Took counts from
	Uptime     time.Duration
	Interfaces []netup.Interface
	Disks      []inventory.Disk
}

func (a *agent) printBanner() {
	disks, _ := inventory.ReadDisks(a.root)
	info := bannerInfo{Settings: a.settings, Uptime: a.uptime(), Disks: disks}
	if a.network != nil {
		info.Ready = true
		info.NIC = a.network.NIC.Name
		info.Lease = a.network.Lease().String()
		info.Took = a.netReady - a.initStart
		info.Since = a.startLabel
	}
	if ifs, err := netup.Interfaces(a.sysfs()); err == nil {
		info.Interfaces = ifs
	}
	writeBanner(a.stdout, info)
}

// writeBanner prints the debug banner: network, NICs, disks, server, and
// the commands to try.
func writeBanner(w io.Writer, in bannerInfo) {
	s := in.Settings
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s\n imgcast debug shell\n%s\n", rule, rule)
	if in.Ready {
		fmt.Fprintf(&b, " Network:  %s %s\n           ready %s after %s (uptime %s)\n", in.NIC, in.Lease, seconds(in.Took), in.Since, seconds(in.Uptime))
	} else {
		b.WriteString(" Network:  NOT UP (see the error above)\n")
	}
	b.WriteString(" NICs:\n")
	if len(in.Interfaces) == 0 {
		b.WriteString("   none (no driver for the NIC? try: pci -n; dmesg)\n")
	}
	for _, i := range in.Interfaces {
		fmt.Fprintf(&b, "   %s\n", i)
	}
	b.WriteString(" Disks:\n")
	if len(in.Disks) == 0 {
		b.WriteString("   none yet (SATA/USB disks can take seconds to appear: ls /sys/block)\n")
	}
	for _, d := range in.Disks {
		fmt.Fprintf(&b, "   %s\n", d)
	}
	server, pingTarget := "(imgcast.server not set)", "SERVER"
	if ip := s.serverAddr(); ip != nil {
		server, pingTarget = ip.String(), ip.String()
	}
	fmt.Fprintf(&b, " Server:   %s   port base %d\n", server, s.PortBase)
	if s.Image != "" {
		fmt.Fprintf(&b, " Image:    %s\n", s.Image)
	}
	target := "/dev/DISK"
	switch {
	case strings.HasPrefix(s.Disk, "/dev/"):
		target = s.Disk
	case s.Disk != "": // serial:…
		if d, ok, err := inventory.LookupDisk(in.Disks, s.Disk); err == nil && ok {
			target = d.Path
		}
	default:
		if d, err := inventory.ChooseDisk(in.Disks, 1); err == nil {
			target = d.Path
		}
	}
	b.WriteString(" Try:\n")
	fmt.Fprintf(&b, "   udp-receiver --nokbd --portbase %d --file %s   receive a udp-sender stream onto the disk\n", s.PortBase, target)
	fmt.Fprintf(&b, "   imgcast mcast-check recv -server %s   does multicast work here? (ends with a verdict)\n", pingTarget)
	b.WriteString("   ip addr; ip route; ping " + pingTarget + "\n")
	b.WriteString("   dmesg | tail; lsmod; pci -n; gpt " + target + "; cat /proc/cmdline\n")
	b.WriteString("   sync; poweroff | reboot   (both sync first)   exit: leave the shell, then " + powerWord(s.After) + "\n")
	b.WriteString(rule + "\n")
	io.WriteString(w, b.String())
}
