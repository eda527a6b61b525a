package server

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/imgcast/imgcast/pkg/status"
)

// sessions runs the server's multicast sessions. Session 1 starts with the
// server and waits for --clients machines. With rolling sessions, a machine
// that asks for its session (GET /api/session?mac=) after the newest one
// has started is queued for the next: that one starts, on its own port
// base, for the machines queued for it as soon as no session is running,
// or --max-wait after the first of them was queued.
type sessions struct {
	image   string
	mode    string
	cfg     SenderConfig // session 1's; later ones differ in PortBase and Clients
	streams []ImageStream
	rolling bool
	// run sends one session; it returns when the session has ended.
	run func(ctx context.Context, st *session)
	now func() time.Time
	// expire drops a queued machine that has not asked for its session
	// for this long: it was switched off or gave up, and the next
	// session's sender must not wait for it.
	expire time.Duration
	// maxMachines bounds the machines queued and those whose session is
	// remembered (anyone on the network can ask with any MAC).
	maxMachines int

	mu       sync.Mutex
	list     []*session // started sessions, oldest first
	next     *queued    // the session machines are queued for, if any
	lastID   int        // of the newest started session
	running  int
	stopping bool
	// assigned is the session each MAC was told to join or wait for.
	assigned map[string]int

	// changes is closed, and replaced, when a session's phase changes or
	// a session is queued or started.
	cmu     sync.Mutex
	changes chan struct{}
}

// keptSessions bounds the ended sessions the server remembers.
const keptSessions = 8

// queued is the next session while machines wait for it.
type queued struct {
	id       int
	portBase int
	first    time.Time            // when the first machine was queued
	waiting  map[string]time.Time // MAC -> when it last asked
}

func newSessions(image, mode string, cfg SenderConfig, streams []ImageStream, rolling bool, maxMachines int) *sessions {
	m := &sessions{
		image: image, mode: mode, cfg: cfg, streams: streams, rolling: rolling,
		now:         time.Now,
		expire:      90 * time.Second,
		maxMachines: maxMachines,
		assigned:    map[string]int{},
		changes:     make(chan struct{}),
	}
	m.list = []*session{m.newSession(1, cfg)}
	m.lastID = 1
	return m
}

// portSlots is how many port bases rolling sessions rotate through:
// session n uses PortBase + ((n-1) mod slots) * 2 * streams, so two
// sessions in a row never share a port.
func portSlots(cfg SenderConfig, streams int) int {
	return min(16, (65536-cfg.PortBase)/(2*streams))
}

func (m *sessions) newSession(id int, cfg SenderConfig) *session {
	st := newSession(id, m.image, m.mode, cfg, m.streams)
	st.s.Rolling = m.rolling
	st.changed = m.changed
	return st
}

func (m *sessions) portBase(id int) int {
	return m.cfg.PortBase + ((id-1)%portSlots(m.cfg, len(m.streams)))*2*len(m.streams)
}

// changed wakes everyone waiting for a change.
func (m *sessions) changed() {
	m.cmu.Lock()
	defer m.cmu.Unlock()
	close(m.changes)
	m.changes = make(chan struct{})
}

// watch returns a channel that is closed at the next change.
func (m *sessions) watch() <-chan struct{} {
	m.cmu.Lock()
	defer m.cmu.Unlock()
	return m.changes
}

// loop runs session 1 and, with rolling sessions, every next one until ctx
// ends; then it waits for the running ones to stop.
func (m *sessions) loop(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	start := func(st *session) {
		m.running++
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.run(ctx, st)
			m.mu.Lock()
			m.running--
			m.mu.Unlock()
			m.changed()
		}()
	}
	m.mu.Lock()
	start(m.list[0])
	m.mu.Unlock()
	if !m.rolling {
		return
	}
	for {
		changes := m.watch()
		m.mu.Lock()
		wake := m.schedule(start)
		m.mu.Unlock()
		timer := time.NewTimer(time.Hour)
		if !wake.IsZero() {
			timer.Reset(wake.Sub(m.now()))
		}
		select {
		case <-ctx.Done():
		case <-changes:
		case <-timer.C:
		}
		timer.Stop()
		if ctx.Err() != nil {
			return
		}
	}
}

// schedule drops queued machines that stopped asking, starts the queued
// session when it is due, and returns when to look again (zero: at the
// next change). m.mu is held.
func (m *sessions) schedule(start func(*session)) (wake time.Time) {
	q := m.next
	if q == nil || m.stopping {
		return time.Time{}
	}
	now := m.now()
	for mac, seen := range q.waiting {
		if now.Sub(seen) >= m.expire {
			delete(q.waiting, mac)
			delete(m.assigned, mac)
		} else if w := seen.Add(m.expire); wake.IsZero() || w.Before(wake) {
			wake = w
		}
	}
	if len(q.waiting) == 0 {
		m.next = nil // its number goes to the next one queued
		return time.Time{}
	}
	due := q.first.Add(m.cfg.MaxWait)
	if m.running > 0 && (m.cfg.MaxWait == 0 || now.Before(due)) {
		if m.cfg.MaxWait > 0 && due.Before(wake) {
			wake = due
		}
		return wake
	}
	st := m.newSession(q.id, q.config(m.cfg))
	m.list = append(m.list, st)
	m.lastID, m.next = q.id, nil
	m.prune()
	start(st)
	m.changed()
	return time.Time{}
}

// prune forgets ended sessions beyond keptSessions, and what machines
// were told about them. m.mu is held.
func (m *sessions) prune() {
	for len(m.list) > keptSessions && m.list[0].ended() {
		gone := m.list[0].s.ID
		m.list = m.list[1:]
		for mac, id := range m.assigned {
			if id == gone {
				delete(m.assigned, mac)
			}
		}
	}
}

// current is the newest session's description, as /api/session shows it
// to a client that does not say who it is.
func (m *sessions) current() status.Session {
	m.mu.Lock()
	st := m.list[len(m.list)-1]
	m.mu.Unlock()
	return st.snapshot()
}

// forClient is the session the machine mac is to join: the newest if it
// can still be joined; with rolling sessions otherwise the queued one,
// for which the machine is queued (or its wait renewed). ok is false when
// the machine cannot be queued because too many are.
func (m *sessions) forClient(mac string) (s status.Session, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	newest := m.list[len(m.list)-1]
	s = newest.snapshot()
	if s.Joinable {
		m.assign(mac, s.ID)
	}
	if !m.rolling || s.Joinable || m.stopping || s.Phase == status.Unicast {
		return s, true
	}
	if m.next == nil {
		id := m.lastID + 1
		m.next = &queued{id: id, portBase: m.portBase(id), first: m.now(), waiting: map[string]time.Time{}}
	}
	q := m.next
	if _, known := q.waiting[mac]; !known {
		if len(q.waiting) >= m.maxMachines {
			return s, false
		}
		m.changed() // one more machine for the next session
	}
	q.waiting[mac] = m.now()
	m.assign(mac, q.id)
	return m.describeQueued(q), true
}

// assign records the session mac was told about. m.mu is held.
func (m *sessions) assign(mac string, id int) {
	if _, known := m.assigned[mac]; known || len(m.assigned) < m.maxMachines {
		m.assigned[mac] = id
	}
}

// config is the sender configuration of the queued session.
func (q *queued) config(cfg SenderConfig) SenderConfig {
	cfg.PortBase, cfg.Clients = q.portBase, len(q.waiting)
	return cfg
}

// describeQueued renders the queued session. m.mu is held.
func (m *sessions) describeQueued(q *queued) status.Session {
	s := newSession(q.id, m.image, m.mode, q.config(m.cfg), m.streams).snapshot()
	s.Rolling, s.Phase, s.Joinable, s.Current = true, status.Queued, false, -1
	for mac := range q.waiting {
		s.Waiting = append(s.Waiting, mac)
	}
	sort.Strings(s.Waiting)
	var running []string
	for _, st := range m.list {
		if !st.ended() {
			running = append(running, fmt.Sprint(st.s.ID))
		}
	}
	var when string
	switch {
	case len(running) == 0:
		when = "it starts now"
	case m.cfg.MaxWait > 0:
		when = fmt.Sprintf("it starts when session %s ends, or at %s (--max-wait after the first machine was queued)",
			strings.Join(running, ", "), q.first.Add(m.cfg.MaxWait).Format(time.TimeOnly))
	default:
		when = fmt.Sprintf("it starts when session %s ends", strings.Join(running, ", "))
	}
	s.Message = fmt.Sprintf("session %d on port base %d, for %d machine(s) that came too late for session %d: %s",
		q.id, q.portBase, len(q.waiting), q.id-1, when)
	return s
}

// all describes the sessions the server remembers, oldest first, then the
// queued one.
func (m *sessions) all() []status.Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]status.Session, 0, len(m.list)+1)
	for _, st := range m.list {
		out = append(out, st.snapshot())
	}
	if m.next != nil {
		out = append(out, m.describeQueued(m.next))
	}
	return out
}

// fillIn sets each client's Session: the one the machine was told to join
// or wait for, else the newest one whose udp-sender saw its address.
func (m *sessions) fillIn(list []status.Client) {
	byIP := map[string]int{}
	for _, s := range m.all() {
		for _, x := range s.Streams {
			for _, ip := range x.Receivers {
				byIP[ip] = s.ID
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, c := range list {
		if id, ok := m.assigned[c.MAC]; ok {
			list[i].Session = id
		} else {
			list[i].Session = byIP[c.IP]
		}
	}
}

// setStopping marks every session as ending with the server.
func (m *sessions) setStopping() {
	m.mu.Lock()
	m.stopping = true
	list := slices.Clone(m.list)
	m.mu.Unlock()
	for _, st := range list {
		st.setStopping()
	}
}
