package fog_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/imgcast/imgcast/internal/fogserver"
	"github.com/imgcast/imgcast/pkg/fog"
	"github.com/imgcast/imgcast/pkg/inventory"
)

const (
	macA    = "52:54:00:12:34:56"
	macB    = "52:54:00:12:34:57"
	sysUUID = "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0"
)

func multicastLine(mac string) string {
	return "web=http://10.81.0.1/fog/ mac=" + mac + " storage=10.81.0.1:/images/ storageip=10.81.0.1 osid=50 img=lab imgType=n imgPartitionType=all imgFormat=5 port=54320 type=down mc=yes"
}

func unicastLine(mac string) string {
	return "web=http://10.81.0.1/fog/ mac=" + mac + " storage=10.81.0.1:/images/ storageip=10.81.0.1 osid=50 img=lab imgType=n imgPartitionType=all imgFormat=5 type=down"
}

// newClient makes a client for the task on line whose requests srv answers
// in-process.
func newClient(t *testing.T, srv *fogserver.Server, line string) *fog.Client {
	t.Helper()
	c, err := fog.NewClient(fog.Parse(line), sysUUID)
	if err != nil {
		t.Fatal(err)
	}
	c.HTTP = srv.Client()
	return c
}

// lab is a fake FOG server with randWait's full 2 s latency (the tests run
// in synctest bubbles, so it costs no real time), two hosts in a multicast
// session and one unicast host.
func lab(cfg fogserver.Config, a, b *fogserver.Task) *fogserver.Server {
	if cfg.MaxLatency == 0 {
		cfg.MaxLatency = 2 * time.Second
	}
	srv := fogserver.New(cfg)
	srv.AddSession(fogserver.Session{Name: "lab", Port: 54320, MaxWait: 10})
	srv.AddHost(fogserver.Host{Name: "pc-a", MAC: macA, Task: a})
	srv.AddHost(fogserver.Host{Name: "pc-b", MAC: macB, Task: b})
	return srv
}

func mcTask(queue ...string) *fogserver.Task {
	return &fogserver.Task{Type: fogserver.Multicast, Session: "lab", Image: fogserver.Image{Name: "lab"}, Queue: queue}
}

func TestCheckInWaitsThroughTheQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := lab(fogserver.Config{}, mcTask(fogserver.QueueFull, fogserver.QueueFull), nil)
		c := newClient(t, srv, multicastLine(macA))
		var seen []fog.CheckInStatus
		start := time.Now()
		if err := c.CheckIn(context.Background(), func(s fog.CheckInStatus) { seen = append(seen, s) }); err != nil {
			t.Fatal(err)
		}
		if len(seen) != 2 {
			t.Fatalf("saw %d queue messages, want 2: %+v", len(seen), seen)
		}
		for i, s := range seen {
			if s.Message != fogserver.QueueFull || s.Attempt != i+1 || s.Err != nil {
				t.Errorf("status %d = %+v", i, s)
			}
		}
		if seen[1].Waited < 5*time.Second {
			t.Errorf("second message after %v: the client did not wait between tries", seen[1].Waited)
		}
		if took := time.Since(start); took < 10*time.Second {
			t.Errorf("check-in took %v; two 5 s waits expected", took)
		}
		calls := srv.Calls()
		if len(calls) != 3 {
			t.Fatalf("%d calls, want 3", len(calls))
		}
		for _, call := range calls {
			if call.Script != "service/mc_checkin.php" || call.Method != http.MethodPost {
				t.Errorf("call %s %s, want POST service/mc_checkin.php", call.Method, call.Script)
			}
			want := map[string][]string{"sysuuid": {strings.ToLower(sysUUID)}, "mac": {macA}, "type": {"down"}}
			if !reflect.DeepEqual(map[string][]string(call.Form), want) {
				t.Errorf("form %v, want %v", call.Form, want)
			}
		}
		if st := srv.Status(macA); st.State != fogserver.StateInProgress {
			t.Errorf("task state %d, want in progress", st.State)
		}
		if s := srv.Session("lab"); s.Clients != 1 {
			t.Errorf("session clients %d, want 1", s.Clients)
		}
	})
}

func TestCheckInUnicastUsesPreStage1(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		queued := "No open slots, There are 2 before me."
		srv := lab(fogserver.Config{}, &fogserver.Task{Type: fogserver.Deploy, Queue: []string{queued, queued}}, nil)
		c := newClient(t, srv, unicastLine(macA))
		if got := c.CheckInScript(); got != "Pre_Stage1.php" {
			t.Errorf("CheckInScript = %q", got)
		}
		var msgs []string
		if err := c.CheckIn(context.Background(), func(s fog.CheckInStatus) { msgs = append(msgs, s.Message) }); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(msgs, []string{queued, queued}) {
			t.Errorf("messages %q", msgs)
		}
		if n := len(srv.Calls("service/Pre_Stage1.php")); n != 3 {
			t.Errorf("%d calls to Pre_Stage1.php, want 3", n)
		}
	})
}

// A host FOG does not know, or one without a task, waits (showing why)
// until it is cancelled; it never gives up by itself.
func TestCheckInShowsWhyAndStopsWhenCancelled(t *testing.T) {
	for _, tc := range []struct {
		name, mac, want string
	}{
		{"unknown host", "52:54:00:99:99:99", fogserver.AnswerInvalid},
		{"no task", macB, fogserver.NoActiveTask("pc-b", macB)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := lab(fogserver.Config{}, mcTask(), nil)
				c := newClient(t, srv, multicastLine(tc.mac))
				ctx, cancel := context.WithCancel(context.Background())
				var msgs []string
				err := c.CheckIn(ctx, func(s fog.CheckInStatus) {
					msgs = append(msgs, s.Message)
					if len(msgs) == 4 {
						cancel()
					}
				})
				if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("err = %v, want cancelled with the last answer", err)
				}
				for _, m := range msgs {
					if m != tc.want {
						t.Errorf("message %q, want %q", m, tc.want)
					}
				}
			})
		})
	}
}

func TestCheckInWithoutServer(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	ts.Close() // nothing listens there any more
	c, err := fog.NewClient(fog.Parse(strings.Replace(unicastLine(macA), "http://10.81.0.1/fog/", ts.URL+"/fog/", 1)), sysUUID)
	if err != nil {
		t.Fatal(err)
	}
	c.CheckInInterval = time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	var got fog.CheckInStatus
	err = c.CheckIn(ctx, func(s fog.CheckInStatus) { got = s; cancel() })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v", err)
	}
	if got.Err == nil || !strings.HasPrefix(got.Message, "no answer from the FOG server") {
		t.Errorf("status %+v", got)
	}
}

func TestCompleteUnicast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		task := &fogserver.Task{Type: fogserver.Deploy, PostStage3: []string{"Failed to update Task", "Failed to update Host"}}
		srv := lab(fogserver.Config{}, task, nil)
		c := newClient(t, srv, unicastLine(macA))
		if err := c.CheckIn(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		done, err := c.Complete(context.Background())
		if err != nil || done.Attempts != 3 || done.Warning != "" {
			t.Fatalf("Complete = %+v, %v; want success on the 3rd try", done, err)
		}
		if st := srv.Status(macA); st.State != fogserver.StateComplete {
			t.Errorf("state %d, want complete", st.State)
		}
		// Now the task is complete: a unicast host that reports again gets
		// "No Active Task found" 11 times and fails.
		done, err = c.Complete(context.Background())
		if err == nil || !strings.Contains(err.Error(), "No Active Task found for Host: pc-a") || !strings.Contains(err.Error(), "11 tries") {
			t.Errorf("Complete of a completed unicast task = %+v, %v", done, err)
		}
		if n := len(srv.Calls("service/Post_Stage3.php")); n != 3+11 {
			t.Errorf("%d Post_Stage3 calls, want 14", n)
		}
	})
}

// FOG 1.5.x completes a multicast session's tasks when the first host
// reports: a later host's "No Active Task found" is success with a warning.
func TestCompleteMulticastRace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := lab(fogserver.Config{CompleteSessionOnCheckout: true}, mcTask(), mcTask())
		a, b := newClient(t, srv, multicastLine(macA)), newClient(t, srv, multicastLine(macB))
		for _, c := range []*fog.Client{a, b} {
			if err := c.CheckIn(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
		}
		if s := srv.Session("lab"); s.Clients != 2 {
			t.Errorf("session clients %d, want 2", s.Clients)
		}
		if done, err := a.Complete(context.Background()); err != nil || done.Warning != "" {
			t.Fatalf("first host: %+v, %v", done, err)
		}
		done, err := b.Complete(context.Background())
		if err != nil || done.Attempts != 1 || !strings.Contains(done.Warning, "already completed") || !strings.Contains(done.Warning, "No Active Task found for Host: pc-b") {
			t.Errorf("late host: %+v, %v; want success with a warning at once", done, err)
		}
	})
}

// FOG 1.6 acknowledges a task that is already complete.
func TestCompleteAckIfAlreadyComplete(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := lab(fogserver.Config{AckIfAlreadyComplete: true, Caps: true}, mcTask(), nil)
		c := newClient(t, srv, multicastLine(macA))
		if err := c.CheckIn(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		srv.CompleteSession("lab")
		if done, err := c.Complete(context.Background()); err != nil || done.Warning != "" {
			t.Errorf("Complete = %+v, %v", done, err)
		}
	})
}

func TestCompleteCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		failures := []string{"Failed to update Task", "Failed to update Task", "Failed to update Task", "Failed to update Task"}
		srv := lab(fogserver.Config{MaxLatency: time.Millisecond}, &fogserver.Task{Type: fogserver.Deploy, PostStage3: failures}, nil)
		c := newClient(t, srv, unicastLine(macA))
		// Tries at 0, 1 and 3 s (pauses of 1 then 2 s): the deadline ends
		// the second pause.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if _, err := c.Complete(ctx); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "Failed to update Task") {
			t.Errorf("err = %v", err)
		}
	})
}

func TestTaskError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := lab(fogserver.Config{}, mcTask(), nil)
		c := newClient(t, srv, multicastLine(macA))
		text := "partition 2: stream ended early & the disk\nwas not written: 50% + more"
		if err := c.TaskError(context.Background(), fog.ReportError, text, "imgcast"); err != nil {
			t.Fatal(err)
		}
		if got := srv.Status(macA).Errors; !reflect.DeepEqual(got, []string{"error: " + text}) {
			t.Errorf("server recorded %q", got)
		}
		call := srv.Calls("service/taskerror.php")[0]
		if call.Form.Get("script") != "imgcast" || call.Form.Get("sysuuid") != strings.ToLower(sysUUID) {
			t.Errorf("form %v", call.Form)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		srv := lab(fogserver.Config{TaskErrorMissing: true}, mcTask(), nil)
		c := newClient(t, srv, multicastLine(macA))
		if err := c.TaskError(context.Background(), fog.ReportWarning, "x", "imgcast"); err != nil {
			t.Errorf("a server without taskerror.php (404): %v", err)
		}
	})
}

func TestBlame(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		task := mcTask()
		task.Blame = []string{"", "Failed to update Task"}
		srv := lab(fogserver.Config{}, task, nil)
		c := newClient(t, srv, multicastLine(macA))
		start := time.Now()
		if err := c.Blame(context.Background()); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took != 10*time.Second {
			t.Errorf("three tries took %v, want two 5 s pauses", took)
		}
		st := srv.Status(macA)
		if st.NodeFailures != 1 || st.State != fogserver.StateQueued {
			t.Errorf("status %+v: want one node failure and the task queued again", st)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		srv := lab(fogserver.Config{}, nil, nil)
		c := newClient(t, srv, multicastLine(macA))
		err := c.Blame(context.Background())
		if err == nil || !strings.Contains(err.Error(), "after 10 tries") || !strings.Contains(err.Error(), "No Active Task") {
			t.Errorf("err = %v", err)
		}
		if n := len(srv.Calls("service/blame.php")); n != 10 {
			t.Errorf("%d calls, want 10", n)
		}
	})
}

func TestInventory(t *testing.T) {
	m := inventory.Machine{
		NICs:        []inventory.NIC{{Name: "eth0", MAC: macA}, {Name: "eth1", MAC: macB}},
		Disks:       []inventory.Disk{{Path: "/dev/sda", Model: "QEMU HARDDISK", Serial: "QM0001"}, {Path: "/dev/nvme0n1", Model: "Samsung 980", Serial: "S64+XYZ/1"}},
		MemoryBytes: 268435456,
		DMI:         inventory.DMI{Vendor: "QEMU", Product: "Standard PC (Q35 + ICH9, 2009)", Serial: "", UUID: sysUUID},
	}
	inv := fog.InventoryFrom(m, "/dev/nvme0n1")
	// '>' and '~' put '+' into the base64 (FOS posts it raw, PHP makes it a
	// space and FOG's stripAndDecode turns it back): it must survive.
	inv.SysVersion = "rev >~ 2"
	if n := len(inv.Form()); n != fog.InventoryFields {
		t.Fatalf("inventory form has %d fields, want %d", n, fog.InventoryFields)
	}
	synctest.Test(t, func(t *testing.T) {
		task := mcTask()
		task.InventoryEmpty = 2
		srv := lab(fogserver.Config{}, task, nil)
		c := newClient(t, srv, multicastLine(macA))
		answer, err := c.Inventory(context.Background(), inv)
		if err != nil || answer != "Done" {
			t.Fatalf("Inventory = %q, %v", answer, err)
		}
		if n := len(srv.Calls("service/inventory.php")); n != 3 {
			t.Errorf("%d calls, want 3 (two empty answers)", n)
		}
		got := srv.Status(macA).Inventory
		for k, want := range map[string]string{
			"mac": macA + "|" + macB, "sysman": "QEMU", "sysproduct": "Standard PC (Q35 + ICH9, 2009)",
			"sysuuid": strings.ToLower(sysUUID), "mem": "MemTotal: 262144 kB",
			"hdinfo": "model=Samsung 980, fwrev=, serialno=S64+XYZ/1", "sysserial": "", "gpuvendors": "",
			"sysversion": "rev >~ 2",
		} {
			if got[k] != want {
				t.Errorf("server decoded %s=%q, want %q", k, got[k], want)
			}
		}
	})
	synctest.Test(t, func(t *testing.T) {
		task := mcTask()
		task.InventoryEmpty = 100
		srv := lab(fogserver.Config{}, task, nil)
		c := newClient(t, srv, multicastLine(macA))
		start := time.Now()
		if _, err := c.Inventory(context.Background(), inv); err == nil || !strings.Contains(err.Error(), "11 tries") {
			t.Errorf("err = %v", err)
		}
		if took := time.Since(start); took != 20*time.Second {
			t.Errorf("gave up after %v, want 10 pauses of 2 s", took)
		}
	})
}

func TestCaps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		old := newClient(t, lab(fogserver.Config{Version: "1.5.10.1826"}, nil, nil), multicastLine(macA))
		caps, err := old.Caps(context.Background())
		if err != nil || caps.StreamHeaders() || caps.Version != "1.5.10.1826" || len(caps.Tokens) != 0 {
			t.Errorf("1.5 server: %+v, %v", caps, err)
		}
		if v, err := old.Version(context.Background()); err != nil || v != "1.5.10.1826" {
			t.Errorf("Version = %q, %v", v, err)
		}
		current := newClient(t, lab(fogserver.Config{Caps: true, Version: "1.6.0"}, nil, nil), multicastLine(macA))
		caps, err = current.Caps(context.Background())
		if err != nil || !caps.StreamHeaders() || !caps.Has("mclvm") || caps.Version != "" {
			t.Errorf("1.6 server: %+v, %v", caps, err)
		}
		if v, _ := current.Version(context.Background()); v != "1.6.0" {
			t.Errorf("1.6 Version = %q", v)
		}
	})
	for body, want := range map[string]fog.Caps{
		"mclvm mcstreamid\n": {Tokens: []string{"mclvm", "mcstreamid"}},
		"1.5.9":              {Version: "1.5.9"},
		"":                   {},
		"<html>":             {Version: "<html>"},
	} {
		if got := fog.ParseCaps(body); !reflect.DeepEqual(got, want) {
			t.Errorf("ParseCaps(%q) = %+v, want %+v", body, got, want)
		}
	}
}

// A server that answers caps with an error page is an error, never "no
// capabilities".
func TestCapsErrorPage(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "Internal Server Error", http.StatusInternalServerError)
	}))
	defer ts.Close()
	c, err := fog.NewClient(fog.Parse("web="+ts.URL+"/fog/ mac="+macA+" type=down"), sysUUID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Caps(context.Background()); err == nil || !strings.Contains(err.Error(), "HTTP 500") {
		t.Errorf("err = %v", err)
	}
}

func TestStatusLine(t *testing.T) {
	for _, tc := range []struct {
		s    fog.Status
		want string
	}{
		{fog.Status{Elapsed: 131 * time.Second, Written: 15336553922, Total: 52601966592},
			"  7.02GB@00:02:11@00:05:18@14.283 GiB@48.989 GiB@ 29.16@52601966592.000000"},
		{fog.Status{Elapsed: 10*time.Second + 900*time.Millisecond, Written: 500, Total: 1000},
			"  3.00KB@00:00:10@00:00:10@500 iB@1000 iB@ 50.00@1000.000000"},
		{fog.Status{Elapsed: 0, Written: 0, Total: 100},
			"  0.00byte@00:00:01@00:01:39@0 iB@100 iB@  1.00@100.000000"},
		{fog.Status{Elapsed: 200 * time.Millisecond, Written: 1 << 20, Total: 1 << 20, Done: true},
			" 62.91MB@00:00:01@00:00:00@1024.0 KiB@1024.0 KiB@100.00@1048576.000000"},
		{fog.Status{Elapsed: 30 * time.Hour, Written: 999, Total: 1000},
			"  0.00byte@30:00:00@00:01:48@999 iB@1000 iB@ 99.90@1000.000000"},
	} {
		if got := tc.s.Line(); got != tc.want {
			t.Errorf("%+v:\n got %q\nwant %q", tc.s, got, tc.want)
		}
	}
}

// The reporter posts every 3 s while the status changes, nothing while it
// does not, and FOG stores exactly the fields it sent.
func TestProgressReporter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := lab(fogserver.Config{}, mcTask(), nil)
		c := newClient(t, srv, multicastLine(macA))
		if err := c.CheckIn(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		r := c.StartProgress(context.Background(), 0)
		defer r.Stop()
		first := fog.Status{Elapsed: 131 * time.Second, Written: 15336553922, Total: 52601966592}
		r.Set(first)
		time.Sleep(3*time.Second + time.Millisecond)
		synctest.Wait()
		posts := srv.Calls("service/progress.php")
		if len(posts) != 1 {
			t.Fatalf("%d posts after 3 s, want 1", len(posts))
		}
		if got := strings.Join(posts[0].Status, "@"); got != first.Line() {
			t.Errorf("server decoded %q, want %q", got, first.Line())
		}
		st := srv.Status(macA)
		if st.BPM != "  7.02GB" || st.Percent != " 29.16" || st.DataTotal != "48.989 GiB" || st.ImageSize != "52601966592.000000:" {
			t.Errorf("task progress %+v", st)
		}
		time.Sleep(9 * time.Second)
		synctest.Wait()
		if n := len(srv.Calls("service/progress.php")); n != 1 {
			t.Errorf("%d posts for an unchanged status, want 1", n)
		}
		r.Set(fog.Status{Elapsed: 140 * time.Second, Written: 16e9, Total: 52601966592})
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if n, err := r.Posts(); n != 2 || err != nil {
			t.Errorf("Posts = %d, %v", n, err)
		}
	})
}

// Over a real socket: the form goes url-encoded on the wire, the web root
// answers HEAD, and the whole unicast sequence works.
func TestOverHTTP(t *testing.T) {
	srv := fogserver.New(fogserver.Config{})
	srv.AddHost(fogserver.Host{Name: "pc-a", MAC: macA, Task: &fogserver.Task{Type: fogserver.Deploy, Queue: []string{"No open slots, There are 1 before me."}}})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	c, err := fog.NewClient(fog.Parse(strings.Replace(unicastLine(macA), "http://10.81.0.1/fog/", ts.URL+"/fog", 1)), sysUUID)
	if err != nil {
		t.Fatal(err)
	}
	c.CheckInInterval = 10 * time.Millisecond
	ctx := context.Background()
	if err := c.Reachable(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckIn(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Progress(ctx, "  1.00GB@00:00:01@00:00:01@1 iB@2 iB@ 50.00@2.000000"); err != nil {
		t.Fatal(err)
	}
	if done, err := c.Complete(ctx); err != nil || done.Attempts != 1 {
		t.Fatalf("Complete = %+v, %v", done, err)
	}
	if st := srv.Status(macA); st.State != fogserver.StateComplete || st.BPM != "  1.00GB" {
		t.Errorf("status %+v", st)
	}
	if err := c.Reachable(ctx); err != nil {
		t.Errorf("Reachable: %v", err)
	}
	bad, _ := fog.NewClient(fog.Parse("web="+ts.URL+"/nofog/ mac="+macA), sysUUID)
	if err := bad.Reachable(ctx); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Errorf("Reachable of a wrong web root: %v", err)
	}
}

func TestPrintable(t *testing.T) {
	if got := fog.Printable("a\x1b[2J\nb\t\tc"); got != "a [2J b c" {
		t.Errorf("Printable = %q", got)
	}
	long := fog.Printable(strings.Repeat("é", 400))
	if !strings.HasSuffix(long, "…") || len(long) > 310 || !strings.HasPrefix(long, "éé") {
		t.Errorf("long text cut to %d bytes: %q", len(long), long)
	}
}
