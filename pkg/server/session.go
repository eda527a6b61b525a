package server

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/status"
)

// session holds the state of one session's sender chain, updated from
// udp-sender's output and exit, and renders it as a status.Session.
type session struct {
	// config is how this session's senders are run (its port base and
	// the receivers its first sender waits for).
	config   SenderConfig
	mu       sync.Mutex
	s        status.Session
	stopping bool
	// changed, if set, is called after a change that can change the
	// session's phase (not after progress), without mu held.
	changed func()
	// clientIPs maps udp-sender's client numbers to addresses, per stream.
	clientIPs []map[string]string
	// reason says why a failed stream failed, in words.
	reason []string
	now    func() time.Time
}

func newSession(id int, image, mode string, cfg SenderConfig, streams []ImageStream) *session {
	st := &session{
		config: cfg,
		s: status.Session{
			ID:       id,
			Image:    image,
			Mode:     mode,
			Clients:  cfg.Clients,
			MaxWait:  int(cfg.MaxWait.Seconds()),
			PortBase: cfg.PortBase,
		},
		clientIPs: make([]map[string]string, len(streams)),
		reason:    make([]string, len(streams)),
		now:       time.Now,
	}
	for i, s := range streams {
		st.s.Streams = append(st.s.Streams, status.Stream{
			Index:     i,
			Partition: s.Partition,
			ID:        s.ID,
			Files:     s.Files,
			Size:      s.Size,
			Port:      cfg.Port(i),
			State:     status.StreamPending,
			Expected:  cfg.Clients,
		})
		st.clientIPs[i] = map[string]string{}
	}
	return st
}

func (st *session) update(i int, f func(s *status.Stream)) {
	st.mu.Lock()
	defer st.mu.Unlock()
	f(&st.s.Streams[i])
}

// notify tells the session's watcher about a change of phase.
func (st *session) notify() {
	if st.changed != nil {
		st.changed()
	}
}

// waiting records that stream i's sender runs and waits for expected
// receivers. It never moves a stream back: the sender's output is read
// concurrently, and its "Starting transfer" may already have been seen.
func (st *session) waiting(i, expected int) {
	st.update(i, func(s *status.Stream) {
		s.Expected = expected
		if s.State == status.StreamPending {
			s.State = status.StreamWaiting
		}
	})
	st.notify()
}

// completed returns how many receivers got stream i to the end: those that
// connected, less those udp-sender dropped.
func (st *session) completed(i int) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.s.Streams[i]
	return len(s.Receivers) - len(s.Dropped)
}

func (st *session) started(i int) {
	defer st.notify()
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.now()
	st.s.Streams[i].State = status.StreamSending
	st.s.Streams[i].StartedAt = &now
	if st.s.StartedAt == nil {
		st.s.StartedAt = &now
	}
}

func (st *session) finished(i int, state status.StreamState, exit, reason string) {
	defer st.notify()
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.now()
	s := &st.s.Streams[i]
	s.State, s.Exit, s.FinishedAt = state, exit, &now
	st.reason[i] = reason
}

func (st *session) connected(i int, num, ip string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.clientIPs[i][num] = ip
	s := &st.s.Streams[i]
	if !slices.Contains(s.Receivers, ip) {
		s.Receivers = append(s.Receivers, ip)
	}
}

func (st *session) dropped(i int, num string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	ip := st.clientIPs[i][num]
	if ip == "" {
		ip = "#" + num
	}
	s := &st.s.Streams[i]
	s.Dropped = append(s.Dropped, ip)
}

func (st *session) setStopping() {
	defer st.notify()
	st.mu.Lock()
	defer st.mu.Unlock()
	st.stopping = true
}

// ended reports whether the session's chain has nothing more to send: all
// streams done, or one failed.
func (st *session) ended() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, x := range st.s.Streams {
		switch x.State {
		case status.StreamFailed:
			return true
		case status.StreamDone:
		default:
			return false
		}
	}
	return true
}

// snapshot returns a copy of the session with its phase, joinability and
// message worked out.
func (st *session) snapshot() status.Session {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.s
	s.Streams = make([]status.Stream, len(st.s.Streams))
	for i, x := range st.s.Streams {
		x.Receivers = slices.Clone(x.Receivers)
		x.Dropped = slices.Clone(x.Dropped)
		x.Files = slices.Clone(x.Files)
		s.Streams[i] = x
	}
	s.Current = -1
	for i, x := range s.Streams {
		if x.State != status.StreamDone {
			s.Current = i
			break
		}
	}
	n := len(s.Streams)
	if s.Mode == "unicast" {
		s.Phase, s.Current = status.Unicast, -1
		s.Message = "no multicast session: clients fetch the image over HTTP (imgcast.mode=unicast)"
		return s
	}
	if s.Current == -1 {
		s.Phase = status.Finished
		s.Message = fmt.Sprintf("all %d partitions were sent; the session is over", n)
		if last := s.Streams[n-1].FinishedAt; last != nil {
			s.Message = fmt.Sprintf("all %d partitions were sent (finished %s); the session is over", n, last.Format(time.TimeOnly))
		}
		return s
	}
	cur := s.Streams[s.Current]
	what := fmt.Sprintf("partition %d (%s, %d of %d) on port %d", cur.Partition, cur.ID, s.Current+1, n, cur.Port)
	switch {
	case cur.State == status.StreamFailed:
		s.Phase = status.Aborted
		s.Message = fmt.Sprintf("the sender for %s stopped before it finished (%s)", what, st.reason[s.Current])
		if s.Current+1 < n {
			s.Message += "; the partitions after it will not be sent"
		}
	case s.Current == 0 && cur.State != status.StreamSending:
		s.Phase, s.Joinable = status.Waiting, !st.stopping
		s.Message = fmt.Sprintf("waiting for receivers for %s: %d of %d connected (%s); the transfer starts about 2 s after the last one connects",
			what, len(cur.Receivers), cur.Expected, joinOrNone(cur.Receivers))
		if s.MaxWait > 0 {
			s.Message += fmt.Sprintf(", or %d s after the first", s.MaxWait)
		}
	case cur.State == status.StreamSending:
		s.Phase = status.Sending
		pct := 0.0
		if cur.Size > 0 {
			pct = 100 * float64(min(cur.BytesSent, cur.Size)) / float64(cur.Size)
		}
		s.Message = fmt.Sprintf("sending %s to %d receivers (%.0f%%)", what, len(cur.Receivers)-len(cur.Dropped), pct)
		if s.StartedAt != nil {
			s.Message += "; the session started at " + s.StartedAt.Format(time.TimeOnly)
		}
	default:
		s.Phase = status.Sending
		s.Message = fmt.Sprintf("partition %d of %d sent; waiting for receivers for %s: %d of %d connected", s.Current, n, what, len(cur.Receivers), cur.Expected)
	}
	if st.stopping && s.Phase != status.Aborted {
		s.Message = "the server is shutting down; " + s.Message
	}
	return s
}

func joinOrNone(ips []string) string {
	if len(ips) == 0 {
		return "none yet"
	}
	return strings.Join(ips, ", ")
}

// describeStream is the one-line summary logged when a sender starts.
func describeStream(s ImageStream) string {
	return fmt.Sprintf("partition %d: %s (%s in %d file(s))", s.Partition, s.ID, inventory.HumanBytes(uint64(s.Size)), len(s.Files))
}
