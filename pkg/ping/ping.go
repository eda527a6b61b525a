// Package ping finds out whether a host still answers by unicast, with
// ICMP echo requests. Receivers use it when a multicast stream goes
// silent: a sender that still answers points at the network between
// (a switch that stopped forwarding the group, a firewall), one that does
// not at the sender's machine or its link.
package ping

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// ErrNoReply is returned when no echo reply came before the context
// ended.
var ErrNoReply = errors.New("no echo reply")

// Interval is how often Echo repeats its request.
const Interval = 250 * time.Millisecond

// Echo sends ICMP echo requests to dst, from src when it is valid, every
// Interval until a reply comes or ctx ends, and returns the round-trip
// time of the first reply. It uses a raw socket (root) or, failing that,
// an unprivileged ping socket (net.ipv4.ping_group_range); when neither
// can be opened the error matches os.ErrPermission. Without a reply
// before ctx ends it returns ErrNoReply.
func Echo(ctx context.Context, src, dst netip.Addr) (time.Duration, error) {
	if !dst.Is4() {
		return 0, fmt.Errorf("ping: %s is not an IPv4 address", dst)
	}
	local := "0.0.0.0"
	if src.Is4() {
		local = src.String()
	}
	privileged := true
	c, err := icmp.ListenPacket("ip4:icmp", local)
	if err != nil && errors.Is(err, os.ErrPermission) {
		privileged = false
		c, err = icmp.ListenPacket("udp4", local)
	}
	if err != nil {
		return 0, fmt.Errorf("ping %s: %w", dst, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	var to net.Addr = &net.IPAddr{IP: dst.AsSlice()}
	if !privileged {
		to = &net.UDPAddr{IP: dst.AsSlice()}
	}
	// An unprivileged socket gets its identifier from the kernel, which
	// also filters the replies; a raw socket sees every ICMP message.
	id := rand.IntN(0x10000)
	sent := map[int]time.Time{}
	buf := make([]byte, 1500)
	next := time.Now()
	for seq := 0; ; {
		if ctx.Err() != nil {
			return 0, ErrNoReply
		}
		if !time.Now().Before(next) {
			req := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("imgcast")}}
			b, err := req.Marshal(nil)
			if err != nil {
				return 0, fmt.Errorf("ping %s: %w", dst, err)
			}
			if _, err := c.WriteTo(b, to); err != nil {
				return 0, fmt.Errorf("ping %s: %w", dst, err)
			}
			sent[seq] = time.Now()
			seq = (seq + 1) & 0xffff
			next = time.Now().Add(Interval)
		}
		if ctx.Err() != nil {
			return 0, ErrNoReply
		}
		if err := c.SetReadDeadline(next); err != nil {
			return 0, fmt.Errorf("ping %s: %w", dst, err)
		}
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			return 0, fmt.Errorf("ping %s: %w", dst, err)
		}
		if !sameHost(from, dst) {
			continue
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		if !ok || (privileged && e.ID != id) {
			continue
		}
		if at, ok := sent[e.Seq]; ok {
			return time.Since(at), nil
		}
	}
}

func sameHost(a net.Addr, want netip.Addr) bool {
	var ip net.IP
	switch a := a.(type) {
	case *net.IPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	default:
		return false
	}
	got, ok := netip.AddrFromSlice(ip)
	return ok && got.Unmap() == want
}
