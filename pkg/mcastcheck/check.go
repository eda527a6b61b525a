// Package mcastcheck finds out whether multicast works between an imaging
// server and a client, and if not, why, in plain words.
//
// A test stream — numbered, timestamped packets at a steady rate — goes
// to a multicast group and, for comparison, by unicast to the client.
// imgcast-server offers it on request (Offerer, POST /api/mcast-check);
// `imgcast mcast-check send` sends it by hand. Run joins the group, asks
// the server for the stream, counts what arrives on each path (loss,
// duplicates, reordering, rate, time to the first packet), watches for an
// IGMP querier, and ends with a verdict: "ok", or "PROBLEM — " and what
// is wrong and what to change.
package mcastcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Defaults of a check.
const (
	// DefaultMaxLoss is the loss, in percent, above which a check
	// reports a problem: udpcast resends lost packets, but at more than
	// about 1 % the whole session slows down for everyone.
	DefaultMaxLoss = 1.0
	// DefaultHTTPPort is imgcast-server's port.
	DefaultHTTPPort = 8080
	// listenGrace is how long a check listens after the last packet was
	// due, for stragglers.
	listenGrace = 500 * time.Millisecond
)

// Options describe a check. The zero value of each field is its default.
type Options struct {
	// Server is imgcast-server's address, IP or IP:PORT (port 8080), or
	// the address of a machine running `imgcast mcast-check send`.
	// Empty: listen for a stream sent by hand to Group.
	Server string
	// Group is the multicast group; default: the one udp-sender uses
	// from Server's address.
	Group netip.Addr
	Port  int // default DefaultPort
	// Interface is the interface to receive on (a name); default: the
	// one that reaches Server.
	Interface string
	// Duration of the stream asked for (and how long to listen for one
	// sent by hand); default DefaultDuration.
	Duration time.Duration
	// Rate asked for, in packets per second; default DefaultRate.
	Rate int
	// MaxLoss is the loss in percent above which the verdict is a
	// problem; default DefaultMaxLoss.
	MaxLoss float64
	// Progress, if set, gets a row for every second of the check.
	Progress func(Second)
	// Logf, if set, hears what the check does.
	Logf func(format string, args ...any)
	// HTTPClient asks the server (default: 10 s timeout).
	HTTPClient *http.Client
}

// Second is what arrived during one second of a check.
type Second struct {
	At        time.Duration // since the start, at the end of the second
	Multicast Count
	Unicast   Count
	// WithUnicast says whether a unicast copy was sent to compare with.
	WithUnicast bool
}

func (s Second) String() string {
	line := fmt.Sprintf("%5.1fs  multicast %5d pkts %5.1f%% loss %4d dup %4d reord %12s",
		s.At.Seconds(), s.Multicast.Packets, s.Multicast.Loss(), s.Multicast.Duplicates, s.Multicast.Reordered, bitRate(float64(s.Multicast.Bytes)))
	if s.WithUnicast {
		line += fmt.Sprintf(" | unicast %5d pkts %5.1f%% loss %12s", s.Unicast.Packets, s.Unicast.Loss(), bitRate(float64(s.Unicast.Bytes)))
	}
	return line
}

// Run performs a check. Network problems are not errors: they are what
// the Result's verdict describes. Errors are for checks that could not
// run (bad options, no interface, the port in use, a server that
// refused).
func Run(ctx context.Context, opt Options) (Result, error) {
	logf := opt.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	asked := OfferRequest{Port: opt.Port, Duration: opt.Duration, Rate: opt.Rate}.withDefaults()
	opt.Port, opt.Duration, opt.Rate = asked.Port, asked.Duration, asked.Rate
	if opt.MaxLoss == 0 {
		opt.MaxLoss = DefaultMaxLoss
	}
	var server netip.AddrPort
	if opt.Server != "" {
		var err error
		if server, err = parseServer(opt.Server); err != nil {
			return Result{}, err
		}
	}
	group := opt.Group
	if !group.IsValid() {
		if !server.IsValid() {
			return Result{}, errors.New("multicast check: give the server's address, or the group a stream is sent to")
		}
		group = DefaultGroup(server.Addr())
	}
	if !validGroup(group) {
		return Result{}, fmt.Errorf("multicast check: %s is not an IPv4 multicast group outside 224.0.0.0/24", group)
	}
	ifi, ip, err := ChooseInterface(opt.Interface, server.Addr())
	if err != nil {
		return Result{}, err
	}
	conn, pc, err := listen(ifi, group, opt.Port)
	if err != nil {
		return Result{}, err
	}
	defer conn.Close()
	logf("joined %s:%d on %s (%s)", group, opt.Port, ifi.Name, ip)

	watch := watchQuerier(ifi, ip)
	if err := watch.provoke(group); err != nil {
		logf("could not ask for an IGMP query: %v", err)
	}
	res := Result{Group: group.String(), Port: opt.Port}

	start := time.Now()
	// Until an offer says otherwise, count whatever stream comes first,
	// from its first packet on (one sent by hand, perhaps with a unicast
	// copy to us).
	mc, uc := newOpenTally(), newOpenTally()
	withUnicast := false
	var stream uint64 // 0: lock onto the first stream seen
	var source netip.Addr
	until := start.Add(opt.Duration)
	if server.IsValid() {
		base := "http://" + server.String()
		offer, err := RequestOffer(ctx, opt.HTTPClient, base, OfferRequest{Group: group, Port: opt.Port, Duration: opt.Duration, Rate: opt.Rate})
		switch {
		case err == nil:
			stream, res.Server = offer.Stream, offer.Source
			source, _ = netip.ParseAddr(offer.Source)
			mc = newTally(offer.First, offer.Count, offer.Rate, start)
			if offer.Unicast {
				uc, withUnicast = newTally(offer.First, offer.Count, offer.Rate, start), true
			}
			until = mc.due(offer.First + offer.Count - 1).Add(listenGrace)
			logf("%s sends stream %x from %s: %d packets at %d/s, unicast copy: %v %s", base, offer.Stream, offer.Source,
				offer.Count, offer.Rate, offer.Unicast, offer.Note)
		case errors.Is(err, ErrNoServer):
			logf("%v; listening %s for a stream sent by hand (imgcast mcast-check send)", err, opt.Duration)
			res.Server = server.Addr().String()
		default:
			watch.stop()
			return Result{}, err
		}
	}

	buf := make([]byte, 2048)
	tick := start.Add(time.Second)
	prev := start
	for {
		now := time.Now()
		if !now.Before(tick) || !now.Before(until) {
			if opt.Progress != nil {
				end := earlier(tick, now)
				opt.Progress(Second{At: end.Sub(start).Round(100 * time.Millisecond), Multicast: mc.second(prev, end),
					Unicast: uc.second(prev, end), WithUnicast: withUnicast || uc.started})
				prev = end
			}
			tick = tick.Add(time.Second)
			if !now.Before(until) {
				break
			}
		}
		if ctx.Err() != nil {
			watch.stop()
			return Result{}, fmt.Errorf("multicast check: %w", context.Cause(ctx))
		}
		deadline := earlier(tick, until)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		if err := conn.SetReadDeadline(deadline); err != nil {
			watch.stop()
			return Result{}, err
		}
		n, cm, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, syscall.EINTR) {
				continue
			}
			watch.stop()
			return Result{}, fmt.Errorf("multicast check: receive: %w", err)
		}
		at := time.Now()
		p, err := ParsePacket(buf[:n])
		if err != nil {
			continue
		}
		src := addrOf(from)
		if stream == 0 {
			stream, source = p.Stream, src
			if res.Server == "" {
				res.Server = src.String()
			}
		}
		if p.Stream != stream || src != source || cm == nil {
			continue
		}
		dst, _ := netip.AddrFromSlice(cm.Dst)
		switch dst := dst.Unmap(); {
		case dst == group && p.Kind == KindMulticast:
			mc.add(p, n, at)
		case !dst.IsMulticast() && p.Kind == KindUnicast:
			uc.add(p, n, at)
		}
	}
	end := time.Now()
	res.Seconds = round3(end.Sub(start).Seconds())
	res.Multicast = mc.stats(start, end)
	if withUnicast || uc.started {
		u := uc.stats(start, end)
		res.Unicast = &u
	}
	res.Querier = watch.stop()
	judge(&res, opt.MaxLoss, ifi.Name)
	return res, nil
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// parseServer reads IP or IP:PORT (no names: a check runs where DNS may
// not).
func parseServer(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Unmap().Is4() {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Unmap().Is4() {
		return netip.AddrPortFrom(a.Unmap(), DefaultHTTPPort), nil
	}
	return netip.AddrPort{}, fmt.Errorf("multicast check: server %q is not an IPv4 address (or address:port)", s)
}

func addrOf(a net.Addr) netip.Addr {
	if u, ok := a.(*net.UDPAddr); ok {
		ip, _ := netip.AddrFromSlice(u.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// listen opens the check's socket on port, joined to group on ifi, with
// IP_MULTICAST_ALL off (only this group's traffic and unicast to us) and
// the destination of every datagram reported (to tell the paths apart).
func listen(ifi *net.Interface, group netip.Addr, port int) (*net.UDPConn, *ipv4.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		cerr := c.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0)
			// A buffer for a few seconds of the fastest stream, so that
			// a busy machine does not drop what the network delivered.
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 2<<20) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 2<<20)
			}
		})
		if cerr != nil {
			return cerr
		}
		return err
	}}
	l, err := lc.ListenPacket(context.Background(), "udp4", ":"+strconv.Itoa(port))
	if err != nil {
		hint := ""
		if errors.Is(err, syscall.EADDRINUSE) {
			hint = " (a receiver or another check uses it; choose another port)"
		}
		return nil, nil, fmt.Errorf("multicast check: listen on port %d: %w%s", port, err, hint)
	}
	conn := l.(*net.UDPConn)
	pc := ipv4.NewPacketConn(conn)
	if err := pc.JoinGroup(ifi, &net.UDPAddr{IP: group.AsSlice()}); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("multicast check: join %s on %s: %w", group, ifi.Name, err)
	}
	if err := pc.SetControlMessage(ipv4.FlagDst, true); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("multicast check: IP_PKTINFO: %w", err)
	}
	return conn, pc, nil
}

// ChooseInterface finds the interface to use and its IPv4 address: the
// one named (a name or one of its addresses), else the one the routing
// table uses toward (when valid), else the first that is up, not
// loopback, can multicast and has an IPv4 address.
func ChooseInterface(name string, toward netip.Addr) (*net.Interface, netip.Addr, error) {
	if name != "" {
		if a, err := netip.ParseAddr(name); err == nil {
			if ifi := interfaceWith(a.Unmap()); ifi != nil {
				return ifi, a.Unmap(), nil
			}
			return nil, netip.Addr{}, fmt.Errorf("no interface has the address %s", name)
		}
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, netip.Addr{}, fmt.Errorf("interface %s: %w", name, err)
		}
		ip, ok := firstIPv4(ifi)
		if !ok {
			return nil, netip.Addr{}, fmt.Errorf("interface %s has no IPv4 address", name)
		}
		return ifi, ip, nil
	}
	if toward.IsValid() {
		// Connecting a UDP socket sends nothing; it asks the routing
		// table for the source address.
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: toward.AsSlice(), Port: 9})
		if err != nil {
			return nil, netip.Addr{}, fmt.Errorf("no route to %s: %w", toward, err)
		}
		local := addrOf(c.LocalAddr())
		c.Close()
		if ifi := interfaceWith(local); ifi != nil {
			return ifi, local, nil
		}
		return nil, netip.Addr{}, fmt.Errorf("no interface has %s, the address that reaches %s", local, toward)
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("network interfaces: %w", err)
	}
	for i := range ifs {
		f := ifs[i].Flags
		if f&net.FlagUp == 0 || f&net.FlagLoopback != 0 || f&net.FlagMulticast == 0 {
			continue
		}
		if ip, ok := firstIPv4(&ifs[i]); ok {
			return &ifs[i], ip, nil
		}
	}
	return nil, netip.Addr{}, errors.New("no interface is up with an IPv4 address; give one with -interface")
}

func firstIPv4(ifi *net.Interface) (netip.Addr, bool) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() {
				return ip.Unmap(), true
			}
		}
	}
	return netip.Addr{}, false
}
