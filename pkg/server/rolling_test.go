package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/imgcast/imgcast/pkg/status"
)

// fakeSessions is a session manager whose sessions start their transfer at
// once and end when the test says so.
type fakeSessions struct {
	*sessions
	mu     sync.Mutex
	end    map[int]chan struct{} // closed to end session id
	config map[int]SenderConfig  // what each session was started with
}

func newFakeSessions(rolling bool, maxWait time.Duration) *fakeSessions {
	f := &fakeSessions{end: map[int]chan struct{}{}, config: map[int]SenderConfig{}}
	cfg := SenderConfig{PortBase: 9000, Clients: 2, MaxWait: maxWait}
	streams := []ImageStream{{Partition: 1, ID: "d1p1.img"}, {Partition: 2, ID: "d1p2.img"}}
	f.sessions = newSessions("img", ModeMulticast, cfg, streams, rolling, 100)
	f.run = func(ctx context.Context, st *session) {
		end := f.ender(st.s.ID)
		f.mu.Lock()
		f.config[st.s.ID] = st.config
		f.mu.Unlock()
		st.waiting(0, st.config.Clients)
		st.started(0)
		select {
		case <-end:
			st.finished(0, status.StreamDone, "exit status 0", "")
			st.started(1)
			st.finished(1, status.StreamDone, "exit status 0", "")
		case <-ctx.Done():
			st.finished(0, status.StreamFailed, "", "stopped")
		}
	}
	return f
}

func (f *fakeSessions) ender(id int) chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.end[id] == nil {
		f.end[id] = make(chan struct{})
	}
	return f.end[id]
}

// finish ends session id and waits until nothing moves any more.
func (f *fakeSessions) finish(id int) {
	close(f.ender(id))
	synctest.Wait()
}

func (f *fakeSessions) started(id int) (SenderConfig, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.config[id]
	return c, ok
}

// ask is GET /api/session?mac= for machine n.
func (f *fakeSessions) ask(t *testing.T, n int) status.Session {
	t.Helper()
	s, ok := f.forClient(fmt.Sprintf("52:54:00:00:00:%02x", n))
	if !ok {
		t.Fatalf("machine %d could not be queued", n)
	}
	synctest.Wait()
	return s
}

func (f *fakeSessions) runLoop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.loop(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	synctest.Wait()
}

func TestRollingSessions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeSessions(true, 0)
		f.runLoop(t)
		if s := f.current(); s.ID != 1 || s.Phase != status.Sending || s.Joinable {
			t.Fatalf("session 1 started at once (fake): %+v", s)
		}
		// machine 1 came too late for session 1: it is queued for 2.
		s := f.ask(t, 1)
		if s.ID != 2 || s.Phase != status.Queued || s.Joinable || s.PortBase != 9004 || s.Streams[1].Port != 9006 {
			t.Fatalf("late machine got %+v, want session 2 queued on port base 9004", s)
		}
		if err := s.CanJoin(); err == nil || !strings.Contains(err.Error(), "wait for it") {
			t.Errorf("CanJoin of a queued session = %v", err)
		}
		f.ask(t, 2)
		s = f.ask(t, 2) // asking again changes nothing
		if fmt.Sprint(s.Waiting) != "[52:54:00:00:00:01 52:54:00:00:00:02]" || !strings.Contains(s.Message, "starts when session 1 ends") {
			t.Errorf("queued session: waiting %v, message %q", s.Waiting, s.Message)
		}
		if _, ok := f.started(2); ok {
			t.Fatal("session 2 started while session 1 runs (no --max-wait)")
		}
		all := f.all()
		if len(all) != 2 || all[0].ID != 1 || all[1].ID != 2 || all[1].Phase != status.Queued {
			t.Errorf("all sessions = %+v", all)
		}

		f.finish(1)
		cfg, ok := f.started(2)
		if !ok || cfg.PortBase != 9004 || cfg.Clients != 2 {
			t.Fatalf("after session 1 ended: session 2 started %v with %+v, want port base 9004 for 2 receivers", ok, cfg)
		}
		// Session 2 is sending (the fake starts at once); a third machine
		// is queued for session 3, on the next port base.
		if s := f.ask(t, 3); s.ID != 3 || s.Phase != status.Queued || s.PortBase != 9008 {
			t.Errorf("machine 3 got %+v, want session 3 on 9008", s)
		}
		f.finish(2)
		if cfg, ok := f.started(3); !ok || cfg.Clients != 1 || cfg.PortBase != 9008 {
			t.Errorf("session 3: %v %+v", ok, cfg)
		}
	})
}

func TestRollingSessionJoinableWhileItWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeSessions(true, 0)
		// Not running the loop: session 1 has not started its transfer.
		if s := f.ask(t, 1); s.ID != 1 || !s.Joinable || s.Phase != status.Waiting {
			t.Fatalf("before the transfer: %+v", s)
		}
		if f.next != nil {
			t.Error("a machine that can join was queued")
		}
	})
}

func TestRollingSessionStartsAfterMaxWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeSessions(true, time.Minute)
		f.runLoop(t)
		start := time.Now()
		s := f.ask(t, 1)
		if !strings.Contains(s.Message, "or at") {
			t.Errorf("message %q does not say when --max-wait starts it", s.Message)
		}
		time.Sleep(30 * time.Second)
		f.ask(t, 2)
		time.Sleep(29 * time.Second)
		synctest.Wait()
		if _, ok := f.started(2); ok {
			t.Fatal("session 2 started before --max-wait")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		cfg, ok := f.started(2)
		if !ok || cfg.Clients != 2 {
			t.Fatalf("session 2 not started %v after the first machine was queued (--max-wait 1m), session 1 still running: %v %+v", time.Since(start), ok, cfg)
		}
		if all := f.all(); all[0].Phase != status.Sending || all[1].ID != 2 {
			t.Errorf("sessions: %+v", all)
		}
	})
}

// A queued machine that stops asking (switched off) is not waited for.
func TestRollingSessionForgetsMachinesThatStopAsking(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeSessions(true, 0)
		f.runLoop(t)
		f.ask(t, 1)
		for range 4 { // machine 2 asks every 30 s, as a waiting client does
			f.ask(t, 2)
			time.Sleep(30 * time.Second)
		}
		synctest.Wait()
		if s := f.ask(t, 2); fmt.Sprint(s.Waiting) != "[52:54:00:00:00:02]" {
			t.Errorf("waiting %v, want machine 1 forgotten after 90 s", s.Waiting)
		}
		f.finish(1)
		if cfg, ok := f.started(2); !ok || cfg.Clients != 1 {
			t.Errorf("session 2: %v %+v, want one receiver", ok, cfg)
		}
	})
}

func TestRollingSessionWithNobodyLeftIsNotStarted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeSessions(true, 0)
		f.runLoop(t)
		f.ask(t, 1)
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		f.finish(1)
		if _, ok := f.started(2); ok || f.next != nil {
			t.Fatal("a session was started for nobody")
		}
		if s := f.ask(t, 2); s.ID != 2 || s.Phase != status.Queued || !strings.Contains(s.Message, "it starts now") {
			t.Errorf("the next machine got %+v, want session 2, starting now", s)
		}
		if cfg, ok := f.started(2); !ok || cfg.Clients != 1 {
			t.Errorf("session 2: %v %+v, want it started for the one machine", ok, cfg)
		}
	})
}

func TestWithoutRollingNothingIsQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeSessions(false, 0)
		f.runLoop(t)
		s := f.ask(t, 1)
		if s.ID != 1 || s.Joinable || f.next != nil {
			t.Fatalf("got %+v", s)
		}
		if err := s.CanJoin(); err == nil || !strings.Contains(err.Error(), "booted too late") {
			t.Errorf("CanJoin = %v", err)
		}
	})
}

func TestRollingPortBases(t *testing.T) {
	for _, tt := range []struct {
		portBase, streams int
		want              []int // port bases of sessions 1, 2, …
	}{
		{9000, 2, []int{9000, 9004, 9008}},
		{9000, 1, []int{9000, 9002, 9004}},
		// 16 slots at most, then again from the first.
		{9000, 3, []int{9000, 9006, 9012, 9018, 9024, 9030, 9036, 9042, 9048, 9054, 9060, 9066, 9072, 9078, 9084, 9090, 9000}},
		// As many as fit below 65536.
		{65524, 2, []int{65524, 65528, 65532, 65524}},
	} {
		m := newSessions("img", ModeMulticast, SenderConfig{PortBase: tt.portBase}, make([]ImageStream, tt.streams), true, 10)
		var got []int
		for id := 1; id <= len(tt.want); id++ {
			got = append(got, m.portBase(id))
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("port base %d, %d streams: %v, want %v", tt.portBase, tt.streams, got, tt.want)
		}
	}
}

func TestRollingQueueIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeSessions(true, 0)
		f.maxMachines = 3
		f.runLoop(t)
		for n := range 3 {
			f.ask(t, n)
		}
		if _, ok := f.forClient("52:54:00:00:00:ff"); ok {
			t.Error("a fourth machine was queued beyond the bound")
		}
		if _, ok := f.forClient("52:54:00:00:00:01"); !ok {
			t.Error("a queued machine could not ask again")
		}
	})
}

// url is path on the fixture's server.
func (f *fixture) url(path string) string { return "http://" + f.addr + path }

// A machine that asks after session 1 has started waits for session 2,
// which starts on its own port base as soon as session 1 ends, and
// receives every partition byte for byte — through the real HTTP server
// and status.WaitForSession, with a fake udp-sender.
func TestLateMachineIsImagedInTheNextSession(t *testing.T) {
	out := t.TempDir()
	p1, p2 := randomBytes(t, 100000), randomBytes(t, 50000)
	f := start(t, map[string][]byte{"d1p1.img": p1, "d1p2.img": p2}, fmt.Sprintf(`
echo "$args" > %[1]s/args.$port
case $port in
9000) echo "New connection from 10.0.0.1  (#0) 00000009" >&2; echo "Starting transfer: 00000009" >&2
      while [ ! -e %[1]s/release ]; do sleep 0.02; done ;;
9004) while [ ! -e %[1]s/joined ]; do sleep 0.02; done
      echo "New connection from 10.0.0.2  (#0) 00000009" >&2; echo "Starting transfer: 00000009" >&2 ;;
*)    echo "New connection from 10.0.0.$port  (#0) 00000009" >&2; echo "Starting transfer: 00000009" >&2 ;;
esac
cat > %[1]s/$port`, out), func(c *Config) { c.Rolling = true })
	waitFor(t, "session 1 to start sending", func() bool { return f.srv.Session().Phase == status.Sending })

	const late = "52:54:00:00:00:02"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	said := &lockedBuffer{}
	logf := func(format string, args ...any) { fmt.Fprintf(said, format+"\n", args...) }
	type result struct {
		s   status.Session
		err error
	}
	got := make(chan result, 1)
	go func() {
		s, err := status.WaitForSession(ctx, &http.Client{}, f.url("/api/session"), late, logf)
		got <- result{s, err}
	}()
	if resp, body := postReport(t, "http://"+f.addr, status.Report{MAC: late, State: status.Ready}); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST: %s %s", resp.Status, body)
	}
	waitFor(t, "the late machine to be queued", func() bool {
		all := f.srv.Sessions()
		return len(all) == 2 && all[1].Phase == status.Queued && len(all[1].Waiting) == 1 && all[1].Waiting[0] == late
	})
	var sessions []status.Session
	if _, body := do(t, "GET", f.url("/api/sessions"), ""); json.Unmarshal([]byte(body), &sessions) != nil || len(sessions) != 2 || sessions[1].ID != 2 {
		t.Errorf("/api/sessions = %s", body)
	}
	if c := f.srv.Clients(); len(c) != 1 || c[0].Session != 2 {
		t.Errorf("clients = %+v, want the late machine in session 2", c)
	}
	select {
	case r := <-got:
		t.Fatalf("WaitForSession returned while session 1 runs: %+v, %v", r.s, r.err)
	default:
	}
	waitFor(t, "the client to say what it waits for", func() bool {
		return strings.Contains(said.String(), "waiting for session 2 (port base 9004): session 2 on port base 9004, for 1 machine(s) that came too late for session 1: it starts when session 1 ends")
	})

	writeFiles(t, out, map[string][]byte{"release": nil}) // session 1 ends
	var r result
	select {
	case r = <-got:
	case <-ctx.Done():
		t.Fatal("WaitForSession did not return once session 2 opened")
	}
	if r.err != nil || r.s.ID != 2 || !r.s.Joinable || r.s.PortBase != 9004 || r.s.Streams[0].Port != 9004 || r.s.Streams[1].Port != 9006 {
		t.Fatalf("WaitForSession = %+v, %v; want session 2, joinable, on 9004 and 9006", r.s, r.err)
	}
	writeFiles(t, out, map[string][]byte{"joined": nil}) // the receiver connects
	waitFor(t, "session 2 to finish", func() bool {
		all := f.srv.Sessions()
		return len(all) == 2 && all[1].Phase == status.Finished
	})
	for port, want := range map[string][]byte{
		"9000": withHeader(t, "d1p1.img", p1), "9002": withHeader(t, "d1p2.img", p2),
		"9004": withHeader(t, "d1p1.img", p1), "9006": withHeader(t, "d1p2.img", p2),
	} {
		if b, err := os.ReadFile(filepath.Join(out, port)); err != nil || !bytes.Equal(b, want) {
			t.Errorf("port %s: %d bytes (%v), want %d", port, len(b), err, len(want))
		}
	}
	if b, _ := os.ReadFile(filepath.Join(out, "args.9004")); !strings.Contains(strings.TrimSpace(string(b))+" ", "--portbase 9004 --min-receivers 1 ") {
		t.Errorf("session 2's sender ran with %q", b)
	}
	if logs := f.logs.String(); !strings.Contains(logs, "session 2: port base 9004, 1 receiver(s)") {
		t.Errorf("log lacks session 2's start:\n%s", logs)
	}
}

// Without rolling sessions, WaitForSession returns at once: the session
// if it can be joined, else the reason it cannot.
func TestWaitForSessionWithoutRolling(t *testing.T) {
	for _, tt := range []struct {
		name    string
		mode    string
		started bool
		phase   status.Phase
		wantErr string
	}{
		{name: "joinable", mode: ModeMulticast, phase: status.Waiting},
		{name: "too late", mode: ModeMulticast, started: true, phase: status.Sending, wantErr: "booted too late"},
		{name: "unicast", mode: ModeUnicast, phase: status.Unicast},
	} {
		t.Run(tt.name, func(t *testing.T) {
			script := `echo waiting >&2; sleep 60`
			if tt.started {
				script = `echo "Starting transfer: 00000009" >&2; sleep 60`
			}
			f := start(t, map[string][]byte{"d1p1.img": []byte("x")}, script, func(c *Config) { c.Mode = tt.mode })
			if tt.started {
				waitFor(t, "the transfer to start", func() bool { return f.srv.Session().Phase == status.Sending })
			}
			s, err := status.WaitForSession(context.Background(), &http.Client{Timeout: 10 * time.Second}, f.url("/api/session"), "52:54:00:00:00:01", t.Logf)
			if s.Phase != tt.phase || (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("WaitForSession = %s, %v; want %s, error %q", s.Phase, err, tt.phase, tt.wantErr)
			}
		})
	}
}

func TestSessionEndpointChecksItsParameters(t *testing.T) {
	_, hs, _ := newHTTPServer(t, nil)
	for _, q := range []string{"?mac=nope", "?mac=52:54:00:00:00:01&wait=soon", "?mac=52:54:00:00:00:01&wait=-1"} {
		if resp, body := do(t, "GET", hs.URL+"/api/session"+q, ""); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %s %s", q, resp.Status, body)
		}
	}
}

// Rolling sessions need at least two port bases below 65536.
func TestRollingNeedsRoomForTwoPortBases(t *testing.T) {
	images := t.TempDir()
	files := map[string][]byte{}
	for p := 1; p <= 200; p++ {
		files[fmt.Sprintf("d1p%d.img", p)] = []byte("x")
	}
	writeFiles(t, filepath.Join(images, "img"), files)
	cfg := Config{Images: images, Rolling: true, Log: testLog(t),
		Sender: SenderConfig{Program: "sh", Interface: "lo", PortBase: 65000, Clients: 1}}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "no room for a second session") {
		t.Errorf("New = %v", err)
	}
	cfg.Sender.PortBase = 9000
	if _, err := New(cfg); err != nil {
		t.Errorf("port base 9000: %v", err)
	}
}
