package status

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"sync"
	"time"

	"github.com/imgcast/imgcast/internal/recovered"
)

// Reporter sends a client's reports to the server in the background.
//
// Update never blocks: it records the latest report and returns. A
// goroutine posts it — at most once per interval (2 s by default), only
// when it changed, and always the newest (reports made in between are
// coalesced). Terminal states (done, failed) skip the wait. While nothing
// changes, the latest report is repeated every heartbeat (15 s by default),
// so the server can tell a machine that waits from one that died. A failed
// post is logged once and retried with the next interval; it never stops
// imaging. Close delivers the last report with a few bounded retries.
type Reporter struct {
	url       string
	client    *http.Client
	interval  time.Duration
	heartbeat time.Duration
	attempts  int
	timeout   time.Duration
	logf      func(format string, args ...any)
	onPanic   func(error)

	mu       sync.Mutex
	latest   Report
	pending  bool // latest has not been delivered
	seq      uint64
	lastPost time.Time
	closing  bool
	lastErr  error
	failing  bool // the last post failed
	tries    int  // posts of latest so far

	wake   chan struct{}
	done   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
}

// Option configures a Reporter.
type Option func(*Reporter)

// WithInterval sets the minimum time between two posts (default 2 s).
func WithInterval(d time.Duration) Option { return func(r *Reporter) { r.interval = d } }

// WithHeartbeat sets how often an unchanged, unfinished state is sent
// again (default 15 s; 0 never).
func WithHeartbeat(d time.Duration) Option { return func(r *Reporter) { r.heartbeat = d } }

// WithHTTPClient sets the client used for posting (default: one with a
// per-request timeout, see WithTimeout).
func WithHTTPClient(c *http.Client) Option { return func(r *Reporter) { r.client = c } }

// WithTimeout bounds each post (default 5 s).
func WithTimeout(d time.Duration) Option { return func(r *Reporter) { r.timeout = d } }

// WithFinalAttempts sets how many times Close tries to deliver the last
// report (default 5, with growing pauses from 250 ms).
func WithFinalAttempts(n int) Option { return func(r *Reporter) { r.attempts = max(1, n) } }

// WithLogf sets where delivery problems are logged (default log.Printf).
func WithLogf(f func(format string, args ...any)) Option { return func(r *Reporter) { r.logf = f } }

// WithOnPanic hands a panic of the Reporter's goroutine to f as an error
// instead of crashing the process (see recovered.Go).
func WithOnPanic(f func(error)) Option { return func(r *Reporter) { r.onPanic = f } }

// NewReporter starts a Reporter posting to url. An empty url gives a
// Reporter that drops everything (reporting switched off).
func NewReporter(url string, opts ...Option) *Reporter {
	r := &Reporter{
		url:       url,
		interval:  2 * time.Second,
		heartbeat: 15 * time.Second,
		attempts:  5,
		timeout:   5 * time.Second,
		logf:      log.Printf,
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	for _, o := range opts {
		o(r)
	}
	if r.client == nil {
		r.client = &http.Client{}
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	if url == "" {
		close(r.done)
		return r
	}
	recovered.Go("status reporter", r.onPanic, r.run)
	return r
}

// Update records rep as the client's current status. It fills Seq and, if
// zero, Time. It never blocks on the network; after Close it does nothing.
func (r *Reporter) Update(rep Report) {
	if r.url == "" {
		return
	}
	r.mu.Lock()
	if r.closing || (r.seq > 0 && sameProgress(rep, r.latest)) {
		r.mu.Unlock()
		return
	}
	r.seq++
	rep.Seq = r.seq
	if rep.Time.IsZero() {
		rep.Time = time.Now()
	}
	r.latest, r.pending, r.tries = rep, true, 0
	r.mu.Unlock()
	r.poke()
}

func (r *Reporter) poke() {
	select {
	case r.wake <- struct{}{}:
	default: // a wake-up is already queued
	}
}

// Close stops the Reporter after delivering the latest report, trying up
// to the configured number of attempts within ctx. It returns an error if
// that report was not delivered.
func (r *Reporter) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closing = true
	r.mu.Unlock()
	r.poke()
	select {
	case <-r.done:
	case <-ctx.Done():
		r.cancel()
		<-r.done
	}
	r.cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending {
		err := r.lastErr
		if err == nil {
			err = ctx.Err()
		}
		return fmt.Errorf("status %q (report %d) not delivered to %s: %w", r.latest.State, r.latest.Seq, r.url, err)
	}
	return nil
}

func (r *Reporter) run() {
	defer close(r.done)
	for {
		r.mu.Lock()
		pending, closing := r.pending, r.closing
		wait := time.Until(r.lastPost.Add(r.interval))
		if r.latest.State.Terminal() && !r.failing {
			wait = 0 // but a server that just failed gets its pause
		}
		beat := r.heartbeat > 0 && r.seq > 0 && !r.latest.State.Terminal()
		r.mu.Unlock()
		switch {
		case closing:
			r.flush()
			return
		case !pending:
			r.idle(beat)
			continue
		case wait > 0:
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-r.wake: // maybe a terminal state or Close: look again
				t.Stop()
			}
			continue
		}
		r.postLatest()
	}
}

// idle waits for an update or, if beat, for the heartbeat, which makes the
// latest report due again.
func (r *Reporter) idle(beat bool) {
	if !beat {
		<-r.wake
		return
	}
	t := time.NewTimer(r.heartbeat)
	defer t.Stop()
	select {
	case <-r.wake:
	case <-t.C:
		r.mu.Lock()
		if !r.pending && !r.closing {
			r.pending, r.tries = true, 0
		}
		r.mu.Unlock()
	}
}

// flush delivers the latest report, if any, with growing pauses. Posts the
// loop already made of the same report count as attempts, but flush always
// makes at least one.
func (r *Reporter) flush() {
	pause := 250 * time.Millisecond
	for i := 0; ; i++ {
		r.mu.Lock()
		pending, tries := r.pending, r.tries
		r.mu.Unlock()
		if !pending || (i > 0 && tries >= r.attempts) {
			return
		}
		if i > 0 {
			select {
			case <-time.After(pause):
			case <-r.ctx.Done():
				return
			}
			pause *= 2
		}
		r.postLatest()
		if r.ctx.Err() != nil {
			return
		}
	}
}

func (r *Reporter) postLatest() {
	r.mu.Lock()
	rep := r.latest
	r.lastPost = time.Now()
	r.tries++
	r.mu.Unlock()

	err := r.post(rep)

	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastErr = err
	if err != nil {
		if !r.failing || r.closing {
			r.logf("status: cannot report %q to the server (imaging goes on; will retry): %v", rep.State, err)
		}
		r.failing = true
		return
	}
	if r.failing {
		r.logf("status: reporting to %s works again", r.url)
		r.failing = false
	}
	if r.latest.Seq == rep.Seq {
		r.pending = false
	}
}

func (r *Reporter) post(rep Report) error {
	body, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("encoding report: %w", err)
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("server answered %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}
