package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/lab"
	"github.com/imgcast/imgcast/pkg/fogmc"
	"github.com/imgcast/imgcast/pkg/status"
)

// testLogger logs through t.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func testLog(t testing.TB) *log.Logger { return log.New(testWriter{t}, "", log.Lmicroseconds) }

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func writeFiles(t testing.TB, dir string, files map[string][]byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func withHeader(t testing.TB, id string, parts ...[]byte) []byte {
	h, err := fogmc.Format(id)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Join(append([][]byte{h}, parts...), nil)
}

// TestMulticastChainToTwoReceivers drives the real udp-sender through the
// server and receives with udpcast's own udp-receiver on two hosts: both
// partitions, on portbase and portbase+2, arrive byte for byte, each behind
// its FOGMC1 header.
func TestMulticastChainToTwoReceivers(t *testing.T) {
	lab.Require(t, "udp-sender", "udp-receiver")
	n := lab.T(t, 71)
	hosts := make([]*lab.Host, 2)
	for i := range hosts {
		h, err := n.AddHost(fmt.Sprintf("r%d", i), 11+i)
		if err != nil {
			t.Fatal(err)
		}
		hosts[i] = h
	}
	images := t.TempDir()
	p1, p2a, p2b := randomBytes(t, 3<<20+123), randomBytes(t, 1<<20), randomBytes(t, 300<<10)
	writeFiles(t, filepath.Join(images, "lab"), map[string][]byte{
		"d1.partitions": []byte("label: gpt\n"),
		"d1p1.img":      p1,
		"d1p2.img":      p2a, // FOG split: the first piece keeps the bare name
		"d1p2.img.001":  p2b,
	})
	srv, err := New(Config{
		Images: images,
		Sender: SenderConfig{Interface: n.Bridge, PortBase: 9000, Clients: 2, MaxWait: 30 * time.Second,
			RetriesUntilDrop: 50, StreamHeader: true, Program: "udp-sender"},
		Command: n.Switch.Command,
		Log:     testLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if s := srv.Session(); s.Phase != status.Waiting || !s.Joinable {
		t.Fatalf("before any receiver: session %s joinable=%v, want waiting and joinable", s.Phase, s.Joinable)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	out := t.TempDir()
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for part := range 2 {
				file := filepath.Join(out, fmt.Sprintf("h%d-p%d", i, part))
				cmd := h.Command(ctx, "udp-receiver", "--nokbd", "--interface", "eth0",
					"--portbase", strconv.Itoa(9000+2*part), "--start-timeout", "60", "-f", file)
				if b, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("%s partition %d: udp-receiver: %v\n%s", h.NS, part, err, b)
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-srv.ChainDone():
	case <-time.After(30 * time.Second):
		t.Fatal("sender chain did not finish")
	}
	s := srv.Session()
	if s.Phase != status.Finished || s.Joinable {
		t.Errorf("after the chain: session %s joinable=%v (%s), want finished", s.Phase, s.Joinable, s.Message)
	}
	want := [][]byte{withHeader(t, "d1p1.img", p1), withHeader(t, "d1p2.img", p2a, p2b)}
	for i := range hosts {
		for part := range 2 {
			got, err := os.ReadFile(filepath.Join(out, fmt.Sprintf("h%d-p%d", i, part)))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want[part]) {
				t.Errorf("host %d partition %d: got %d bytes, want %d (header + image)", i, part, len(got), len(want[part]))
			}
		}
	}
	for i, st := range s.Streams {
		if st.State != status.StreamDone || len(st.Receivers) != 2 || st.StartedAt == nil || st.Exit != "exit status 0" {
			t.Errorf("stream %d = %+v", i, st)
		}
		if st.BytesSent != int64(len(want[i])) {
			t.Errorf("stream %d: udp-sender reported %d bytes sent, want %d", i, st.BytesSent, len(want[i]))
		}
	}
}

// TestRollingSessionsWithUdpSender runs rolling sessions with the real
// udp-sender and udpcast's udp-receiver: machine A joins session 1; machine
// B asks after session 1 has started, waits (status.WaitForSession) for
// session 2, and receives it on session 2's port base. Both get every
// partition byte for byte.
func TestRollingSessionsWithUdpSender(t *testing.T) {
	lab.Require(t, "udp-sender", "udp-receiver")
	n := lab.T(t, 73)
	a, err := n.AddHost("a", 11)
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.AddHost("b", 12)
	if err != nil {
		t.Fatal(err)
	}
	images := t.TempDir()
	p1, p2 := randomBytes(t, 3<<20), randomBytes(t, 512<<10)
	writeFiles(t, filepath.Join(images, "lab"), map[string][]byte{"d1p1.img": p1, "d1p2.img": p2})
	srv, err := New(Config{
		Images:  images,
		Rolling: true,
		Sender: SenderConfig{Interface: n.Bridge, PortBase: 9000, Clients: 1, RetriesUntilDrop: 50,
			MaxBitrate: "20m", StreamHeader: true, Program: "udp-sender"}, // session 1 takes over a second
		Command: n.Switch.Command,
		Log:     testLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sessionURL := "http://" + ln.Addr().String() + "/api/session"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	out := t.TempDir()
	// image is what a client does: ask for its session, then receive each
	// partition on the port the session gives it.
	image := func(h *lab.Host, mac string) (status.Session, error) {
		s, err := status.WaitForSession(ctx, &http.Client{}, sessionURL, mac, func(f string, args ...any) { t.Logf(h.NS+": "+f, args...) })
		if err != nil {
			return s, err
		}
		for i, st := range s.Streams {
			file := filepath.Join(out, fmt.Sprintf("%s-p%d", mac, i))
			cmd := h.Command(ctx, "udp-receiver", "--nokbd", "--interface", "eth0",
				"--portbase", strconv.Itoa(st.Port), "--start-timeout", "60", "-f", file)
			if b, err := cmd.CombinedOutput(); err != nil {
				return s, fmt.Errorf("partition %d: udp-receiver: %v\n%s", st.Partition, err, b)
			}
		}
		return s, nil
	}
	const macA, macB = "52:54:00:00:00:0a", "52:54:00:00:00:0b"
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if s, err := image(a, macA); err != nil || s.ID != 1 || s.PortBase != 9000 {
			t.Errorf("machine A: session %d on %d: %v", s.ID, s.PortBase, err)
		}
	}()
	waitFor(t, "session 1 to start sending", func() bool { return srv.Session().Phase == status.Sending })
	s, err := image(b, macB)
	if err != nil || s.ID != 2 || s.PortBase != 9004 {
		t.Errorf("machine B: session %d on %d: %v; want session 2 on 9004", s.ID, s.PortBase, err)
	}
	wg.Wait()

	waitFor(t, "both sessions to finish", func() bool {
		all := srv.Sessions()
		return len(all) == 2 && all[0].Phase == status.Finished && all[1].Phase == status.Finished
	})
	want := [][]byte{withHeader(t, "d1p1.img", p1), withHeader(t, "d1p2.img", p2)}
	for _, mac := range []string{macA, macB} {
		for i := range want {
			got, err := os.ReadFile(filepath.Join(out, fmt.Sprintf("%s-p%d", mac, i)))
			if err != nil || !bytes.Equal(got, want[i]) {
				t.Errorf("%s partition %d: %d bytes (%v), want %d", mac, i+1, len(got), err, len(want[i]))
			}
		}
	}
	for i, s := range srv.Sessions() {
		ip := []net.IP{a.IP, b.IP}[i].String()
		if r := s.Streams[0].Receivers; len(r) != 1 || r[0] != ip {
			t.Errorf("session %d's receivers %v, want [%s]", s.ID, r, ip)
		}
	}
}
