package igmp

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// routerAlert is the IP Router Alert option (RFC 2113), which IGMPv2 and
// IGMPv3 messages must carry so that routers and switches look at them.
const routerAlert = "\x94\x04\x00\x00"

// tosInternetworkControl is IP precedence 6, which RFC 3376 asks for.
const tosInternetworkControl = 0xc0

// Conn is a raw IGMP socket on one interface.
type Conn struct {
	ifi *net.Interface
	src netip.Addr
	ipc *net.IPConn
	pc  *ipv4.PacketConn
	buf []byte
	// proc is /proc/net/igmp of the socket's network namespace, opened
	// with the socket, read again for every message sent.
	procMu sync.Mutex
	proc   *os.File
}

// Open opens a raw IGMP socket that sends out of ifi from src (the
// interface's address), with TTL 1, the Router Alert option and
// internetwork-control precedence, as the kernel sends its own reports,
// and that reads the IGMP messages arriving on ifi. It needs CAP_NET_RAW:
// without it the error matches os.ErrPermission.
func Open(ifi *net.Interface, src netip.Addr) (*Conn, error) {
	if ifi == nil || !src.Is4() {
		return nil, fmt.Errorf("igmp: open: need an interface and its IPv4 address")
	}
	lp, err := net.ListenPacket("ip4:2", "0.0.0.0")
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("igmp: raw socket: %w (sending and reading IGMP needs root)", err)
		}
		return nil, fmt.Errorf("igmp: raw socket: %w", err)
	}
	c := &Conn{ifi: ifi, src: src, ipc: lp.(*net.IPConn), buf: make([]byte, 1500)}
	c.pc = ipv4.NewPacketConn(c.ipc)
	fail := func(what string, err error) (*Conn, error) {
		c.ipc.Close()
		return nil, fmt.Errorf("igmp: %s on %s: %w", what, ifi.Name, err)
	}
	raw, err := c.ipc.SyscallConn()
	if err != nil {
		return fail("raw socket", err)
	}
	var optErr error
	if err := raw.Control(func(fd uintptr) {
		optErr = unix.SetsockoptString(int(fd), unix.IPPROTO_IP, unix.IP_OPTIONS, routerAlert)
	}); err != nil {
		return fail("IP_OPTIONS", err)
	}
	if optErr != nil {
		return fail("IP_OPTIONS", optErr)
	}
	if err := c.pc.SetMulticastInterface(ifi); err != nil {
		return fail("multicast interface", err)
	}
	if err := c.pc.SetMulticastTTL(1); err != nil {
		return fail("multicast TTL", err)
	}
	// Our own reports must not come back to this host's IGMP code, which
	// would take them for another member's and suppress its own.
	if err := c.pc.SetMulticastLoopback(false); err != nil {
		return fail("multicast loopback", err)
	}
	if err := c.pc.SetTOS(tosInternetworkControl); err != nil {
		return fail("TOS", err)
	}
	if err := c.pc.SetControlMessage(ipv4.FlagInterface, true); err != nil {
		return fail("IP_PKTINFO", err)
	}
	// The calling thread's view: the namespace the socket was made in.
	if f, err := os.Open("/proc/thread-self/net/igmp"); err == nil {
		c.proc = f
	}
	return c, nil
}

// Close closes the socket; a blocked ReadQuery returns.
func (c *Conn) Close() error {
	if c.proc != nil {
		c.proc.Close()
	}
	return c.ipc.Close()
}

// Version is the IGMP version the kernel speaks on the socket's
// interface now (see KernelVersion).
func (c *Conn) Version() Version {
	if c.proc == nil {
		return KernelVersion(c.ifi.Name)
	}
	c.procMu.Lock()
	defer c.procMu.Unlock()
	if _, err := c.proc.Seek(0, io.SeekStart); err != nil {
		return V3
	}
	b, err := io.ReadAll(io.LimitReader(c.proc, 1<<20))
	if err != nil {
		return V3
	}
	return versionIn(b, c.ifi.Name)
}

// Interface is the interface the socket sends on.
func (c *Conn) Interface() *net.Interface { return c.ifi }

// Send sends one IGMP message.
func (c *Conn) Send(p Packet) error {
	cm := &ipv4.ControlMessage{Src: c.src.AsSlice(), IfIndex: c.ifi.Index}
	if _, err := c.pc.WriteTo(p.Payload, cm, &net.IPAddr{IP: p.Dst.AsSlice()}); err != nil {
		return fmt.Errorf("igmp: send to %s on %s: %w", p.Dst, c.ifi.Name, err)
	}
	return nil
}

// Report sends membership reports for groups, in the IGMP version the
// kernel uses on the interface now.
func (c *Conn) Report(groups ...netip.Addr) error {
	return c.sendAll(Reports(c.Version(), groups))
}

// Leave announces that this host leaves groups, in the kernel's IGMP
// version (nothing for IGMPv1, which has no leave). A querier answers
// with a group-specific query at once: that is how Querier finds it in
// seconds rather than waiting for its next general query.
func (c *Conn) Leave(groups ...netip.Addr) error {
	return c.sendAll(Leaves(c.Version(), groups))
}

func (c *Conn) sendAll(ps []Packet) error {
	var errs []error
	for _, p := range ps {
		errs = append(errs, c.Send(p))
	}
	return errors.Join(errs...)
}

// ReadQuery waits until deadline (zero: no limit) for a membership query
// arriving on the interface and returns it with its sender's address.
// Other IGMP messages are skipped. On timeout the error matches
// os.ErrDeadlineExceeded.
func (c *Conn) ReadQuery(deadline time.Time) (Query, netip.Addr, error) {
	if err := c.pc.SetReadDeadline(deadline); err != nil {
		return Query{}, netip.Addr{}, err
	}
	for {
		n, cm, src, err := c.pc.ReadFrom(c.buf)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return Query{}, netip.Addr{}, err
		}
		if cm != nil && cm.IfIndex != 0 && cm.IfIndex != c.ifi.Index {
			continue
		}
		m, err := Parse(c.buf[:n])
		if err != nil || m.Type != TypeQuery {
			continue
		}
		var from netip.Addr
		if ip, ok := src.(*net.IPAddr); ok {
			from, _ = netip.AddrFromSlice(ip.IP)
			from = from.Unmap()
		}
		return m.Query, from, nil
	}
}
