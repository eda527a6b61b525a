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
	"testing/synctest"
	"time"

	"github.com/imgcast/imgcast/pkg/inventory"
)

// sink is a status server that records the reports it receives, in the
// order they arrive. fail, when set, decides per request (numbered from 1)
// whether to answer 500.
type sink struct {
	t       *testing.T
	mu      sync.Mutex
	got     []Report
	at      []time.Time // when each report arrived
	n       int
	fail    func(n int) bool
	arrived chan Report
}

func newSink(t *testing.T) *sink { return &sink{t: t, arrived: make(chan Report, 1000)} }

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var rep Report
	if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
		s.t.Errorf("server got a bad body: %v", err)
	}
	s.mu.Lock()
	s.n++
	fail := s.fail != nil && s.fail(s.n)
	if !fail {
		s.got = append(s.got, rep)
		s.at = append(s.at, time.Now())
	}
	s.mu.Unlock()
	if fail {
		http.Error(w, "database on fire", http.StatusInternalServerError)
		return
	}
	s.arrived <- rep
	w.WriteHeader(http.StatusNoContent)
}

// serve runs s as a real HTTP server on loopback and returns its URL.
func (s *sink) serve() string {
	srv := httptest.NewServer(s)
	s.t.Cleanup(srv.Close)
	return srv.URL
}

func (s *sink) reports() []Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Report(nil), s.got...)
}

func (s *sink) arrivals() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.at...)
}

func (s *sink) requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// inMemory is an HTTP client whose requests are served by h in the calling
// goroutine. Tests in a synctest bubble use it: a goroutine blocked on a
// real socket is not durably blocked, so the bubble's clock would not move.
func inMemory(h http.Handler) *http.Client {
	return &http.Client{Transport: handlerTransport{h}}
}

type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, req)
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	return rec.Result(), nil
}

// memURL is the URL reporters in a bubble post to; nothing listens there.
const memURL = "http://status.invalid/api/status"

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

// jobSteps are the reports an imaging job makes, in order (as pkg/imaging
// makes them), with progress reports inside each partition's step.
func jobSteps(mode string) []Report {
	inv := &inventory.Machine{
		NICs:        []inventory.NIC{{Name: "eth0", MAC: mac, Driver: "virtio_net"}},
		Disks:       []inventory.Disk{{Name: "vda", Path: "/dev/vda", SizeBytes: 80 << 20, Model: "QEMU HARDDISK"}},
		MemoryBytes: 256 << 20,
		DMI:         inventory.DMI{Vendor: "QEMU", Product: "Standard PC"},
	}
	reps := []Report{
		{State: Ready, Partitions: 2, Inventory: inv},
		{State: Writing, Partitions: 2}, // the partition table
	}
	for p := 1; p <= 2; p++ {
		state := Receiving
		if mode == "unicast" {
			state = Writing // unicast restores straight from HTTP
		} else {
			reps = append(reps, Report{State: Ready, Partition: p, Partitions: 2, Total: 100 << 20})
		}
		for mb := int64(1); mb <= 100; mb++ {
			reps = append(reps, Report{State: state, Partition: p, Partitions: 2, Bytes: mb << 20, Total: 100 << 20, WireRate: 1e8})
		}
	}
	reps = append(reps, Report{State: Verifying, Partitions: 2}, Report{State: Done, Partitions: 2})
	for i := range reps {
		reps[i].MAC = mac
	}
	return reps
}

// checkEveryStep checks that got holds every step of made (each change of
// state or partition) in order, starting with the ready report and its
// inventory and ending with the last report made.
func checkEveryStep(t *testing.T, made, got []Report) {
	t.Helper()
	if len(got) == 0 {
		t.Fatal("the server got no report")
	}
	if got[0].State != Ready || got[0].Partition != 0 || got[0].Inventory == nil || got[0].Inventory.DMI.Vendor != "QEMU" {
		t.Errorf("first report the server got: %s partition %d inventory %v; want ready with the inventory", got[0].State, got[0].Partition, got[0].Inventory)
	}
	var want []step
	for i, r := range made {
		if i == 0 || stepOf(r) != stepOf(made[i-1]) {
			want = append(want, stepOf(r))
		}
	}
	var seen []step
	for i, r := range got {
		if i > 0 && r.Seq <= got[i-1].Seq {
			t.Errorf("report %d (seq %d) arrived after report %d (seq %d)", i, r.Seq, i-1, got[i-1].Seq)
		}
		if i == 0 || stepOf(r) != stepOf(got[i-1]) {
			seen = append(seen, stepOf(r))
		}
	}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("steps the server saw:\n  %v\nwant every step in order:\n  %v", seen, want)
	}
	if last, final := got[len(got)-1], made[len(made)-1]; last.State != final.State || last.Seq != uint64(len(made)) {
		t.Errorf("last report %s seq %d, want %s seq %d", last.State, last.Seq, final.State, len(made))
	}
}

// Issue 13.2: the ready report, which carries the inventory, was replaced
// by the next state before it went out. Against a real HTTP server, with
// a job's reports made as fast as a unicast job makes them, every step
// arrives, ready first.
func TestReporterDeliversEveryStepToAnHTTPServer(t *testing.T) {
	for _, mode := range []string{"multicast", "unicast"} {
		for _, refuseFirst := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/refuse first post %v", mode, refuseFirst), func(t *testing.T) {
				s := newSink(t)
				if refuseFirst { // the server restarts just as the machine is ready
					s.fail = func(n int) bool { return n == 1 }
				}
				r := NewReporter(s.serve(), WithInterval(50*time.Millisecond), WithLogf((&logs{}).logf))
				made := jobSteps(mode)
				for _, rep := range made {
					r.Update(rep)
				}
				if err := r.Close(ctxTimeout(t, 10*time.Second)); err != nil {
					t.Fatal(err)
				}
				checkEveryStep(t, made, s.reports())
			})
		}
	}
}

// The same in a bubble, where the steps come within one interval of the
// ready report that was already delivered: each is still posted.
func TestReporterDeliversEveryStepWithinAnInterval(t *testing.T) {
	for _, mode := range []string{"multicast", "unicast"} {
		t.Run(mode, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newSink(t)
				r := NewReporter(memURL, WithHTTPClient(inMemory(s)), WithInterval(2*time.Second))
				made := jobSteps(mode)
				r.Update(made[0])
				synctest.Wait() // the ready report is delivered
				for _, rep := range made[1:] {
					r.Update(rep)
					time.Sleep(time.Millisecond)
				}
				if err := r.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
				checkEveryStep(t, made, s.reports())
			})
		})
	}
}

func TestReporterCoalescesProgressAndRateLimits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSink(t)
		const interval = 2 * time.Second
		r := NewReporter(memURL, WithHTTPClient(inMemory(s)), WithInterval(interval))
		r.Update(Report{MAC: mac, State: Ready})
		for i := 1; i <= 1000; i++ { // 10 s of progress
			r.Update(Report{MAC: mac, State: Receiving, Partition: 1, Bytes: int64(i) << 20, Total: 1000 << 20})
			time.Sleep(10 * time.Millisecond)
		}
		r.Update(Report{MAC: mac, State: Done, Partition: 1, Bytes: 1000 << 20, Total: 1000 << 20})
		if err := r.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		got := s.reports()
		// ready, the first receiving at once, then one per interval, done.
		if len(got) < 6 || len(got) > 8 {
			t.Errorf("server got %d reports, want 6..8 (progress coalesced)", len(got))
		}
		if got[0].State != Ready || got[1].State != Receiving || got[1].Seq != 2 || !got[1].Time.Equal(got[0].Time) {
			t.Errorf("first two reports %+v, %+v: want ready, then the first progress at once", got[0], got[1])
		}
		last := got[len(got)-1]
		if last.State != Done || last.Seq != 1002 || last.Bytes != 1000<<20 {
			t.Errorf("last report = %+v, want done with seq 1002", last)
		}
		at := s.arrivals()
		for i := 2; i < len(got)-1; i++ {
			if gap := at[i].Sub(at[i-1]); gap < interval {
				t.Errorf("progress reports %d and %d posted %v apart, closer than the interval", i-1, i, gap)
			}
		}
	})
}

func TestReporterSkipsUnchangedReports(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSink(t)
		r := NewReporter(memURL, WithHTTPClient(inMemory(s)), WithInterval(10*time.Millisecond), WithHeartbeat(0))
		for range 20 {
			r.Update(Report{MAC: mac, State: Ready, IP: "10.0.0.5"})
			time.Sleep(20 * time.Millisecond)
		}
		if err := r.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := s.reports(); len(got) != 1 {
			t.Fatalf("server got %d reports of an unchanged state, want 1", len(got))
		}
	})
}

func TestReporterTerminalStateSkipsTheWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSink(t)
		r := NewReporter(memURL, WithHTTPClient(inMemory(s)), WithInterval(time.Hour))
		defer r.Close(context.Background())
		start := time.Now()
		r.Update(Report{MAC: mac, State: Ready})
		r.Update(Report{MAC: mac, State: Receiving, Partition: 1, Bytes: 1})
		synctest.Wait()
		r.Update(Report{MAC: mac, State: Receiving, Partition: 1, Bytes: 2}) // due in an hour
		r.Update(Report{MAC: mac, State: Failed, Partition: 1, Error: "sender vanished"})
		synctest.Wait()
		got := s.reports()
		if len(got) != 4 || got[3].State != Failed || got[3].Error != "sender vanished" || got[2].Bytes != 2 {
			t.Fatalf("got %+v, want ready, receiving, the last progress and failed", got)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("failed report went out after %v, want at once", d)
		}
	})
}

func TestReporterNeverBlocksOnASlowServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		hit := make(chan struct{}, 1)
		hang := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case hit <- struct{}{}:
			default:
			}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		defer close(release)
		r := NewReporter(memURL, WithHTTPClient(inMemory(hang)), WithInterval(time.Millisecond),
			WithTimeout(time.Hour), WithFinalAttempts(2), WithLogf((&logs{}).logf))
		r.Update(Report{MAC: mac, State: Ready})
		<-hit // a post is now stuck in the server
		// Were Update to wait for the network, the bubble would deadlock
		// here and synctest would fail the test.
		for i := range 100000 {
			r.Update(Report{MAC: mac, State: Receiving, Bytes: int64(i)})
		}
		r.Update(Report{MAC: mac, State: Done})
		r.mu.Lock()
		queued := len(r.queue)
		r.mu.Unlock()
		if queued != 3 {
			t.Errorf("%d reports queued, want 3 (ready in flight, the last progress, done)", queued)
		}

		start := time.Now()
		err := r.Close(ctxTimeout(t, 300*time.Millisecond))
		if d := time.Since(start); d != 300*time.Millisecond {
			t.Errorf("Close took %v, want it bounded by its context (300ms)", d)
		}
		if err == nil || !strings.Contains(err.Error(), `"done"`) || !strings.Contains(err.Error(), "not delivered") {
			t.Errorf("Close = %v, want a not-delivered error naming the done state", err)
		}
	})
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
			synctest.Test(t, func(t *testing.T) {
				s := newSink(t)
				s.fail = func(n int) bool { return n <= tt.failures }
				l := &logs{}
				r := NewReporter(memURL, WithHTTPClient(inMemory(s)), WithInterval(time.Hour), WithFinalAttempts(tt.attempts), WithLogf(l.logf))
				r.Update(Report{MAC: mac, State: Done})
				start := time.Now()
				err := r.Close(context.Background())
				if (err != nil) != tt.wantErr {
					t.Fatalf("Close = %v, wantErr %v", err, tt.wantErr)
				}
				if got := s.requests(); got != tt.wantReqs {
					t.Errorf("server saw %d requests, want %d", got, tt.wantReqs)
				}
				// Pauses of 250 ms, 500 ms, …: the server is not hammered.
				if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
					t.Errorf("Close took %v; want growing pauses between its attempts", d)
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
		})
	}
}

func TestReporterLogsAnOutageOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSink(t)
		var mu sync.Mutex
		down := true
		s.fail = func(int) bool { mu.Lock(); defer mu.Unlock(); return down }
		l := &logs{}
		r := NewReporter(memURL, WithHTTPClient(inMemory(s)), WithInterval(2*time.Second), WithLogf(l.logf))
		for i := range 40 {
			r.Update(Report{MAC: mac, State: Receiving, Bytes: int64(i)})
			time.Sleep(time.Second)
		}
		mu.Lock()
		down = false
		mu.Unlock()
		r.Update(Report{MAC: mac, State: Done})
		if err := r.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		// One attempt per interval during the 40 s outage.
		if n := s.requests(); n < 21 || n > 23 {
			t.Errorf("%d requests in a 40 s outage at a 2 s interval, want ~21", n)
		}
		text := l.String()
		if n := strings.Count(text, "cannot report"); n != 1 {
			t.Errorf("outage logged %d times, want once:\n%s", n, text)
		}
		if !strings.Contains(text, "works again") {
			t.Errorf("recovery not logged:\n%s", text)
		}
		if got := s.reports(); len(got) != 2 || got[0].State != Receiving || got[1].State != Done {
			t.Errorf("after the outage the server got %+v, want the last progress and done", got)
		}
	})
}

// While the server is down the queue of undelivered steps stays bounded,
// and keeps the first report (ready, with the inventory).
func TestReporterQueueIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSink(t)
		var mu sync.Mutex
		down := true
		s.fail = func(int) bool { mu.Lock(); defer mu.Unlock(); return down }
		r := NewReporter(memURL, WithHTTPClient(inMemory(s)), WithInterval(2*time.Second), WithLogf((&logs{}).logf))
		r.Update(Report{MAC: mac, State: Ready, Inventory: &inventory.Machine{MemoryBytes: 1}})
		for p := 1; p <= 1000; p++ {
			r.Update(Report{MAC: mac, State: Receiving, Partition: p})
		}
		r.mu.Lock()
		queued := len(r.queue)
		r.mu.Unlock()
		if queued != maxQueue {
			t.Errorf("%d reports queued, want the bound %d", queued, maxQueue)
		}
		mu.Lock()
		down = false
		mu.Unlock()
		if err := r.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		got := s.reports()
		if len(got) != maxQueue || got[0].Inventory == nil || got[1].Partition != 1000-maxQueue+2 || got[len(got)-1].Partition != 1000 {
			t.Errorf("delivered %d reports, first %+v, second partition %d, last partition %d", len(got), got[0], got[1].Partition, got[len(got)-1].Partition)
		}
	})
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
	synctest.Test(t, func(t *testing.T) {
		s := newSink(t)
		s.fail = func(int) bool { return true }
		r := NewReporter(memURL, WithHTTPClient(inMemory(s)), WithInterval(2*time.Second), WithLogf((&logs{}).logf))
		r.Update(Report{MAC: mac, State: Failed, Error: "x"})
		time.Sleep(9 * time.Second)
		if n := s.requests(); n != 5 { // at 0, 2, 4, 6 and 8 s
			t.Errorf("%d posts in 9 s at a 2 s interval, want 5", n)
		}
		_ = r.Close(ctxTimeout(t, 10*time.Millisecond))
	})
}

func TestReporterHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSink(t)
		r := NewReporter(memURL, WithHTTPClient(inMemory(s)), WithInterval(2*time.Second), WithHeartbeat(15*time.Second))
		r.Update(Report{MAC: mac, State: Ready})
		time.Sleep(61 * time.Second)
		got := s.reports()
		if len(got) != 5 { // at 0, 15, 30, 45 and 60 s
			t.Errorf("%d posts of an unchanged ready state in 61 s with a 15 s heartbeat, want 5", len(got))
		}
		for _, rep := range got {
			if rep.Seq != 1 || rep.State != Ready {
				t.Errorf("heartbeat sent %+v, want the ready report unchanged", rep)
			}
		}
		r.Update(Report{MAC: mac, State: Done})
		time.Sleep(5 * time.Minute)
		if err := r.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		after := s.reports()[len(got):]
		if len(after) != 1 || after[0].State != Done {
			t.Errorf("after done the server got %+v; want done once: a finished job has no heartbeat", after)
		}
	})
}
