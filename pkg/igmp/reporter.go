package igmp

import (
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Reporter sends a membership report for each of its groups every
// interval, unasked. A switch that snoops IGMP without a querier forgets
// a port's groups a few minutes (often 260 s) after the last report it
// saw there; the kernel reports only when it joins and when a querier
// asks, so without a querier the group stops flowing mid-transfer. With a
// Reporter it never does. The reports cost a few dozen bytes per group
// per interval.
type Reporter struct {
	interval time.Duration
	send     func([]netip.Addr) error
	logf     func(string, ...any)
	onClose  func()

	mu     sync.Mutex
	groups []netip.Addr
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

// KeepReporting starts a Reporter that sends through c every interval; it
// closes c when it is closed. logf (may be nil) hears about the first
// failure to send, and about recovery.
func (c *Conn) KeepReporting(interval time.Duration, logf func(string, ...any)) *Reporter {
	return NewReporter(interval, func(g []netip.Addr) error { return c.Report(g...) }, logf, func() { c.Close() })
}

// NewReporter starts a Reporter that calls send with its groups every
// interval (when it has any) and onClose (may be nil) once it stops.
func NewReporter(interval time.Duration, send func([]netip.Addr) error, logf func(string, ...any), onClose func()) *Reporter {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	r := &Reporter{interval: interval, send: send, logf: logf, onClose: onClose,
		stop: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	return r
}

// Add starts reporting group (again reporting it is a no-op).
func (r *Reporter) Add(group netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Contains(r.groups, group) {
		r.groups = append(r.groups, group)
	}
}

// Remove stops reporting group. It sends no leave: the socket that joined
// the group leaves it, and the kernel says so.
func (r *Reporter) Remove(group netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.groups = slices.DeleteFunc(r.groups, func(g netip.Addr) bool { return g == group })
}

// Groups are the groups being reported.
func (r *Reporter) Groups() []netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.groups)
}

// Close stops the reports and waits for the reporting goroutine.
func (r *Reporter) Close() {
	r.once.Do(func() { close(r.stop) })
	<-r.done
}

func (r *Reporter) run() {
	defer close(r.done)
	if r.onClose != nil {
		defer r.onClose()
	}
	t := time.NewTicker(r.interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		groups := r.Groups()
		if len(groups) == 0 {
			continue
		}
		err := r.send(groups)
		switch {
		case err != nil && !failing:
			r.logf("IGMP keep-alive: %v (will keep trying every %s)", err, r.interval)
			failing = true
		case err == nil && failing:
			r.logf("IGMP keep-alive: reports go out again")
			failing = false
		}
	}
}
