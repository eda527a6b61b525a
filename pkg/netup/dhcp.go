package netup

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// Lease is a DHCPv4 lease for one interface, decoded into what the
// machine needs.
type Lease struct {
	Interface string
	Index     int
	Address   *net.IPNet
	Broadcast net.IP
	Routers   []net.IP
	// Routes are classless static routes (option 121); when present they
	// replace Routers (RFC 3442).
	Routes []*dhcpv4.Route
	DNS    []net.IP
	Domain string
	MTU    int
	// Server is the DHCP server that granted the lease.
	Server net.IP
	// Duration is the lease time; zero means infinite.
	Duration time.Duration
	// T1 and T2 are the renewal and rebinding times, from Obtained.
	T1, T2   time.Duration
	Obtained time.Time

	raw    *nclient4.Lease
	metric int // route metric apply used
}

const infiniteLease = time.Duration(0xffffffff) * time.Second

// leaseFromACK decodes an nclient4 lease.
func leaseFromACK(iface string, index int, raw *nclient4.Lease) (*Lease, error) {
	ack := raw.ACK
	ip := ack.YourIPAddr.To4()
	if ip == nil || ip.IsUnspecified() {
		return nil, errors.New("DHCP ACK without an address")
	}
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ip.DefaultMask()
	}
	l := &Lease{
		Interface: iface,
		Index:     index,
		Address:   &net.IPNet{IP: ip, Mask: mask},
		Broadcast: ack.BroadcastAddress(),
		Routers:   ack.Router(),
		Routes:    ack.ClasslessStaticRoute(),
		DNS:       ack.DNS(),
		Domain:    ack.DomainName(),
		Server:    ack.ServerIdentifier(),
		Obtained:  raw.CreationTime,
		raw:       raw,
	}
	if l.Server == nil {
		l.Server = raw.Offer.ServerIdentifier()
	}
	if mtu, err := dhcpv4.GetUint16(dhcpv4.OptionInterfaceMTU, ack.Options); err == nil && mtu >= 576 {
		l.MTU = int(mtu)
	}
	if l.Broadcast == nil || l.Broadcast.To4() == nil {
		l.Broadcast = broadcastOf(l.Address)
	}
	l.Duration = ack.IPAddressLeaseTime(0)
	if l.Duration >= infiniteLease {
		l.Duration = 0
	}
	if l.Duration > 0 {
		l.T1 = ack.IPAddressRenewalTime(l.Duration / 2)
		l.T2 = ack.IPAddressRebindingTime(l.Duration * 7 / 8)
		if l.T1 <= 0 || l.T1 > l.Duration {
			l.T1 = l.Duration / 2
		}
		if l.T2 < l.T1 || l.T2 > l.Duration {
			l.T2 = l.Duration * 7 / 8
		}
	}
	return l, nil
}

func broadcastOf(n *net.IPNet) net.IP {
	ip := n.IP.To4()
	b := make(net.IP, 4)
	for i := range b {
		b[i] = ip[i] | ^n.Mask[i]
	}
	return b
}

func (l *Lease) String() string {
	var b strings.Builder
	ones, _ := l.Address.Mask.Size()
	fmt.Fprintf(&b, "%s/%d", l.Address.IP, ones)
	if len(l.Routers) > 0 {
		fmt.Fprintf(&b, " gw %s", l.Routers[0])
	}
	fmt.Fprintf(&b, " from DHCP server %s", l.Server)
	if l.Duration > 0 {
		fmt.Fprintf(&b, ", lease %s", l.Duration)
	} else {
		b.WriteString(", infinite lease")
	}
	return b.String()
}

// dhcpOptions are the DHCP options we ask for and send.
func dhcpModifiers(vendorClass string) []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(vendorClass)),
		dhcpv4.WithRequestedOptions(
			dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
			dhcpv4.OptionDomainName, dhcpv4.OptionBroadcastAddress, dhcpv4.OptionInterfaceMTU,
			dhcpv4.OptionClasslessStaticRoute, dhcpv4.OptionIPAddressLeaseTime,
			dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue,
		),
	}
}

// DHCPError says DHCP failed on an interface, with how often it tried.
type DHCPError struct {
	Interface string
	Attempts  int
	Waited    time.Duration
	Err       error
}

func (e *DHCPError) Error() string {
	return fmt.Sprintf("DHCP on %s: no lease after %d attempts in %s: %v", e.Interface, e.Attempts, e.Waited.Round(time.Millisecond), e.Err)
}

func (e *DHCPError) Unwrap() error { return e.Err }

// requestLease runs DISCOVER/OFFER/REQUEST/ACK on the interface until it
// gets a lease or ctx ends. Each attempt retransmits after 1 s and 2 s (the
// library doubles), so a lost packet costs a second, not a timeout.
func requestLease(ctx context.Context, iface string, index int, vendorClass string, entropyWait time.Duration, logf, debugf func(string, ...any)) (*Lease, error) {
	start := time.Now()
	if !waitEntropy(ctx, entropyWait) && ctx.Err() == nil {
		logf("entropy: kernel RNG still not seeded after %s; DHCP transaction IDs come from the unseeded pool", entropyWait)
	}
	if debugf != nil {
		debugf("%s: DHCP starts after %s of entropy wait", iface, time.Since(start).Round(time.Millisecond))
	}
	opts := []nclient4.ClientOpt{nclient4.WithTimeout(time.Second), nclient4.WithRetry(2)}
	if debugf != nil {
		opts = append(opts, nclient4.WithLogger(dhcpLogger{iface, debugf}))
	}
	c, err := nclient4.New(iface, opts...)
	if err != nil {
		return nil, fmt.Errorf("DHCP on %s: %w", iface, err)
	}
	defer c.Close()
	mods := dhcpModifiers(vendorClass)
	attempts := 0
	var lastErr error
	for ctx.Err() == nil {
		attempts++
		raw, err := c.Request(ctx, mods...)
		if err == nil {
			return leaseFromACK(iface, index, raw)
		}
		lastErr = err
		var nak *nclient4.ErrNak
		if errors.As(err, &nak) {
			logf("DHCP on %s: %v", iface, err)
		}
	}
	if lastErr == nil || errors.Is(lastErr, context.DeadlineExceeded) || errors.Is(lastErr, context.Canceled) {
		lastErr = errors.New("no answer from any DHCP server")
	}
	return nil, &DHCPError{Interface: iface, Attempts: attempts, Waited: time.Since(start), Err: lastErr}
}

// Renew asks for the lease again (a DHCPREQUEST carrying our address,
// broadcast, so any server may answer once the original one is gone, as in
// rebinding) and returns the renewed lease. The receiver is not changed.
func (l *Lease) Renew(ctx context.Context) (*Lease, error) {
	c, err := nclient4.New(l.Interface, nclient4.WithTimeout(time.Second), nclient4.WithRetry(3))
	if err != nil {
		return nil, fmt.Errorf("renew on %s: %w", l.Interface, err)
	}
	defer c.Close()
	raw, err := c.Renew(ctx, l.raw)
	if err != nil {
		return nil, fmt.Errorf("renew on %s: %w", l.Interface, err)
	}
	fresh, err := leaseFromACK(l.Interface, l.Index, raw)
	if err != nil {
		return nil, fmt.Errorf("renew on %s: %w", l.Interface, err)
	}
	if !fresh.Address.IP.Equal(l.Address.IP) {
		return nil, fmt.Errorf("renew on %s: server moved us from %s to %s; keeping the old address", l.Interface, l.Address.IP, fresh.Address.IP)
	}
	return fresh, nil
}

// dhcpLogger prints a one-line summary of every DHCP message.
type dhcpLogger struct {
	iface string
	logf  func(string, ...any)
}

func (l dhcpLogger) Printf(format string, args ...any) {
	l.logf("%s: DHCP: %s", l.iface, fmt.Sprintf(format, args...))
}

func (l dhcpLogger) PrintMessage(prefix string, m *dhcpv4.DHCPv4) {
	l.logf("%s: DHCP %s: %s xid %s yiaddr %s server %s", l.iface, prefix, m.MessageType(), m.TransactionID, m.YourIPAddr, m.ServerIdentifier())
}
