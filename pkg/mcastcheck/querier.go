package mcastcheck

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/imgcast/imgcast/pkg/igmp"
)

// querierWatch listens for IGMP queries on a raw socket for the length of
// a check.
//
// A querier sends its general queries only every 125 s or so, far longer
// than a check lasts. But it answers a leave at once with a query about
// that group (to find out whether another member remains): so the watch
// reports the test group, leaves it and reports it again, all in a
// moment, and a querier, if there is one, shows itself within a second.
// The second report keeps the group flowing to us meanwhile, and the
// kernel answers the query with a report of its own.
type querierWatch struct {
	conn *igmp.Conn
	done chan struct{}

	mu      sync.Mutex
	q       Querier
	general map[netip.Addr]time.Time // last general query from each querier
}

// watchQuerier starts listening; when it cannot (no raw socket without
// root) the result says why instead.
func watchQuerier(ifi *net.Interface, ip netip.Addr) *querierWatch {
	w := &querierWatch{done: make(chan struct{}), general: map[netip.Addr]time.Time{}}
	c, err := igmp.Open(ifi, ip)
	if err != nil {
		w.q.Note = "cannot listen for IGMP queries: " + err.Error()
		close(w.done)
		return w
	}
	w.conn, w.q.Checked = c, true
	go w.run()
	return w
}

func (w *querierWatch) run() {
	defer close(w.done)
	for {
		q, src, err := w.conn.ReadQuery(time.Time{})
		if err != nil {
			return
		}
		w.saw(q, src, time.Now())
	}
}

// saw records a query from src that arrived at at.
func (w *querierWatch) saw(q igmp.Query, src netip.Addr, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.q.Seen, w.q.Address, w.q.Version = true, src.String(), int(q.Version)
	switch {
	case q.Interval > 0:
		w.q.Interval = q.Interval.Seconds()
	case q.General():
		// Two general queries from one querier, not a burst of startup
		// queries, tell its interval.
		if last, ok := w.general[src]; ok && at.Sub(last) > time.Second {
			w.q.Interval = at.Sub(last).Round(100 * time.Millisecond).Seconds()
		}
		w.general[src] = at
	}
}

// provoke makes a querier, if any, send a query about group now.
func (w *querierWatch) provoke(group netip.Addr) error {
	if w.conn == nil {
		return nil
	}
	if err := w.conn.Report(group); err != nil {
		return err
	}
	if err := w.conn.Leave(group); err != nil {
		return err
	}
	return w.conn.Report(group)
}

// stop ends the watch and returns what it saw.
func (w *querierWatch) stop() Querier {
	if w.conn != nil {
		w.conn.Close()
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.q
}
