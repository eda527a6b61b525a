package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Phase is where the server's multicast session is.
type Phase string

// Session phases.
const (
	// Waiting: the first partition's sender is up and waiting for
	// receivers. Only now can a client join.
	Waiting Phase = "waiting"
	// Sending: the first transfer has started; the chain is sending or
	// between partitions. A client that starts now has missed data.
	Sending Phase = "sending"
	// Finished: every partition was sent.
	Finished Phase = "finished"
	// Aborted: a sender failed or was stopped; the chain will not go on.
	Aborted Phase = "aborted"
	// Unicast: the server runs no multicast session; clients fetch the
	// image files over HTTP.
	Unicast Phase = "unicast"
	// Queued: with rolling sessions, the next session, which the machines
	// that came too late for the running one wait for. It has its own port
	// base and starts when the running one ends (or --max-wait after the
	// first machine began to wait).
	Queued Phase = "queued"
)

// StreamState is where one partition's sender is.
type StreamState string

// Stream states.
const (
	StreamPending StreamState = "pending" // not started: earlier partitions first
	StreamWaiting StreamState = "waiting" // udp-sender up, waiting for receivers
	StreamSending StreamState = "sending" // transfer started
	StreamDone    StreamState = "done"    // udp-sender finished and exited 0
	StreamFailed  StreamState = "failed"  // udp-sender failed or was stopped
)

// Session is what GET /api/session returns: the multicast session the
// server runs and whether a client can still join it. Asked with a MAC
// (?mac=), a server with rolling sessions answers with that machine's own
// session: the running one if it can still be joined, else the next one,
// queued, which the machine then waits for.
type Session struct {
	// ID numbers the server's sessions from 1.
	ID       int    `json:"id"`
	Rolling  bool   `json:"rolling,omitempty"`
	Image    string `json:"image"`
	Mode     string `json:"mode"` // "multicast" or "unicast"
	Phase    Phase  `json:"phase"`
	Joinable bool   `json:"joinable"`
	// Message says in one sentence what is going on, for people.
	Message  string `json:"message"`
	Clients  int    `json:"clients"`          // receivers the senders wait for
	MaxWait  int    `json:"max_wait_seconds"` // after the first receiver connects
	PortBase int    `json:"portbase"`
	// Current is the index of the stream being served (-1: none).
	Current   int        `json:"current"`
	StartedAt *time.Time `json:"started_at,omitempty"` // first transfer began
	Streams   []Stream   `json:"streams"`
	// Waiting are the MACs of the machines that wait for a queued
	// session.
	Waiting []string `json:"waiting,omitempty"`
}

// Stream is one partition image sent by one udp-sender run, on ports
// Port and Port+1.
type Stream struct {
	Index     int         `json:"index"`
	Partition int         `json:"partition"`
	ID        string      `json:"id"`    // FOGMC1 stream id, e.g. "d1p1.img"
	Files     []string    `json:"files"` // sent in this order
	Size      int64       `json:"size"`  // bytes of the files, without the header
	Port      int         `json:"port"`
	State     StreamState `json:"state"`
	// Expected is how many receivers the sender waits for: the session's
	// Clients for the first stream, then those that completed the stream
	// before (a machine that failed is not waited for).
	Expected int `json:"expected"`
	// Receivers are the addresses udp-sender reported as connected.
	Receivers  []string   `json:"receivers,omitempty"`
	Dropped    []string   `json:"dropped,omitempty"`
	BytesSent  int64      `json:"bytes_sent"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// Exit is how udp-sender ended, e.g. "exit status 0".
	Exit string `json:"exit,omitempty"`
}

// ErrNotJoinable is wrapped by the error Session.CanJoin returns.
var ErrNotJoinable = errors.New("multicast session cannot be joined")

// CanJoin returns nil when a client that starts its receivers now will get
// every partition, and otherwise an error wrapping ErrNotJoinable that says
// what happened and what to do.
func (s Session) CanJoin() error {
	if s.Joinable || s.Phase == Unicast {
		return nil
	}
	what := s.Message
	if what == "" {
		what = "session is " + string(s.Phase)
	}
	var hint string
	switch s.Phase {
	case Sending:
		hint = "this machine booted too late for it; image it in the next session (restart imgcast-server, or run it with --rolling) or boot it with imgcast.mode=unicast"
	case Finished:
		hint = "start a new session (restart imgcast-server) or boot this machine with imgcast.mode=unicast"
	case Queued:
		hint = "wait for it to start"
	default:
		hint = "see the server's log; restart imgcast-server or use imgcast.mode=unicast"
	}
	return fmt.Errorf("%w: %s; %s", ErrNotJoinable, what, hint)
}

// SessionURL derives the session endpoint from the report URL: same scheme
// and host, path /api/session.
func SessionURL(reportURL string) (string, error) {
	u, err := url.Parse(reportURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("report URL %q is not an http(s) URL", reportURL)
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/api/session"}).String(), nil
}

// FetchSession asks the server at sessionURL about its session.
func FetchSession(ctx context.Context, client *http.Client, sessionURL string) (Session, error) {
	var s Session
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sessionURL, nil)
	if err != nil {
		return s, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return s, fmt.Errorf("asking the server about its session: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return s, fmt.Errorf("reading %s: %w", sessionURL, err)
	}
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("%s answered %s: %s", sessionURL, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, &s); err != nil {
		return s, fmt.Errorf("%s: not a session description: %w", sessionURL, err)
	}
	return s, nil
}

// longPoll is how long WaitForSession asks the server to hold a request
// while nothing changes.
const longPoll = 25 * time.Second

// WaitForSession returns the multicast session this machine (mac) is to
// join, asking the server at sessionURL. It returns at once when the
// session can be joined (or the server runs none: unicast). When the
// server runs rolling sessions and this machine came too late for the
// running one, the server queues it for the next session: WaitForSession
// waits for that one to open — logging what it waits for whenever that
// changes — and returns it, with its own port base. Otherwise it returns
// the session and an error that wraps ErrNotJoinable and says what to do.
//
// If the first request fails, that error is returned at once (a server
// without the endpoint, e.g. FOG's, is the caller's decision); while
// waiting, a server that cannot be reached is retried for about a minute.
func WaitForSession(ctx context.Context, client *http.Client, sessionURL, mac string, logf func(format string, args ...any)) (Session, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	u, err := url.Parse(sessionURL)
	if err != nil {
		return Session{}, fmt.Errorf("session URL %q: %w", sessionURL, err)
	}
	// The server holds the request for up to wait; it must answer well
	// within the client's own timeout.
	wait := longPoll
	if client.Timeout > 0 {
		wait = min(wait, client.Timeout/2)
	}
	q := u.Query()
	q.Set("mac", mac)
	u.RawQuery = q.Encode()
	ask := u.String() // the first time: answered at once
	q.Set("wait", strconv.Itoa(max(1, int(wait/time.Second))))
	u.RawQuery = q.Encode()
	askAgain := u.String()

	const (
		maxFailures = 12              // in a row, while waiting: about a minute
		retryPause  = 5 * time.Second // after a failure
		minGap      = time.Second     // between two requests
	)
	var (
		queued   Session
		said     string
		failures int
	)
	for {
		asked := time.Now()
		s, err := FetchSession(ctx, client, ask)
		switch {
		case err != nil && ctx.Err() != nil:
			return s, waitError(queued, ctx.Err())
		case err != nil && queued.ID == 0:
			return s, err
		case err != nil:
			failures++
			if failures == 1 {
				logf("cannot ask the server about session %d (will retry): %v", queued.ID, err)
			}
			if failures >= maxFailures {
				return s, waitError(queued, err)
			}
		case s.Joinable || s.Phase == Unicast:
			return s, nil
		case s.Phase == Queued:
			failures = 0
			if say := fmt.Sprintf("waiting for session %d (port base %d): %s", s.ID, s.PortBase, s.Message); say != said {
				logf("%s", say)
				said = say
			}
			queued, ask = s, askAgain
		default:
			return s, s.CanJoin()
		}
		// A server that does not hold the request, or fails, is not
		// asked again at once.
		sleep := minGap - time.Since(asked)
		if err != nil {
			sleep = retryPause
		}
		if sleep > 0 {
			select {
			case <-ctx.Done():
				return s, waitError(queued, ctx.Err())
			case <-time.After(sleep):
			}
		}
	}
}

func waitError(queued Session, err error) error {
	if queued.ID == 0 {
		return err
	}
	return fmt.Errorf("waiting for multicast session %d: %w", queued.ID, err)
}
