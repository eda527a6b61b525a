package receiver

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

func TestConnectBackoffSchedule(t *testing.T) {
	start := time.Unix(0, 0)
	for _, tc := range []struct {
		jitter float64
		want   []float64 // gaps between CONNECT_REQs, seconds
	}{
		{0, []float64{1, 2, 4, 8, 16, 32, 64, 120, 120}},
		{0.5, []float64{1.5, 3, 6, 12, 24, 48, 96, 180, 180}},
	} {
		b := connectBackoff{first: time.Second, next: start}
		now := start
		for i, want := range tc.want {
			if !b.due(now) {
				t.Fatalf("jitter %v: repeat %d not due at %v", tc.jitter, i, now)
			}
			b.sent(now, func() float64 { return tc.jitter })
			if gap := b.next.Sub(now); gap != time.Duration(want*float64(time.Second)) {
				t.Fatalf("jitter %v: gap %d is %v, want %vs", tc.jitter, i, gap, want)
			}
			if b.due(b.next.Add(-time.Nanosecond)) {
				t.Fatalf("due early")
			}
			now = b.next
		}
	}
	never := connectBackoff{first: -1, next: start}
	never.sent(start, rand.Float64)
	if !never.next.IsZero() {
		t.Error("negative ConnectRetry repeats")
	}
}

// asyncJoin simulates receivers joining an --async udp-sender that is
// already running (its start-up HELLO long gone): the sender sends its
// next HELLO only after interval without any datagram reaching it, and
// every receiver that has joined by then hears it and stops sending. It
// returns when the last receiver connected, or false if that takes
// longer than limit.
func asyncJoin(joins []time.Duration, interval, limit time.Duration, next func(b *connectBackoff, now time.Time)) (time.Duration, bool) {
	type rx struct {
		b         connectBackoff
		connected bool
	}
	origin := time.Unix(0, 0)
	rs := make([]*rx, len(joins))
	for i, j := range joins {
		rs[i] = &rx{b: connectBackoff{first: time.Second, next: origin.Add(j)}}
	}
	lastArrival := origin
	for now := origin; now.Sub(origin) < limit; {
		// The earliest CONNECT_REQ still to come.
		var first *rx
		for _, r := range rs {
			if !r.connected && (first == nil || r.b.next.Before(first.b.next)) {
				first = r
			}
		}
		if first == nil {
			return now.Sub(origin), true
		}
		if hello := lastArrival.Add(interval); hello.Before(first.b.next) && hello.After(now) {
			now = hello
			for i, r := range rs {
				if origin.Add(joins[i]).Before(now) {
					r.connected = true
				}
			}
			lastArrival = now // the timer restarts after a HELLO too
			continue
		}
		now = first.b.next
		lastArrival = now
		next(&first.b, now)
	}
	return limit, false
}

// The failure of issue 13: an async udp-sender started first never sent
// its next HELLO once two receivers repeated CONNECT_REQ every second.
// With the backoff, any number of receivers let it through.
func TestConnectRepeatsLeaveAnAsyncSenderItsQuietSecond(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 1))
	backoff := func(b *connectBackoff, now time.Time) { b.sent(now, rng.Float64) }
	everySecond := func(b *connectBackoff, now time.Time) { b.next = now.Add(time.Second + time.Millisecond) }
	for _, tc := range []struct {
		receivers int
		spread    time.Duration // joins spread over this long
		within    time.Duration // everyone connected this long after the first join
	}{
		{1, 0, 3 * time.Second},
		{3, 2 * time.Second, 15 * time.Second},
		{30, 60 * time.Second, 3 * time.Minute},
		{300, 60 * time.Second, 10 * time.Minute},
	} {
		joins := make([]time.Duration, tc.receivers)
		for i := range joins {
			joins[i] = time.Duration(rng.Int64N(int64(tc.spread) + 1))
		}
		sort.Slice(joins, func(i, j int) bool { return joins[i] < joins[j] })
		got, ok := asyncJoin(joins, time.Second, tc.within, backoff)
		if !ok {
			t.Errorf("%d receivers: not all connected within %s", tc.receivers, tc.within)
		} else {
			t.Logf("%d receivers joining over %s: all connected after %s", tc.receivers, tc.spread, got.Round(time.Millisecond))
		}
		if tc.receivers >= 2 {
			if _, ok := asyncJoin(joins, time.Second, tc.within, everySecond); ok {
				t.Errorf("%d receivers repeating every second connected: the simulation does not model the defect", tc.receivers)
			}
		}
	}
}

func TestPanicsBecomeErrors(t *testing.T) {
	// The Progress callback runs on the receiving goroutine.
	cfg := loopbackConfig(t, testPort())
	cfg.Progress = func(Progress) { panic("progress callback bug") }
	_, err := Receive(context.Background(), cfg, io.Discard)
	if !errors.Is(err, ErrInternal) {
		t.Fatalf("panic on the receiving goroutine: %v, want ErrInternal", err)
	}

	// The writer runs on its own goroutine.
	requireSender(t)
	port := testPort()
	file, _ := writeRandomFile(t, 500_000)
	startSender(t, port, file)
	_, err = Receive(context.Background(), loopbackConfig(t, port), panickingWriter{})
	if !errors.Is(err, ErrInternal) || errors.Is(err, ErrWrite) {
		t.Fatalf("panic in the writer: %v, want ErrInternal", err)
	}
	t.Log(err)
}

type panickingWriter struct{}

func (panickingWriter) Write([]byte) (int, error) { panic("writer bug") }
