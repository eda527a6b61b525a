package imaging

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/defaultimage"
	"github.com/imgcast/imgcast/pkg/status"
)

// rollingServer answers /api/session as imgcast-server --rolling does for
// a machine that came too late for session 1: queued for session 2 (on
// its own port base) for the first queuedFor requests, then session 2,
// open (never, when queuedFor < 0). It records the MACs it was asked for.
func rollingServer(t *testing.T, queuedFor int32) (url string, macs *[]string) {
	var asked atomic.Int32
	macs = &[]string{}
	next := status.Session{ID: 2, Rolling: true, Phase: status.Waiting, Joinable: true, PortBase: 9010,
		Streams: []status.Stream{{Partition: 1, ID: "d1p1.img", Port: 9010}, {Partition: 2, ID: "d1p2.img", Port: 9012}}}
	queued := status.Session{ID: 2, Rolling: true, Phase: status.Queued, PortBase: 9010,
		Message: "session 2 on port base 9010, for 1 machine(s) that came too late for session 1: it starts when session 1 ends"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*macs = append(*macs, r.URL.Query().Get("mac"))
		n := asked.Add(1)
		if queuedFor < 0 || n <= queuedFor {
			json.NewEncoder(w).Encode(queued)
			return
		}
		json.NewEncoder(w).Encode(next)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/api/session", macs
}

// A machine queued for the next rolling session waits for it, says so on
// the console, and joins it on that session's ports.
func TestRollingSessionWait(t *testing.T) {
	dir, ref := defaultImage(t)
	disk := zeroDisk(t, defaultimage.DiskSize)
	rcv := &fakeReceiver{dir: dir, byPort: map[int]string{9010: "d1p1.img", 9012: "d1p2.img"}}
	cfg, _, console := newConfig(t, dir, disk, Multicast, rcv)
	cfg.RequireStreamHeader = true
	var macs *[]string
	cfg.SessionURL, macs = rollingServer(t, 2)
	cfg.SessionWait = time.Minute
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, console)
	}
	assertPartitionsMatch(t, disk, ref)
	if len(rcv.configs) != 2 || rcv.configs[0].Port != 9010 || rcv.configs[1].Port != 9012 {
		t.Errorf("received on %+v, want session 2's ports 9010 and 9012", rcv.configs)
	}
	if len(*macs) != 3 || (*macs)[0] != cfg.MAC {
		t.Errorf("the server was asked %d times for MACs %q, want 3 times for %s", len(*macs), *macs, cfg.MAC)
	}
	for _, want := range []string{
		`(?m)^Rolling session: waiting for session 2 \(port base 9010\): session 2 on port base 9010, .* \(since \d\d:\d\d:\d\d\)$`,
		`Rolling session 2 opened after \d+s of waiting; joining it on port base 9010`,
	} {
		if !regexp.MustCompile(want).MatchString(console.String()) {
			t.Errorf("console does not match %q:\n%s", want, console)
		}
	}
	if n := strings.Count(console.String(), "Rolling session: waiting"); n != 1 {
		t.Errorf("the wait is shown %d times, want once (it did not change)", n)
	}
}

// The wait is bounded: a session that never opens fails the job with
// the setting to change, before anything is written.
func TestRollingSessionWaitIsBounded(t *testing.T) {
	dir, _ := defaultImage(t)
	disk := blankDisk(t, defaultimage.DiskSize)
	cfg, rec, console := newConfig(t, dir, disk, Multicast, &fakeReceiver{dir: dir})
	cfg.SessionURL, _ = rollingServer(t, -1)
	cfg.SessionWait = 1500 * time.Millisecond
	_, err := Run(context.Background(), cfg)
	want := "waiting for multicast session 2: context deadline exceeded: the server kept this machine queued for longer than 1.5s (imgcast.sessionwait)"
	if err == nil || err.Error() != want {
		t.Fatalf("error %v, want %q\nconsole:\n%s", err, want, console)
	}
	if rec.last().State != status.Failed {
		t.Errorf("last report %+v, want failed", rec.last())
	}
	assertUntouched(t, disk)
}
