package fogserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/lab"
	"github.com/imgcast/imgcast/pkg/fogmc"
)

// TestManagerSendsToFOSReceivers runs the fake manager's real udp-sender
// chain in a lab namespace, in both of FOG's forms, and receives on two
// hosts with udpcast's udp-receiver run as FOS runs it (one per stream, in
// order, all on the session's portbase, rendezvous at the storage node).
func TestManagerSendsToFOSReceivers(t *testing.T) {
	lab.Require(t, "udp-sender", "udp-receiver")
	n := lab.T(t, 81)
	var hosts []*lab.Host
	for i := range 2 {
		h, err := n.AddHost(fmt.Sprintf("pc%d", i), 11+i)
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	random := func(size int) []byte {
		b := make([]byte, size)
		rand.Read(b)
		return b
	}
	p1, p2a, p2b, p3 := random(1<<20+123), random(200<<10), random(77<<10), random(64<<10)

	for _, tc := range []struct {
		form  Form
		files map[string][]byte
		want  [][]byte
	}{
		{Form15,
			map[string][]byte{"d1p1.img": p1, "d1p2.img": p2a, "d1p3.img": p3, "d1.partitions": []byte("label: dos\n")},
			[][]byte{p1, p2a, p3}},
		{Form16,
			map[string][]byte{"d1p1.img.000": p1, "d1p2.img.000": p2a, "d1p2.img.001": p2b, "d1.partitions": []byte("label: dos\n")},
			[][]byte{header(t, "d1p1.img", p1), header(t, "d1p2.img", p2a, p2b)}},
	} {
		t.Run(fmt.Sprintf("form %d", tc.form), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "lab")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for name, b := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			s := Sender{Form: tc.form, Dir: dir, ImageType: TypeResizable, OSID: 50, Format: 6,
				Interface: n.Bridge, Clients: len(hosts), Port: 9000, MaxWait: 1}
			if tc.form == Form15 {
				s.Format = 5
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var log lab.Output
			run, err := s.Start(ctx, n.Switch.Command, &log)
			if err != nil {
				t.Fatal(err)
			}
			defer run.Stop()
			out := t.TempDir()
			var wg sync.WaitGroup
			for i, h := range hosts {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for k := range tc.want {
						// As on a FOG server, the stream's sender is up
						// before its receivers start: udpcast's receiver
						// asks once and then waits for one hello, so the
						// other order can lose the rendezvous.
						if !waitForLog(&log, "Broadcasting control", k+1, 30*time.Second) {
							t.Errorf("%s: sender %d did not start:\n%s", h.NS, k, log.String())
							return
						}
						file := filepath.Join(out, fmt.Sprintf("pc%d-%d", i, k))
						// FOS's receiver command; --file and a start
						// timeout so a broken test ends.
						cmd := h.Command(ctx, "udp-receiver", "--nokbd", "--portbase", strconv.Itoa(s.Port), "--ttl", "32",
							"--mcast-rdv-address", n.Switch.IP.String(), "--start-timeout", "20", "--file", file)
						if b, err := cmd.CombinedOutput(); err != nil {
							t.Errorf("%s stream %d: udp-receiver: %v\n%s", h.NS, k, err, b)
							return
						}
					}
				}()
			}
			wg.Wait()
			select {
			case <-run.Done():
				if err := run.Wait(); err != nil {
					t.Errorf("sender chain: %v\n%s", err, log.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("the sender chain did not end after every stream was received\n%s", log.String())
			}
			for i := range hosts {
				for k, want := range tc.want {
					got, err := os.ReadFile(filepath.Join(out, fmt.Sprintf("pc%d-%d", i, k)))
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, want) {
						t.Errorf("pc%d stream %d: got %d bytes, want %d (first bytes %q)", i, k, len(got), len(want), got[:min(len(got), 16)])
					}
				}
			}
			if t.Failed() || testing.Verbose() {
				t.Logf("udp-sender log:\n%s", log.String())
			}
			if got := strings.Count(log.String(), "Transfer complete"); got != len(tc.want) {
				t.Logf("udp-sender said 'Transfer complete' %d times for %d streams", got, len(tc.want))
			}
		})
	}
}

// TestManagerStop stops a chain whose sender waits for receivers that
// never come: the whole process group goes.
func TestManagerStop(t *testing.T) {
	lab.Require(t, "udp-sender")
	n := lab.T(t, 82)
	dir := makeDir(t, "d1p1.img", "d1p2.img")
	s := Sender{Form: Form15, Dir: dir, ImageType: TypeResizable, Interface: n.Bridge, Clients: 5, Port: 9000, MaxWait: 10}
	var log lab.Output
	run, err := s.Start(context.Background(), n.Switch.Command, &log)
	if err != nil {
		t.Fatal(err)
	}
	if !waitForLog(&log, "Broadcasting control", 1, 10*time.Second) {
		t.Fatalf("udp-sender did not start:\n%s", log.String())
	}
	if !GroupAlive(run.PID) {
		t.Fatal("the chain's process group does not run")
	}
	if err := run.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-run.Done():
	default:
		t.Fatal("Stop returned before the chain ended")
	}
	// Nothing of the chain's process group runs (processes are looked up
	// by the group's id, never by name: other tests run udp-sender too).
	if GroupAlive(run.PID) {
		t.Errorf("process group %d still runs after Stop", run.PID)
	}
}

// waitForLog waits until s occurs n times in log.
func waitForLog(log *lab.Output, s string, n int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for strings.Count(log.String(), s) < n {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func header(t *testing.T, id string, parts ...[]byte) []byte {
	h, err := fogmc.Format(id)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Join(append([][]byte{h}, parts...), nil)
}
