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
// Update never blocks: it records the report and returns; a goroutine
// posts it. Every step the client passes through — a change of state or
// of partition — reaches the server at least once and in order: a report
// that starts a new step is queued behind the undelivered ones and sent
// without waiting. Progress within a step is coalesced: only the newest
// report of the step is kept, and it is posted at most once per interval
// (2 s by default) after the step's previous post. While nothing changes,
// the latest report is repeated every heartbeat (15 s by default), so the
// server can tell a machine that waits from one that died. A failed post
// is logged once and retried after the interval; it never stops imaging.
// Close delivers what is still queued with a few bounded retries.
type Reporter struct {
	url       string
	client    *http.Client
	interval  time.Duration
	heartbeat time.Duration
	attempts  int
	timeout   time.Duration
	logf      func(format string, args ...any)
	onPanic   func(error)

	mu sync.Mutex
	// queue holds the reports not delivered yet, oldest first; each is a
	// different step from the one before it, and the last is the newest
	// report made.
	queue    []Report
	latest   Report // the newest report made
	sent     step   // the step of the last delivered report
	seq      uint64
	lastPost time.Time
	closing  bool
	lastErr  error
	failing  bool // the last post failed
	tries    int  // failed posts in a row

	wake   chan struct{}
	done   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
}

// maxQueue bounds the undelivered steps kept while the server is
// unreachable. A job has a handful of steps per partition; beyond the
// bound the oldest are dropped, except the first (the ready report with
// the machine's inventory).
const maxQueue = 64

// step is what makes a report a new step rather than progress: its state
// and the partition it is about.
type step struct {
	state     State
	partition int
}

func stepOf(r Report) step { return step{r.State, r.Partition} }

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
	r.latest = rep
	r.enqueue(rep)
	r.mu.Unlock()
	r.poke()
}

// enqueue adds rep to the queue: it replaces the last queued report when
// both are of the same step (keeping what only that one carried, such as
// the inventory), else it is appended. r.mu is held.
func (r *Reporter) enqueue(rep Report) {
	if n := len(r.queue); n > 0 && stepOf(r.queue[n-1]) == stepOf(rep) {
		prev := r.queue[n-1]
		if rep.Inventory == nil {
			rep.Inventory = prev.Inventory
		}
		if rep.MulticastCheck == nil {
			rep.MulticastCheck = prev.MulticastCheck
		}
		r.queue[n-1] = rep
		return
	}
	r.queue = append(r.queue, rep)
	if len(r.queue) > maxQueue {
		r.queue = append(r.queue[:1], r.queue[2:]...)
	}
}

func (r *Reporter) poke() {
	select {
	case r.wake <- struct{}{}:
	default: // a wake-up is already queued
	}
}

// Close stops the Reporter after delivering the queued reports, giving up
// after the configured number of failed attempts in a row or when ctx
// ends. It returns an error if a report was left undelivered.
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
	if len(r.queue) > 0 {
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
		closing, pending := r.closing, len(r.queue) > 0
		var wait time.Duration
		if pending {
			wait = r.wait(r.queue[0])
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
			case <-r.wake: // maybe a new step or Close: look again
				t.Stop()
			}
			continue
		}
		r.postNext()
	}
}

// wait is how long the head of the queue must wait before it is posted: a
// new step goes at once, and so does the last progress of a step that a
// newer one follows; progress of the step last delivered waits for the
// interval — and so does everything while the server is failing. r.mu is
// held.
func (r *Reporter) wait(head Report) time.Duration {
	if !r.failing && (len(r.queue) > 1 || stepOf(head) != r.sent) {
		return 0
	}
	return time.Until(r.lastPost.Add(r.interval))
}

// idle waits for an update or, if beat, for the heartbeat, which queues
// the latest report again.
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
		if len(r.queue) == 0 && !r.closing {
			r.queue = append(r.queue, r.latest)
			r.tries = 0
		}
		r.mu.Unlock()
	}
}

// flush delivers the queue in order, with growing pauses after a failure.
// It gives up after the configured number of failed attempts in a row
// (posts the loop made count) or when the context ends, but always makes
// at least one attempt.
func (r *Reporter) flush() {
	pause := 250 * time.Millisecond
	for i := 0; ; i++ {
		r.mu.Lock()
		pending, failed, tries := len(r.queue) > 0, r.failing, r.tries
		r.mu.Unlock()
		if !pending || (i > 0 && tries >= r.attempts) {
			return
		}
		if failed && i > 0 {
			select {
			case <-time.After(pause):
			case <-r.ctx.Done():
				return
			}
			pause *= 2
		}
		r.postNext()
		if r.ctx.Err() != nil {
			return
		}
	}
}

// postNext posts the head of the queue and, once it is delivered, removes
// it — unless a newer report of the same step replaced it meanwhile.
func (r *Reporter) postNext() {
	r.mu.Lock()
	rep := r.queue[0]
	r.lastPost = time.Now()
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
		r.tries++
		return
	}
	if r.failing {
		r.logf("status: reporting to %s works again", r.url)
		r.failing = false
	}
	r.tries = 0
	r.sent = stepOf(rep)
	if len(r.queue) > 0 && r.queue[0].Seq == rep.Seq {
		r.queue = r.queue[1:]
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
