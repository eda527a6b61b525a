package netup

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// apply puts the lease's address on the interface and installs its routes
// with the given metric (distinct per NIC while several are configured, so
// their default routes can coexist).
func (l *Lease) apply(metric int) error {
	link, err := netlink.LinkByIndex(l.Index)
	if err != nil {
		return fmt.Errorf("configure %s: %w", l.Interface, err)
	}
	if l.MTU > 0 && l.MTU != link.Attrs().MTU {
		if err := netlink.LinkSetMTU(link, l.MTU); err != nil {
			return fmt.Errorf("configure %s: MTU %d: %w", l.Interface, l.MTU, err)
		}
	}
	addr := &netlink.Addr{IPNet: l.Address, Broadcast: l.Broadcast}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("configure %s: address %s: %w", l.Interface, l.Address, err)
	}
	l.metric = metric
	for _, r := range l.routes(metric) {
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("configure %s: route %s via %s: %w", l.Interface, r.Dst, r.Gw, err)
		}
	}
	return nil
}

// routes are the routes the lease asks for: classless static routes if
// given, else a default route through the first router.
func (l *Lease) routes(metric int) []*netlink.Route {
	var out []*netlink.Route
	add := func(dst *net.IPNet, gw net.IP) {
		r := &netlink.Route{LinkIndex: l.Index, Dst: dst, Priority: metric}
		if gw != nil && !gw.IsUnspecified() {
			r.Gw = gw
			if !l.Address.Contains(gw) {
				r.Flags = int(netlink.FLAG_ONLINK)
			}
		} else {
			r.Scope = netlink.SCOPE_LINK
		}
		out = append(out, r)
	}
	if len(l.Routes) > 0 {
		for _, r := range l.Routes {
			add(r.Dest, r.Router)
		}
		return out
	}
	if len(l.Routers) > 0 {
		add(&net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, l.Routers[0])
	}
	return out
}

// unapply removes what apply added.
func (l *Lease) unapply() error {
	link, err := netlink.LinkByIndex(l.Index)
	if err != nil {
		return err
	}
	// Removing the address removes the routes through it too.
	err = netlink.AddrDel(link, &netlink.Addr{IPNet: l.Address})
	if errors.Is(err, unix.EADDRNOTAVAIL) {
		err = nil
	}
	return err
}

// multicastRoute sends multicast out of this interface: the receiver's
// group joins and the udpcast control traffic must leave through the NIC
// that reaches the server, also when there is no default route.
func multicastRoute(index int) error {
	_, group, _ := net.ParseCIDR("224.0.0.0/4")
	return netlink.RouteReplace(&netlink.Route{LinkIndex: index, Dst: group, Scope: netlink.SCOPE_LINK})
}

// writeResolvConf writes the lease's name servers to path (usually
// /etc/resolv.conf). Nothing is written when the lease has none.
func (l *Lease) writeResolvConf(path string) error {
	if len(l.DNS) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("# written by imgcast from the DHCP lease on " + l.Interface + "\n")
	if l.Domain != "" {
		b.WriteString("search " + l.Domain + "\n")
	}
	for _, s := range l.DNS {
		b.WriteString("nameserver " + s.String() + "\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
