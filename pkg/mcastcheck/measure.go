package mcastcheck

import (
	"math"
	"time"
)

// maxWindow bounds the sequence numbers one tally keeps track of (a
// bitmap of 512 KiB), whatever the packets claim.
const maxWindow = 1 << 22

// Count is what arrived on one channel in some time.
type Count struct {
	Packets    int64 // distinct packets
	Expected   int64 // packets the stream sent meanwhile (by its schedule)
	Duplicates int64
	Reordered  int64 // arrived after a later packet
	Bytes      int64
}

// Loss is the share of expected packets that did not arrive, in percent.
func (c Count) Loss() float64 {
	if c.Expected <= 0 {
		return 0
	}
	return 100 * float64(max(0, c.Expected-c.Packets)) / float64(c.Expected)
}

// tally counts one channel (multicast or unicast) of a test stream: the
// packets of the window [first, first+count) by sequence number.
type tally struct {
	rate  int
	first uint64
	count uint64 // 0 until known (a stream sent by hand: open-ended)
	// open: the window starts at the first packet seen (no server told
	// us where it starts).
	open bool
	// end is the stream's own end (packets say), 0 if open-ended.
	end uint64

	seen            []uint64
	started         bool
	total, sec      Count
	highest         uint64
	firstAt, lastAt time.Time
	// schedule is when packet first was due to arrive: the request time
	// for an offered stream, the first arrival for one sent by hand.
	schedule time.Time
}

func newTally(first, count uint64, rate int, schedule time.Time) *tally {
	return &tally{first: first, count: min(count, maxWindow), rate: rate, schedule: schedule}
}

func newOpenTally() *tally { return &tally{open: true} }

// add counts a packet of n bytes that arrived at at.
func (t *tally) add(p Packet, n int, at time.Time) {
	if t.open && !t.started {
		t.first, t.rate, t.schedule = p.Seq, int(min(p.Rate, MaxRate)), at
		t.count = maxWindow
	}
	if p.Seq < t.first || p.Seq-t.first >= t.count {
		return
	}
	if t.open && p.End > t.first {
		t.end = p.End
	}
	i := p.Seq - t.first
	if t.seen == nil {
		t.seen = make([]uint64, (t.count+63)/64)
	}
	word, bit := i/64, uint64(1)<<(i%64)
	if t.seen[word]&bit != 0 {
		t.total.Duplicates++
		t.sec.Duplicates++
		return
	}
	t.seen[word] |= bit
	if t.started && p.Seq < t.highest {
		t.total.Reordered++
		t.sec.Reordered++
	}
	if !t.started || p.Seq > t.highest {
		t.highest = p.Seq
	}
	if !t.started {
		t.firstAt = at
		t.started = true
	}
	t.lastAt = at
	t.total.Packets++
	t.sec.Packets++
	t.total.Bytes += int64(n)
	t.sec.Bytes += int64(n)
}

// expectedBy is how many packets of the window were due before at
// (packet k is due k/rate after the schedule starts).
func (t *tally) expectedBy(at time.Time) int64 {
	if t.rate <= 0 || t.schedule.IsZero() || !at.After(t.schedule) {
		return 0
	}
	n := int64(math.Ceil(at.Sub(t.schedule).Seconds() * float64(t.rate)))
	limit := int64(t.count)
	if t.open {
		limit = maxWindow
		if t.end > t.first {
			limit = int64(t.end - t.first)
		}
	}
	return min(n, limit)
}

// due is when packet seq was due to arrive.
func (t *tally) due(seq uint64) time.Time {
	if seq < t.first || t.rate <= 0 {
		return t.schedule
	}
	return t.schedule.Add(time.Duration(seq-t.first) * time.Second / time.Duration(t.rate))
}

// second ends the counting of one second, from..to, and returns it.
func (t *tally) second(from, to time.Time) Count {
	c := t.sec
	c.Expected = t.expectedBy(to) - t.expectedBy(from)
	t.sec = Count{}
	return c
}

// stopGrace is how long before the end of the window the last packet
// may have come without the stream counting as stopped.
func (t *tally) stopGrace() time.Duration {
	return max(time.Second, 3*time.Second/time.Duration(max(t.rate, 1)))
}

// stats sums the tally up at the end of a check that started at start
// (the request) and listened until end. The packets expected are the
// window's (an offered stream) or those the schedule sent from the first
// one seen until the stream ended or the check did (one sent by hand).
func (t *tally) stats(start, end time.Time) Stats {
	s := Stats{Packets: t.total.Packets, Duplicates: t.total.Duplicates, Reordered: t.total.Reordered}
	switch {
	case !t.open:
		s.Expected = int64(t.count)
	case t.started:
		s.Expected = int64(t.highest-t.first) + 1
		if end.Sub(t.lastAt) > t.stopGrace() {
			s.Expected = max(s.Expected, t.expectedBy(end.Add(-t.stopGrace())))
		}
	}
	if s.Expected > 0 {
		s.LossPercent = round2(100 * float64(max(0, s.Expected-s.Packets)) / float64(s.Expected))
	}
	if !t.started {
		return s
	}
	s.FirstPacket = round3(t.firstAt.Sub(start).Seconds())
	if span := t.lastAt.Sub(t.firstAt) + time.Second/time.Duration(max(t.rate, 1)); span > 0 {
		s.Rate = math.Round(float64(t.total.Bytes) / span.Seconds())
	}
	// Stopped: packets stopped coming well before the last one was due
	// (or, for an open-ended stream, before the check ended).
	lastDue := end
	if !t.open {
		lastDue = t.due(t.first + t.count - 1)
	} else if t.end > 0 {
		lastDue = t.due(t.end - 1)
	}
	if lastDue.After(end) {
		lastDue = end
	}
	if lastDue.Sub(t.lastAt) > t.stopGrace() {
		s.StoppedAfter = round3(t.lastAt.Sub(start).Seconds())
	}
	return s
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }
func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
