package mcastcheck

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"
)

// Result is the outcome of a check, small enough to go into a status
// report.
type Result struct {
	// OK is true when nothing was found wrong; Verdict is then "ok",
	// else "PROBLEM — " and what is wrong and what to change.
	OK      bool   `json:"ok"`
	Verdict string `json:"verdict"`
	Group   string `json:"group"`
	Port    int    `json:"port"`
	// Server is who sent the stream (empty: not known).
	Server    string `json:"server,omitempty"`
	Multicast Stats  `json:"multicast"`
	// Unicast is the copy of the stream sent by unicast for comparison;
	// nil when none was sent.
	Unicast *Stats  `json:"unicast,omitempty"`
	Querier Querier `json:"querier"`
	// Seconds is how long the check listened.
	Seconds float64 `json:"seconds"`
}

// Stats sums up one channel of the stream.
type Stats struct {
	Packets     int64   `json:"packets"`  // distinct packets received
	Expected    int64   `json:"expected"` // packets sent
	LossPercent float64 `json:"loss_percent"`
	Duplicates  int64   `json:"duplicates"`
	Reordered   int64   `json:"reordered"`
	Rate        float64 `json:"rate"` // bytes per second while packets came
	// FirstPacket is the time from the request (or the join) to the
	// first packet, in seconds; meaningful when Packets > 0.
	FirstPacket float64 `json:"first_packet_seconds"`
	// StoppedAfter, when not 0, is when the last packet came (seconds
	// after the start) in a stream that went on without reaching us.
	StoppedAfter float64 `json:"stopped_after_seconds,omitempty"`
}

// Querier is what the check learnt about the network's IGMP querier.
type Querier struct {
	// Checked is false when the check could not listen for queries (it
	// needs root); Note says why.
	Checked bool   `json:"checked"`
	Seen    bool   `json:"seen"`
	Address string `json:"address,omitempty"`
	Version int    `json:"version,omitempty"`
	// Interval is the query interval in seconds: carried by IGMPv3
	// queries, measured between two general queries otherwise; 0 when
	// not known.
	Interval float64 `json:"interval_seconds,omitempty"`
	Note     string  `json:"note,omitempty"`
}

// Bounds Validate enforces on a Result from the network.
const (
	maxVerdictLen = 2048
	maxNoteLen    = 512
)

// Validate checks a Result received from the network (a status report).
func (r *Result) Validate() error {
	if len(r.Verdict) > maxVerdictLen || len(r.Querier.Note) > maxNoteLen {
		return errors.New("multicast check: verdict or note too long")
	}
	if r.OK != (r.Verdict == "ok") {
		return fmt.Errorf("multicast check: ok=%v does not go with verdict %q", r.OK, shorten(r.Verdict, 40))
	}
	for _, a := range []string{r.Group, r.Server, r.Querier.Address} {
		if a == "" {
			continue
		}
		if _, err := netip.ParseAddr(a); err != nil {
			return fmt.Errorf("multicast check: %q is not an IP address", shorten(a, 40))
		}
	}
	if r.Port < 0 || r.Port > 65535 || r.Querier.Version < 0 || r.Querier.Version > 3 {
		return fmt.Errorf("multicast check: port %d or IGMP version %d out of range", r.Port, r.Querier.Version)
	}
	nums := []float64{r.Seconds, r.Querier.Interval}
	for _, s := range []*Stats{&r.Multicast, r.Unicast} {
		if s == nil {
			continue
		}
		if s.Packets < 0 || s.Expected < 0 || s.Duplicates < 0 || s.Reordered < 0 || s.LossPercent > 100 {
			return errors.New("multicast check: counts out of range")
		}
		nums = append(nums, s.LossPercent, s.Rate, s.FirstPacket, s.StoppedAfter)
	}
	for _, v := range nums {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("multicast check: %v is not a measurement", v)
		}
	}
	return nil
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// String is the querier line of the report.
func (q Querier) String() string {
	switch {
	case !q.Checked:
		return "not checked: " + q.Note
	case !q.Seen:
		return "none answered"
	}
	s := fmt.Sprintf("%s (IGMPv%d)", q.Address, q.Version)
	if q.Interval > 0 {
		s += fmt.Sprintf(", query interval %g s", q.Interval)
	} else {
		s += ", query interval not seen (IGMPv2 does not carry it)"
	}
	if q.Address == "0.0.0.0" {
		s += "; it queries from 0.0.0.0, as a Linux bridge does by default (a few switches ignore such queries: multicast_query_use_ifaddr 1 fixes that)"
	}
	return s
}

// String is one line about a channel.
func (s Stats) String() string {
	if s.Packets == 0 {
		return fmt.Sprintf("0 of %d packets", s.Expected)
	}
	line := fmt.Sprintf("%d of %d packets, loss %.1f%%, %d duplicates, %d reordered, %s, first packet after %s",
		s.Packets, s.Expected, s.LossPercent, s.Duplicates, s.Reordered, bitRate(s.Rate), seconds(s.FirstPacket))
	if s.StoppedAfter > 0 {
		line += fmt.Sprintf(", STOPPED after %s", seconds(s.StoppedAfter))
	}
	return line
}

// Lines is the summary of a check, the verdict last.
func (r Result) Lines() []string {
	lines := []string{"total:   multicast " + r.Multicast.String()}
	if r.Unicast != nil {
		lines = append(lines, "         unicast   "+r.Unicast.String())
	} else {
		lines = append(lines, "         unicast   not compared (no unicast copy was sent)")
	}
	lines = append(lines, "querier: "+r.Querier.String())
	return append(lines, "verdict: "+r.Verdict)
}

// bitRate renders bytes per second as bits per second.
func bitRate(bytesPerSecond float64) string {
	b := bytesPerSecond * 8
	switch {
	case b >= 1e9:
		return fmt.Sprintf("%.2f Gbit/s", b/1e9)
	case b >= 1e6:
		return fmt.Sprintf("%.2f Mbit/s", b/1e6)
	}
	return fmt.Sprintf("%.0f kbit/s", b/1e3)
}

func seconds(s float64) string {
	if s < 1 {
		return fmt.Sprintf("%.0f ms", s*1000)
	}
	return fmt.Sprintf("%.1f s", s)
}

// judge sets r.OK and r.Verdict from the measurements: every problem
// found, the worst first, each with what to change.
func judge(r *Result, maxLoss float64, ifname string) {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	m, u := r.Multicast, r.Unicast
	where := fmt.Sprintf("%s:%d", r.Group, r.Port)
	switch {
	case m.Packets == 0 && u != nil && u.Packets > 0:
		add("multicast is blocked: the test stream reached this machine by unicast but not by multicast to %s; "+
			"a firewall (on the server or on this machine) drops multicast, a switch filters it, or the server is "+
			"in another VLAN or subnet (multicast with TTL 1 does not cross routers)", where)
	case m.Packets == 0 && u != nil:
		add("no test packets arrived at all, by multicast (%s) or by unicast: a firewall drops UDP port %d on the "+
			"way, or the server could not send (see its log)", where, r.Port)
	case m.Packets == 0:
		add("no multicast test packets arrived on %s: multicast is blocked (a firewall, a switch that filters it, "+
			"another VLAN), or nothing sends to that group and port", where)
	case m.StoppedAfter > 0 && u != nil && u.Packets > 0 && u.StoppedAfter == 0:
		add("multicast stopped after %s while unicast went on: a switch stopped forwarding the group "+
			"(IGMP snooping without a querier, or a multicast limit on the switch)", seconds(m.StoppedAfter))
	case m.StoppedAfter > 0:
		add("the test stream stopped after %s: the sender stopped, or the link to it went down", seconds(m.StoppedAfter))
	case m.LossPercent > maxLoss && u != nil && u.LossPercent > maxLoss:
		add("%.1f%% of multicast and %.1f%% of unicast packets were lost (more than %g%%): the link itself loses "+
			"packets (a bad cable or port, a duplex mismatch, an overloaded link)", m.LossPercent, u.LossPercent, maxLoss)
	case m.LossPercent > maxLoss && u != nil:
		add("%.1f%% of multicast packets were lost but %.1f%% of unicast: a switch limits multicast (storm control "+
			"or a multicast rate limit), or a wireless link is on the way", m.LossPercent, u.LossPercent)
	case m.LossPercent > maxLoss:
		add("%.1f%% of multicast packets were lost (more than %g%%): a bad link, or a switch that limits multicast",
			m.LossPercent, maxLoss)
	}
	if m.Duplicates > 0 {
		add("%d multicast packets arrived twice: there are two paths to this machine (a loop, two bridged NICs, "+
			"or two switches that both flood)", m.Duplicates)
	}
	if r.Querier.Checked && !r.Querier.Seen {
		add("no IGMP querier answered on %s: a switch that snoops IGMP without a querier stops forwarding a group "+
			"a few minutes (often 260 s) after a machine joins it, and udpcast's receivers then stall; enable the "+
			"IGMP querier on the switch (or its VLAN), or on a Linux/Proxmox bridge: "+
			"ip link set BRIDGE type bridge mcast_snooping 1 mcast_querier 1 (imgcast's own receivers send their "+
			"own reports and keep working)", ifname)
	}
	if len(problems) == 0 {
		r.OK, r.Verdict = true, "ok"
		return
	}
	r.OK, r.Verdict = false, "PROBLEM — "+strings.Join(problems, "; ")
}
