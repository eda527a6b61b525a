package igmp

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/lab"
	"golang.org/x/net/ipv4"
)

// Namespace tests: our messages against the kernel's own, and against the
// lab's snooping switch. They need root (IMGCAST_QUICK=1 skips them).

// joinUDP joins group on the host's eth0 with a UDP socket on port.
func joinUDP(t *testing.T, h *lab.Host, port int, groups ...netip.Addr) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := h.Do(func() error {
		var err error
		if c, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port}); err != nil {
			return err
		}
		ifi, err := net.InterfaceByName(h.Iface)
		if err != nil {
			return err
		}
		for _, g := range groups {
			if err := ipv4.NewPacketConn(c).JoinGroup(ifi, &net.UDPAddr{IP: g.AsSlice()}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("join %v in %s: %v", groups, h.NS, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// openConn opens our raw IGMP socket as the host.
func openConn(t *testing.T, h *lab.Host) *Conn {
	t.Helper()
	var c *Conn
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName(h.Iface)
		if err != nil {
			return err
		}
		c, err = Open(ifi, netip.MustParseAddr(h.IP.String()))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// captured is one IGMP packet with its IP header.
type captured struct {
	h       *ipv4.Header
	payload []byte
}

// TestMessagesAsTheKernelSendsThem makes a host's kernel report a group
// and then sends our own report: another host captures both, and they
// must carry the same IP header fields (TTL 1, Router Alert, precedence,
// source, destination) in the kernel's IGMP version; an IGMPv2 report
// must be byte for byte the kernel's.
func TestMessagesAsTheKernelSendsThem(t *testing.T) {
	lab.Require(t, "sysctl")
	n := lab.T(t, 61)
	for i, v := range []Version{V2, V3} {
		t.Run(v.String(), func(t *testing.T) {
			a, err := n.AddHost(fmt.Sprintf("a%d", v), 11+2*i)
			if err != nil {
				t.Fatal(err)
			}
			b, err := n.AddHost(fmt.Sprintf("b%d", v), 12+2*i)
			if err != nil {
				t.Fatal(err)
			}
			// The kernel's reports come quickly, ours after them.
			if err := a.Run("sysctl", "-qw", "net.ipv4.conf.eth0.force_igmp_version="+strconv.Itoa(int(v)),
				"net.ipv4.conf.eth0.igmpv2_unsolicited_report_interval=50",
				"net.ipv4.conf.eth0.igmpv3_unsolicited_report_interval=50"); err != nil {
				t.Fatal(err)
			}
			group := netip.MustParseAddr("234.61.0.7")
			joinUDP(t, b, 5000, group, V3Routers) // to receive reports to both
			var raw *ipv4.RawConn
			if err := b.Do(func() error {
				l, err := net.ListenPacket("ip4:2", "0.0.0.0")
				if err != nil {
					return err
				}
				raw, err = ipv4.NewRawConn(l)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			from := a.IP.String()
			read := func(within time.Duration) []captured {
				var out []captured
				deadline := time.Now().Add(within)
				for {
					raw.SetReadDeadline(deadline)
					buf := make([]byte, 1500)
					h, p, _, err := raw.ReadFrom(buf)
					if err != nil {
						return out
					}
					if h.Src.String() == from {
						out = append(out, captured{h, p})
					}
				}
			}

			joinUDP(t, a, 5000, group)
			kernel := read(time.Second)
			if len(kernel) == 0 {
				t.Fatal("the kernel's report was not captured")
			}
			c := openConn(t, a)
			defer c.Close()
			if got := c.Version(); got != v {
				t.Fatalf("Conn.Version() = %v, want %v (forced for the host)", got, v)
			}
			if err := c.Report(group); err != nil {
				t.Fatal(err)
			}
			ours := read(time.Second)
			if len(ours) != 1 {
				t.Fatalf("captured %d messages after ours, want 1", len(ours))
			}
			k, o := kernel[0], ours[0]
			if o.h.TTL != 1 || o.h.TTL != k.h.TTL || o.h.TOS != k.h.TOS || !bytes.Equal(o.h.Options, k.h.Options) ||
				!o.h.Dst.Equal(k.h.Dst) || o.h.Protocol != 2 {
				t.Errorf("our header %v options % x\nkernel's    %v options % x", o.h, o.h.Options, k.h, k.h.Options)
			}
			if !bytes.Equal(o.h.Options, []byte(routerAlert)) {
				t.Errorf("options % x, want Router Alert", o.h.Options)
			}
			m, err := Parse(o.payload)
			if err != nil || !slices.Contains(m.Groups, group) {
				t.Errorf("our report %v %v does not report %s", m, err, group)
			}
			if v == V2 && !bytes.Equal(o.payload, k.payload) {
				t.Errorf("our IGMPv2 report % x, the kernel's % x", o.payload, k.payload)
			}
		})
	}
}

// TestReporterKeepsGroupFlowingThroughSnoopingSwitch: behind a switch that
// snoops without a querier (the lab's emulation, forgetting after 1.5 s)
// a group stops flowing once the join's reports are forgotten; our
// reports, IGMPv2 or IGMPv3 as the host speaks, bring it back and keep
// it flowing.
func TestReporterKeepsGroupFlowingThroughSnoopingSwitch(t *testing.T) {
	lab.Require(t, "sysctl")
	n := lab.T(t, 62)
	const forget = 1500 * time.Millisecond
	if err := n.SnoopWithoutQuerier(forget); err != nil {
		t.Fatal(err)
	}
	sender, err := n.AddHost("s", 2)
	if err != nil {
		t.Fatal(err)
	}
	var out *net.UDPConn
	if err := sender.Do(func() error {
		var err error
		out, err = net.ListenUDP("udp4", &net.UDPAddr{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer out.Close()

	for i, v := range []Version{V2, V3} {
		t.Run(v.String(), func(t *testing.T) {
			r, err := n.AddHost(fmt.Sprintf("r%d", v), 11+i)
			if err != nil {
				t.Fatal(err)
			}
			// The kernel repeats its join report once, at random within
			// this interval (IGMPv2's default is 10 s): make it quick so
			// the switch forgets the port at a known time.
			if err := r.Run("sysctl", "-qw", "net.ipv4.conf.eth0.force_igmp_version="+strconv.Itoa(int(v)),
				"net.ipv4.conf.eth0.igmpv2_unsolicited_report_interval=100",
				"net.ipv4.conf.eth0.igmpv3_unsolicited_report_interval=100"); err != nil {
				t.Fatal(err)
			}
			group := netip.AddrFrom4([4]byte{234, 62, 0, byte(v)})
			in := joinUDP(t, r, 5000, group)
			var got atomic.Int64
			go func() {
				buf := make([]byte, 100)
				for {
					if _, _, err := in.ReadFrom(buf); err != nil {
						return
					}
					got.Add(1)
				}
			}()
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
						out.WriteToUDP([]byte("x"), &net.UDPAddr{IP: group.AsSlice(), Port: 5000})
					}
				}
			}()
			// arrivals counts what arrives in the next d.
			arrivals := func(d time.Duration) int64 {
				before := got.Load()
				time.Sleep(d)
				return got.Load() - before
			}
			if k := arrivals(500 * time.Millisecond); k == 0 {
				t.Fatal("nothing arrived right after the join")
			}
			time.Sleep(2 * forget)
			if k := arrivals(time.Second); k != 0 {
				t.Fatalf("%d packets arrived %s after the join: the switch emulation did not forget the port", k, 2*forget)
			}
			c := openConn(t, r)
			rep := c.KeepReporting(300*time.Millisecond, t.Logf)
			defer rep.Close()
			rep.Add(group)
			time.Sleep(500 * time.Millisecond)
			if k := arrivals(3 * forget); k < int64(3*forget/(20*time.Millisecond))*8/10 {
				t.Fatalf("only %d packets in %s with our reports going out", k, 3*forget)
			}
			ports, err := n.ReportedPorts()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(ports, r.Port()) {
				t.Errorf("the switch does not list %s among the reported ports %v", r.Port(), ports)
			}
		})
	}
}
