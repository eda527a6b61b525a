package server

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/status"
)

func testSession(mode string) *session {
	cfg := SenderConfig{PortBase: 9000, Clients: 2, MaxWait: time.Minute}
	st := newSession(1, "default", mode, cfg, []ImageStream{
		{Partition: 1, ID: "d1p1.img", Files: []string{"d1p1.img"}, Size: 1000},
		{Partition: 2, ID: "d1p2.img", Files: []string{"d1p2.img"}, Size: 500},
	})
	st.now = func() time.Time { return time.Date(2026, 5, 4, 10, 2, 3, 0, time.UTC) }
	return st
}

func TestSessionPhases(t *testing.T) {
	type step func(st *session)
	waiting := func(i int) step {
		return func(st *session) { st.update(i, func(s *status.Stream) { s.State = status.StreamWaiting }) }
	}
	for _, tt := range []struct {
		name     string
		mode     string
		steps    []step
		phase    status.Phase
		joinable bool
		current  int
		msg      []string
	}{
		{name: "before the first sender runs", mode: ModeMulticast, phase: status.Waiting, joinable: true, current: 0,
			msg: []string{"waiting for receivers for partition 1 (d1p1.img, 1 of 2) on port 9000", "0 of 2 connected (none yet)", "or 60 s after the first"}},
		{name: "one receiver connected", mode: ModeMulticast, steps: []step{waiting(0), func(st *session) { st.connected(0, "0", "10.0.0.11") }},
			phase: status.Waiting, joinable: true, current: 0, msg: []string{"1 of 2 connected (10.0.0.11)"}},
		{name: "first partition being sent", mode: ModeMulticast, steps: []step{waiting(0),
			func(st *session) { st.connected(0, "0", "10.0.0.11"); st.connected(0, "1", "10.0.0.12") },
			func(st *session) { st.started(0) },
			func(st *session) { st.update(0, func(s *status.Stream) { s.BytesSent = 450 }) }},
			phase: status.Sending, current: 0, msg: []string{"sending partition 1 (d1p1.img, 1 of 2) on port 9000 to 2 receivers (45%)", "started at 10:02:03"}},
		// The sender's output is read concurrently with the chain, so
		// "Starting transfer" can be seen before the chain marks it waiting.
		{name: "started before marked waiting", mode: ModeMulticast, steps: []step{
			func(st *session) { st.connected(0, "0", "10.0.0.11"); st.connected(0, "1", "10.0.0.12") },
			func(st *session) { st.started(0) }, func(st *session) { st.waiting(0, 2) }},
			phase: status.Sending, current: 0, msg: []string{"sending partition 1 (d1p1.img, 1 of 2) on port 9000 to 2 receivers (0%)"}},
		{name: "receiver dropped", mode: ModeMulticast, steps: []step{waiting(0),
			func(st *session) { st.connected(0, "0", "10.0.0.11"); st.connected(0, "1", "10.0.0.12") },
			func(st *session) { st.started(0); st.dropped(0, "1") }},
			phase: status.Sending, current: 0, msg: []string{"to 1 receivers"}},
		{name: "between partitions", mode: ModeMulticast, steps: []step{
			func(st *session) { st.started(0); st.finished(0, status.StreamDone, "exit status 0", "") }, waiting(1)},
			phase: status.Sending, current: 1, msg: []string{"partition 1 of 2 sent; waiting for receivers for partition 2 (d1p2.img, 2 of 2) on port 9002"}},
		{name: "all sent", mode: ModeMulticast, steps: []step{
			func(st *session) { st.started(0); st.finished(0, status.StreamDone, "exit status 0", "") },
			func(st *session) { st.started(1); st.finished(1, status.StreamDone, "exit status 0", "") }},
			phase: status.Finished, current: -1, msg: []string{"all 2 partitions were sent (finished 10:02:03)"}},
		{name: "first sender failed", mode: ModeMulticast, steps: []step{
			func(st *session) { st.finished(0, status.StreamFailed, "exit status 1", "udp-sender failed") }},
			phase: status.Aborted, current: 0, msg: []string{"stopped before it finished (udp-sender failed)", "will not be sent"}},
		{name: "server stopping", mode: ModeMulticast, steps: []step{waiting(0), func(st *session) { st.setStopping() }},
			phase: status.Waiting, joinable: false, current: 0, msg: []string{"shutting down"}},
		{name: "unicast", mode: ModeUnicast, phase: status.Unicast, current: -1, msg: []string{"over HTTP"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := testSession(tt.mode)
			for _, s := range tt.steps {
				s(st)
			}
			s := st.snapshot()
			if s.Phase != tt.phase || s.Joinable != tt.joinable || s.Current != tt.current {
				t.Errorf("phase %s joinable %v current %d, want %s %v %d (%s)", s.Phase, s.Joinable, s.Current, tt.phase, tt.joinable, tt.current, s.Message)
			}
			for _, m := range tt.msg {
				if !strings.Contains(s.Message, m) {
					t.Errorf("message %q lacks %q", s.Message, m)
				}
			}
			if s.Image != "default" || s.Clients != 2 || s.MaxWait != 60 || s.PortBase != 9000 || len(s.Streams) != 2 || s.Streams[1].Port != 9002 {
				t.Errorf("session = %+v", s)
			}
		})
	}
}

func TestSessionSnapshotIsACopy(t *testing.T) {
	st := testSession(ModeMulticast)
	st.connected(0, "0", "10.0.0.11")
	s := st.snapshot()
	s.Streams[0].Receivers[0] = "changed"
	s.Streams[0].State = status.StreamDone
	if again := st.snapshot(); again.Streams[0].Receivers[0] != "10.0.0.11" || again.Streams[0].State != status.StreamPending {
		t.Errorf("snapshot shares memory with the session: %+v", again.Streams[0])
	}
}

// must is update for tests: it fails the test on an error.
func must(t *testing.T) func(status.Client, error) status.Client {
	return func(c status.Client, err error) status.Client {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}

func TestClientsAreBounded(t *testing.T) {
	const maxClients = 100
	c := newClients(maxClients, 1<<20)
	for i := range maxClients {
		must(t)(c.update(status.Report{MAC: fmt.Sprintf("02:00:00:%02x:%02x:%02x", i>>16, (i>>8)&0xff, i&0xff), State: status.Ready}, "10.0.0.1:1", ""))
	}
	if _, err := c.update(status.Report{MAC: "02:ff:ff:ff:ff:ff", State: status.Ready}, "10.0.0.1:1", ""); err == nil {
		t.Error("a client beyond the bound was accepted")
	}
	// Known machines can still report.
	must(t)(c.update(status.Report{MAC: "02:00:00:00:00:05", State: status.Done}, "10.0.0.1:1", ""))
}

func TestClientsMerge(t *testing.T) {
	c := newClients(100, 1<<20)
	now := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return now }
	inv := &inventory.Machine{MemoryBytes: 256 << 20}
	a, b := "52:54:00:00:00:0a", "52:54:00:00:00:0b"

	must(t)(c.update(status.Report{MAC: b, State: status.Ready, Seq: 1}, "10.0.0.12:40000", ""))
	must(t)(c.update(status.Report{MAC: a, State: status.Ready, IP: "10.0.0.11", Inventory: inv, Seq: 1}, "10.0.0.11:40000", ""))
	now = now.Add(3 * time.Second)
	got := must(t)(c.update(status.Report{MAC: a, State: status.Receiving, IP: "10.0.0.11", Partition: 1, Bytes: 10, Seq: 2}, "10.0.0.11:40001", ""))
	if got.Inventory != inv {
		t.Error("the inventory of the ready report was lost by a later report without one")
	}
	if got.State != status.Receiving || got.Bytes != 10 || got.Seq != 2 {
		t.Errorf("latest report did not win: %+v", got)
	}
	if !got.FirstSeen.Equal(now.Add(-3*time.Second)) || !got.LastSeen.Equal(now) {
		t.Errorf("first/last seen = %v / %v", got.FirstSeen, got.LastSeen)
	}
	now = now.Add(7 * time.Second)
	list := c.list()
	if len(list) != 2 || list[0].MAC != a || list[1].MAC != b {
		t.Fatalf("list = %+v, want two clients sorted by MAC", list)
	}
	if list[1].IP != "10.0.0.12" || list[1].Remote != "10.0.0.12" {
		t.Errorf("a report without ip takes the sender's address: %+v", list[1])
	}
	if list[0].Age != 7 || list[1].Age != 10 {
		t.Errorf("ages %v %v, want 7 and 10", list[0].Age, list[1].Age)
	}

	// A note sticks to the client until it is ready again.
	must(t)(c.update(status.Report{MAC: b, State: status.Ready, Seq: 1}, "10.0.0.12:1", "late"))
	if got := must(t)(c.update(status.Report{MAC: b, State: status.Failed, Seq: 2, Error: "x"}, "10.0.0.12:1", "")); got.Note != "late" {
		t.Errorf("note lost: %+v", got)
	}
	if got := must(t)(c.update(status.Report{MAC: b, State: status.Ready, Seq: 1}, "10.0.0.12:1", "")); got.Note != "" {
		t.Errorf("note kept after a new ready: %+v", got)
	}
	// A rebooted client (sequence back at 1) replaces its old record.
	if got := must(t)(c.update(status.Report{MAC: a, State: status.Ready, Seq: 1}, "10.0.0.11:2", "")); got.State != status.Ready || got.Seq != 1 {
		t.Errorf("reboot not taken: %+v", got)
	}
}
