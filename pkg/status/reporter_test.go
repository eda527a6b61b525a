package status

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// sink is a test server that records the reports it receives. fail, when
// set, decides per request (numbered from 1) whether to answer 500.
type sink struct {
	mu      sync.Mutex
	got     []Report
	n       int
	fail    func(n int) bool
	arrived chan Report
}

func newSink(t *testing.T) (*sink, *httptest.Server) {
	s := &sink{arrived: make(chan Report, 1000)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rep Report
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			t.Errorf("server got a bad body: %v", err)
		}
		s.mu.Lock()
		s.n++
		fail := s.fail != nil && s.fail(s.n)
		if !fail {
			s.got = append(s.got, rep)
		}
		s.mu.Unlock()
		if fail {
			http.Error(w, "database on fire", http.StatusInternalServerError)
			return
		}
		s.arrived <- rep
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	return s, srv
}

func (s *sink) reports() []Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Report(nil), s.got...)
}

func (s *sink) requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

const mac = "52:54:00:12:34:56"

func TestReporterCoalescesAndRateLimits(t *testing.T) {
	s, srv := newSink(t)
	r := NewReporter(srv.URL, WithInterval(200*time.Millisecond))
	r.Update(Report{MAC: mac, State: Ready})
	<-s.arrived // the first report goes out at once
	for i := 1; i <= 200; i++ {
		r.Update(Report{MAC: mac, State: Receiving, Partition: 1, Bytes: int64(i) << 20, Total: 200 << 20})
		time.Sleep(time.Millisecond)
	}
	r.Update(Report{MAC: mac, State: Done, Partition: 1, Bytes: 200 << 20, Total: 200 << 20})
	if err := r.Close(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	got := s.reports()
	// ~200 ms of updates at one post per 200 ms: a handful of posts, not 202.
	if len(got) < 2 || len(got) > 6 {
		t.Fatalf("server got %d reports, want 2..6 (coalesced)", len(got))
	}
	last := got[len(got)-1]
	if last.State != Done || last.Seq != 202 || last.Bytes != 200<<20 {
		t.Errorf("last report = %+v, want done with seq 202", last)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Errorf("reports out of order: seq %d after %d", got[i].Seq, got[i-1].Seq)
		}
		if gap := got[i].Time.Sub(got[i-1].Time); got[i].State != Done && gap < 150*time.Millisecond {
			t.Errorf("reports %d and %d made %v apart, closer than the interval", i-1, i, gap)
		}
	}
	if got[0].Time.IsZero() || got[0].MAC != mac {
		t.Errorf("first report = %+v", got[0])
	}
}

func TestReporterSkipsUnchangedReports(t *testing.T) {
	s, srv := newSink(t)
	r := NewReporter(srv.URL, WithInterval(10*time.Millisecond))
	for range 20 {
		r.Update(Report{MAC: mac, State: Ready, IP: "10.0.0.5"})
		time.Sleep(2 * time.Millisecond)
	}
	if err := r.Close(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := s.reports(); len(got) != 1 {
		t.Fatalf("server got %d reports of an unchanged state, want 1", len(got))
	}
}

func TestReporterTerminalStateSkipsTheWait(t *testing.T) {
	s, srv := newSink(t)
	r := NewReporter(srv.URL, WithInterval(time.Hour))
	defer r.Close(ctxTimeout(t, time.Second))
	r.Update(Report{MAC: mac, State: Ready})
	<-s.arrived
	r.Update(Report{MAC: mac, State: Receiving, Partition: 1})
	r.Update(Report{MAC: mac, State: Failed, Partition: 1, Error: "sender vanished"})
	select {
	case rep := <-s.arrived:
		if rep.State != Failed || rep.Error != "sender vanished" {
			t.Fatalf("got %+v, want the failed report (receiving coalesced away)", rep)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("failed report waited for the hour-long interval")
	}
}

func TestReporterNeverBlocksOnASlowServer(t *testing.T) {
	release := make(chan struct{})
	var hits sync.WaitGroup
	hits.Add(1)
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(hits.Done)
		<-release
	}))
	defer srv.Close()
	defer close(release)
	l := &logs{}
	r := NewReporter(srv.URL, WithInterval(time.Millisecond), WithTimeout(time.Hour), WithFinalAttempts(2), WithLogf(l.logf))
	r.Update(Report{MAC: mac, State: Ready})
	hits.Wait() // a post is now stuck in the server

	start := time.Now()
	for i := range 100000 {
		r.Update(Report{MAC: mac, State: Receiving, Bytes: int64(i)})
	}
	r.Update(Report{MAC: mac, State: Done})
	if d := time.Since(start); d > time.Second {
		t.Errorf("100000 updates took %v while the server hung: Update blocks", d)
	}

	start = time.Now()
	err := r.Close(ctxTimeout(t, 300*time.Millisecond))
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v, want it bounded by its context", d)
	}
	if err == nil || !strings.Contains(err.Error(), `"done"`) || !strings.Contains(err.Error(), "not delivered") {
		t.Errorf("Close = %v, want a not-delivered error naming the done state", err)
	}
}

func TestReporterRetriesTheFinalReport(t *testing.T) {
	for _, tt := range []struct {
		name     string
		failures int // requests that fail before the server recovers
		attempts int
		wantErr  bool
		wantReqs int
	}{
		{name: "server recovers", failures: 2, attempts: 4, wantReqs: 3},
		{name: "server stays down", failures: 1000, attempts: 3, wantErr: true, wantReqs: 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, srv := newSink(t)
			s.fail = func(n int) bool { return n <= tt.failures }
			l := &logs{}
			r := NewReporter(srv.URL, WithInterval(time.Hour), WithFinalAttempts(tt.attempts), WithLogf(l.logf))
			// Made and closed before the loop posts: Close alone delivers.
			r.Update(Report{MAC: mac, State: Done})
			err := r.Close(ctxTimeout(t, 10*time.Second))
			if (err != nil) != tt.wantErr {
				t.Fatalf("Close = %v, wantErr %v", err, tt.wantErr)
			}
			if got := s.requests(); got != tt.wantReqs {
				t.Errorf("server saw %d requests, want %d", got, tt.wantReqs)
			}
			if !strings.Contains(l.String(), "database on fire") {
				t.Errorf("the server's complaint was not logged:\n%s", l)
			}
			if !tt.wantErr {
				if got := s.reports(); len(got) != 1 || got[0].State != Done {
					t.Errorf("delivered %+v, want the done report", got)
				}
			}
		})
	}
}

func TestReporterLogsAnOutageOnce(t *testing.T) {
	s, srv := newSink(t)
	down := true
	var mu sync.Mutex
	s.fail = func(int) bool { mu.Lock(); defer mu.Unlock(); return down }
	l := &logs{}
	r := NewReporter(srv.URL, WithInterval(5*time.Millisecond), WithLogf(l.logf))
	for i := range 40 {
		r.Update(Report{MAC: mac, State: Receiving, Bytes: int64(i)})
		time.Sleep(3 * time.Millisecond)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	r.Update(Report{MAC: mac, State: Done})
	if err := r.Close(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if s.requests() < 5 {
		t.Fatalf("only %d requests: the reporter did not retry during the outage", s.requests())
	}
	text := l.String()
	if n := strings.Count(text, "cannot report"); n != 1 {
		t.Errorf("outage logged %d times, want once:\n%s", n, text)
	}
	if !strings.Contains(text, "works again") {
		t.Errorf("recovery not logged:\n%s", text)
	}
}

func TestReporterUnreachableServer(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there any more
	l := &logs{}
	r := NewReporter(url, WithFinalAttempts(2), WithLogf(l.logf))
	r.Update(Report{MAC: mac, State: Failed, Error: "disk too small"})
	err := r.Close(ctxTimeout(t, 5*time.Second))
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Close = %v, want connection refused", err)
	}
}

func TestReporterWithoutURLDoesNothing(t *testing.T) {
	r := NewReporter("")
	r.Update(Report{MAC: mac, State: Done})
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestReporterDoesNotHammerAFailingServerWithATerminalState(t *testing.T) {
	s, srv := newSink(t)
	s.fail = func(int) bool { return true }
	r := NewReporter(srv.URL, WithInterval(100*time.Millisecond), WithLogf((&logs{}).logf))
	r.Update(Report{MAC: mac, State: Failed, Error: "x"})
	time.Sleep(450 * time.Millisecond)
	if n := s.requests(); n < 2 || n > 6 {
		t.Errorf("%d posts in 450 ms at a 100 ms interval, want 2..6", n)
	}
	_ = r.Close(ctxTimeout(t, 10*time.Millisecond))
}

func TestReporterHeartbeat(t *testing.T) {
	s, srv := newSink(t)
	r := NewReporter(srv.URL, WithInterval(10*time.Millisecond), WithHeartbeat(50*time.Millisecond))
	r.Update(Report{MAC: mac, State: Ready})
	time.Sleep(320 * time.Millisecond)
	n := len(s.reports())
	if n < 3 || n > 8 {
		t.Errorf("%d posts of an unchanged ready state in 320 ms with a 50 ms heartbeat, want 3..8", n)
	}
	for _, rep := range s.reports() {
		if rep.Seq != 1 || rep.State != Ready {
			t.Errorf("heartbeat sent %+v, want the ready report unchanged", rep)
		}
	}
	r.Update(Report{MAC: mac, State: Done})
	time.Sleep(200 * time.Millisecond)
	if err := r.Close(ctxTimeout(t, time.Second)); err != nil {
		t.Fatal(err)
	}
	got := s.reports()
	if last := got[len(got)-1]; last.State != Done || len(got) > n+2 {
		t.Errorf("after done: %d more posts, last %+v; a finished job has no heartbeat", len(got)-n, last)
	}
}
