package receiver

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"unsafe"
)

// netIface is one IPv4 address of an interface, as udpcast sees
// interfaces (an alias label such as eth0:1 is its own entry).
type netIface struct {
	Name      string // label: eth0, eth0:1, lo
	Index     int
	IP        netip.Addr
	Broadcast netip.Addr // invalid if none
	Running   bool       // link up (carrier) or unknown
}

// chooseInterface picks the interface udpcast would pick: want may be a
// name, an IPv4 address or a name prefix; empty means automatic.
func chooseInterface(cands []netIface, want string) (netIface, error) {
	best, bestScore := -1, 0
	for i, c := range cands {
		score := interfaceScore(c, want)
		if score > bestScore {
			best, bestScore = i, score
		}
	}
	if best < 0 {
		var names []string
		for _, c := range cands {
			names = append(names, c.Name+"="+c.IP.String())
		}
		if want != "" {
			return netIface{}, errorf(ErrSetup, "no network interface matches %q (interfaces: %s)", want, strings.Join(names, ", "))
		}
		return netIface{}, errorf(ErrSetup, "no suitable network interface found (interfaces: %s)", strings.Join(names, ", "))
	}
	return cands[best], nil
}

// interfaceScore is udpcast's ranking; 0 means not eligible.
func interfaceScore(c netIface, want string) int {
	var s int
	if want != "" {
		switch {
		case c.Name == want:
			s = 12
		case c.IP.String() == want:
			s = 8
		case strings.HasPrefix(c.Name, want):
			s = 7
		default:
			return 0
		}
	} else {
		switch {
		case c.IP.IsUnspecified():
			s = 1
		case c.IP == netip.AddrFrom4([4]byte{127, 0, 0, 1}):
			s = 2
		case c.Name == "eth0" || c.Name == "en0":
			s = 6
		case strings.HasPrefix(c.Name, "eth0:"):
			s = 5
		case strings.HasPrefix(c.Name, "eth") || strings.HasPrefix(c.Name, "en"):
			s = 4
		default:
			s = 3
		}
	}
	if c.Running {
		s += 3
	}
	s *= 2
	if c.Broadcast.IsValid() && !c.Broadcast.IsUnspecified() {
		s++
	}
	return s
}

// listInterfaces returns every IPv4 address of every interface that is up,
// with its label and configured broadcast address (read over rtnetlink:
// net.Interface does not report either).
func listInterfaces() ([]netIface, error) {
	rib, err := syscall.NetlinkRIB(syscall.RTM_GETADDR, syscall.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(rib)
	if err != nil {
		return nil, fmt.Errorf("parse address list: %w", err)
	}
	var out []netIface
	for _, m := range msgs {
		if m.Header.Type != syscall.RTM_NEWADDR || len(m.Data) < syscall.SizeofIfAddrmsg {
			continue
		}
		am := (*syscall.IfAddrmsg)(unsafe.Pointer(&m.Data[0]))
		if am.Family != syscall.AF_INET {
			continue
		}
		attrs, err := syscall.ParseNetlinkRouteAttr(&m)
		if err != nil {
			continue
		}
		var local, addr, brd netip.Addr
		var label string
		for _, a := range attrs {
			switch a.Attr.Type {
			case syscall.IFA_LOCAL:
				local, _ = netip.AddrFromSlice(a.Value)
			case syscall.IFA_ADDRESS:
				addr, _ = netip.AddrFromSlice(a.Value)
			case syscall.IFA_BROADCAST:
				brd, _ = netip.AddrFromSlice(a.Value)
			case syscall.IFA_LABEL:
				label = strings.TrimRight(string(a.Value), "\x00")
			}
		}
		if local.IsValid() {
			addr = local
		}
		if !addr.Is4() {
			continue
		}
		ifi, err := net.InterfaceByIndex(int(am.Index))
		if err != nil || ifi.Flags&net.FlagUp == 0 {
			continue
		}
		if label == "" {
			label = ifi.Name
		}
		out = append(out, netIface{
			Name:      label,
			Index:     ifi.Index,
			IP:        addr.Unmap(),
			Broadcast: brd.Unmap(),
			Running:   ifi.Flags&net.FlagRunning != 0,
		})
	}
	return out, nil
}
