package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
// server runs and whether a client can still join it.
type Session struct {
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
		hint = "this machine booted too late for it; image it in the next session (restart imgcast-server) or boot it with imgcast.mode=unicast"
	case Finished:
		hint = "start a new session (restart imgcast-server) or boot this machine with imgcast.mode=unicast"
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
