package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/lab"
	"golang.org/x/sys/unix"
)

// Integration tests: our udp-receiver binary and udpcast's programs as
// processes in lab network namespaces. They need root (make test runs
// them; IMGCAST_QUICK=1 skips them).

var (
	buildOnce   sync.Once
	builtBinary string
	buildErr    error
)

// ourBinary builds the command once per test run, statically, as the
// initramfs does.
func ourBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "udp-receiver-test")
		if err != nil {
			buildErr = err
			return
		}
		builtBinary = filepath.Join(dir, "udp-receiver")
		cmd := exec.Command("go", "build", "-o", builtBinary, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBinary
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBinary != "" {
		os.RemoveAll(filepath.Dir(builtBinary))
	}
	os.Exit(code)
}

// proc is a program running in a lab host.
type proc struct {
	name   string
	cmd    *exec.Cmd
	out    string // output file, for receivers
	stderr *lab.Output
	done   chan struct{}
	err    error
	ended  time.Time
}

func startProc(t *testing.T, h *lab.Host, name, out string, stdin *os.File, prog string, args ...string) *proc {
	t.Helper()
	return startCmd(t, name, out, stdin, h.Command(context.Background(), prog, args...))
}

// startCmd starts cmd as a proc, killed when the test ends.
func startCmd(t *testing.T, name, out string, stdin *os.File, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{name: name, out: out, stderr: &lab.Output{}, done: make(chan struct{}), cmd: cmd}
	p.cmd.Stderr = p.stderr
	if p.cmd.WaitDelay == 0 {
		// A killed program's children (--pipe) may hold its stderr open.
		p.cmd.WaitDelay = time.Second
	}
	if stdin != nil {
		p.cmd.Stdin = stdin
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		p.ended = time.Now()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- %s (%v):\n%s", name, p.err, p.stderr)
		}
	})
	return p
}

// waitFor waits until the process has printed text.
func waitFor(t *testing.T, p *proc, text string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(p.stderr.String(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not print %q", p.name, text)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wait waits for the process and returns its exit error.
func (p *proc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%s still running after %s", p.name, timeout)
		return nil
	}
}

// env is one lab network with a sender host and receiver hosts.
type env struct {
	t      *testing.T
	net    *lab.Net
	sender *lab.Host
	hosts  []*lab.Host
	dir    string
	port   int
}

func newEnv(t *testing.T, octet, receivers int) *env {
	lab.Require(t, "udp-sender", "udp-receiver", "cmp")
	ourBinary(t)
	n := lab.T(t, octet)
	e := &env{t: t, net: n, dir: t.TempDir(), port: 9000}
	var err error
	if e.sender, err = n.AddHost("snd", 2); err != nil {
		t.Fatal(err)
	}
	for i := range receivers {
		h, err := n.AddHost(fmt.Sprintf("r%d", i), 11+i)
		if err != nil {
			t.Fatal(err)
		}
		e.hosts = append(e.hosts, h)
	}
	return e
}

func (e *env) file(name string, size int) string {
	path := filepath.Join(e.dir, name)
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(uint64(size), 3))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return path
}

func (e *env) startSender(in string, args ...string) *proc {
	all := append([]string{"-f", in, "--portbase", strconv.Itoa(e.port)}, args...)
	return startProc(e.t, e.sender, "udp-sender", "", nil, "udp-sender", all...)
}

// ours starts our receiver on host i; stdin is /dev/null unless args has
// --nokbd, so it sends GO as soon as it is connected.
func (e *env) ours(i int, args ...string) *proc {
	out := filepath.Join(e.dir, fmt.Sprintf("ours%d-%d.out", i, time.Now().UnixNano()))
	all := append([]string{"--portbase", strconv.Itoa(e.port), "--file", out}, args...)
	return startProc(e.t, e.hosts[i], fmt.Sprintf("our receiver %d", i), out, nil, ourBinary(e.t), all...)
}

func (e *env) theirs(i int, args ...string) *proc {
	out := filepath.Join(e.dir, fmt.Sprintf("theirs%d-%d.out", i, time.Now().UnixNano()))
	all := append([]string{"--portbase", strconv.Itoa(e.port), "--file", out}, args...)
	return startProc(e.t, e.hosts[i], fmt.Sprintf("udpcast receiver %d", i), out, nil, "udp-receiver", all...)
}

// expectSame waits for every receiver to succeed and compares its output
// with in using cmp.
func (e *env) expectSame(in string, rs ...*proc) {
	e.t.Helper()
	for _, r := range rs {
		if err := r.wait(e.t, 60*time.Second); err != nil {
			e.t.Fatalf("%s: %v\n%s", r.name, err, r.stderr)
		}
		if out, err := exec.Command("cmp", in, r.out).CombinedOutput(); err != nil {
			e.t.Fatalf("%s: output differs: %v %s", r.name, err, out)
		}
		if !strings.Contains(r.stderr.String(), "Transfer complete.") {
			e.t.Errorf("%s: no 'Transfer complete.'", r.name)
		}
	}
}

func TestInterop(t *testing.T) {
	e := newEnv(t, 91, 4)
	small := e.file("small.bin", 3_000_001)
	medium := e.file("medium.bin", 6_000_000)
	nokbd := "--nokbd"
	minRx := func(n int) []string { return []string{"--nokbd", "--min-receivers", strconv.Itoa(n)} }

	t.Run("one receiver started before the sender", func(t *testing.T) {
		e.t = t
		r := e.ours(0) // stdin /dev/null: sends GO once connected
		time.Sleep(300 * time.Millisecond)
		e.startSender(small, nokbd)
		e.expectSame(small, r)
		if !strings.Contains(r.stderr.String(), "Sending go signal") {
			t.Error("no GO sent")
		}
	})
	t.Run("one receiver started after the sender", func(t *testing.T) {
		e.t = t
		e.startSender(small, nokbd)
		time.Sleep(300 * time.Millisecond)
		r := e.ours(0)
		e.expectSame(small, r)
	})
	t.Run("four receivers by multicast", func(t *testing.T) {
		e.t = t
		var rs []*proc
		for i := range 4 {
			rs = append(rs, e.ours(i, nokbd))
		}
		e.startSender(medium, minRx(4)...)
		e.expectSame(medium, rs...)
		if !strings.Contains(rs[0].stderr.String(), "Listening to multicast on 234.91.0.2") {
			t.Error("data group not joined")
		}
	})
	t.Run("ours and udpcast's receivers in one session", func(t *testing.T) {
		e.t = t
		rs := []*proc{e.ours(0, nokbd), e.theirs(1, nokbd), e.ours(2, nokbd), e.theirs(3, nokbd)}
		e.startSender(medium, minRx(4)...)
		e.expectSame(medium, rs...)
	})
	for _, loss := range []int{3, 10} {
		t.Run(fmt.Sprintf("%d%% loss", loss), func(t *testing.T) {
			e.t = t
			for _, h := range e.hosts[:2] {
				if err := h.DropUDP(e.port, loss); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = h.StopDropping() })
			}
			rs := []*proc{e.ours(0, nokbd), e.ours(1, nokbd), e.theirs(2, nokbd)}
			e.startSender(medium, minRx(3)...)
			e.expectSame(medium, rs...)
		})
	}
	t.Run("FEC 8x8/64 with 5% loss", func(t *testing.T) {
		e.t = t
		if err := e.hosts[0].DropUDP(e.port, 5); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.hosts[0].StopDropping() })
		rs := []*proc{e.ours(0, nokbd), e.ours(1, nokbd), e.theirs(2, nokbd)}
		e.startSender(medium, append(minRx(3), "--fec", "8x8/64")...)
		e.expectSame(medium, rs...)
	})
	t.Run("async FEC with 1% loss", func(t *testing.T) {
		e.t = t
		if err := e.hosts[0].DropUDP(e.port, 1); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.hosts[0].StopDropping() })
		rs := []*proc{e.ours(0, nokbd), e.ours(1, nokbd)}
		time.Sleep(200 * time.Millisecond)
		e.startSender(small, nokbd, "--async", "--fec", "8x8/64", "--max-bitrate", "100m", "--autostart", "1")
		e.expectSame(small, rs...)
	})
	t.Run("multicast rendezvous", func(t *testing.T) {
		e.t = t
		rdv := []string{nokbd, "--mcast-rdv-address", "239.91.1.1"}
		rs := []*proc{e.ours(0, rdv...), e.ours(1, rdv...)}
		e.startSender(small, append(minRx(2), "--mcast-rdv-address", "239.91.1.1")...)
		e.expectSame(small, rs...)
	})
	t.Run("broadcast data", func(t *testing.T) {
		e.t = t
		rs := []*proc{e.ours(0, nokbd), e.ours(1, nokbd)}
		e.startSender(small, append(minRx(2), "--broadcast")...)
		e.expectSame(small, rs...)
	})
	t.Run("TTL 2: rendezvous and data on 224.0.0.1", func(t *testing.T) {
		e.t = t
		rs := []*proc{e.ours(0, nokbd, "--ttl", "2"), e.theirs(1, nokbd, "--ttl", "2")}
		e.startSender(small, append(minRx(2), "--broadcast", "--ttl", "2")...)
		e.expectSame(small, rs...)
	})
	t.Run("point-to-point, fragmented 3996-byte blocks", func(t *testing.T) {
		e.t = t
		r := e.ours(0, nokbd)
		e.startSender(small, append(minRx(1), "--pointopoint", "--blocksize", "3999")...)
		e.expectSame(small, r)
	})
	t.Run("empty file", func(t *testing.T) {
		e.t = t
		empty := e.file("empty.bin", 0)
		r := e.ours(0)
		e.startSender(empty, nokbd)
		e.expectSame(empty, r)
	})
}

// TestInteropStartOrders: every receiver completes whichever of sender
// and receivers starts first, in the sender modes that decide when a
// transfer starts. udp-sender evaluates its start conditions (an async
// sender's next HELLO and --autostart count, --min-receivers, --max-wait)
// only after a quiet interval without any datagram, which receivers
// repeating their CONNECT_REQ every second never left it (issue 13).
func TestInteropStartOrders(t *testing.T) {
	e := newEnv(t, 96, 4)
	in := e.file("in.bin", 4_000_000)
	wait := []string{"--nokbd", "--start-timeout", "30"}
	tests := []struct {
		name        string
		sender      []string
		senderFirst bool
		oursOnly    bool // no udpcast receiver (e.g. a single receiver)
		receivers   int
	}{
		{"async FEC sender first", []string{"--async", "--fec", "8x8/64", "--max-bitrate", "50m", "--autostart", "5"}, true, false, 4},
		{"async FEC sender last", []string{"--async", "--fec", "8x8/64", "--max-bitrate", "50m", "--autostart", "2"}, false, false, 4},
		{"plain sender first", []string{"--min-receivers", "4"}, true, false, 4},
		{"plain sender with --rexmit-hello-interval last", []string{"--min-receivers", "4", "--rexmit-hello-interval", "500"}, false, false, 4},
		{"--autostart without --async, sender first", []string{"--autostart", "4"}, true, false, 4},
		{"--max-wait with fewer receivers than asked, sender first", []string{"--min-receivers", "8", "--max-wait", "4"}, true, false, 4},
		{"--min-wait, sender first", []string{"--min-receivers", "2", "--min-wait", "4"}, true, false, 4},
		{"--nopointopoint with one receiver, sender last", []string{"--min-receivers", "1", "--nopointopoint"}, false, true, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.t = t
			startSender := func() { e.startSender(in, append([]string{"--nokbd"}, tc.sender...)...) }
			if tc.senderFirst {
				startSender()
				time.Sleep(2500 * time.Millisecond) // its start-up HELLO is long gone
			}
			var rs []*proc
			for i := range tc.receivers {
				if i == tc.receivers-1 && !tc.oursOnly {
					rs = append(rs, e.theirs(i, wait...))
				} else {
					rs = append(rs, e.ours(i, wait...))
				}
				time.Sleep(100 * time.Millisecond)
			}
			if !tc.senderFirst {
				time.Sleep(time.Second)
				startSender()
			}
			e.expectSame(in, rs...)
			if !strings.Contains(rs[0].stderr.String(), "Listening to multicast on 234.96.0.2") {
				t.Errorf("data group not joined:\n%s", rs[0].stderr)
			}
		})
	}
}

// TestInteropStreamingLateJoiner: a receiver joining an async streaming
// sender mid-transfer writes an exact suffix starting at a slice.
func TestInteropStreamingLateJoiner(t *testing.T) {
	e := newEnv(t, 92, 2)
	in := e.file("stream.bin", 8_000_000)
	early := e.ours(0, "--nokbd")
	time.Sleep(200 * time.Millisecond)
	e.startSender(in, "--nokbd", "--async", "--streaming", "--fec", "8x8/128", "--max-bitrate", "40m", "--autostart", "1")
	time.Sleep(2500 * time.Millisecond) // autostart after ~2 s, then 1.6 s of data
	late := e.ours(1, "--nokbd")
	e.expectSame(in, early)
	if err := late.wait(t, 30*time.Second); err != nil {
		t.Fatalf("late joiner: %v\n%s", err, late.stderr)
	}
	whole, _ := os.ReadFile(in)
	got, _ := os.ReadFile(late.out)
	const slice = 1024 * 1456
	if len(got) == 0 || len(got) == len(whole) || (len(whole)-len(got))%slice != 0 || !bytes.HasSuffix(whole, got) {
		t.Fatalf("late joiner wrote %d bytes: not a proper suffix starting at a slice of the %d sent", len(got), len(whole))
	}
	t.Logf("late joiner got the last %d of %d bytes", len(got), len(whole))
}

// TestInteropFailures: the ways a reception can end badly.
func TestInteropFailures(t *testing.T) {
	e := newEnv(t, 93, 2)
	in := e.file("in.bin", 6_000_000)

	t.Run("sender killed mid-transfer", func(t *testing.T) {
		e.t = t
		r := e.ours(0, "--nokbd", "--receive-timeout", "2")
		snd := e.startSender(in, "--nokbd", "--min-receivers", "1", "--max-bitrate", "20m")
		waitFor(t, r, "bytes=")
		_ = snd.cmd.Process.Kill()
		killed := time.Now()
		err := r.wait(t, 10*time.Second)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("exit %v, want status 1", err)
		}
		if d := r.ended.Sub(killed); d > 3500*time.Millisecond {
			t.Errorf("exited %s after the sender died, receive timeout is 2s", d)
		}
		if !strings.Contains(r.stderr.String(), "went silent after") {
			t.Errorf("message does not say the sender went silent:\n%s", r.stderr)
		}
	})
	t.Run("no sender: start timeout", func(t *testing.T) {
		e.t = t
		r := e.ours(0, "--nokbd", "--start-timeout", "1")
		err := r.wait(t, 10*time.Second)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 255 {
			t.Fatalf("exit %v, want status 255", err)
		}
		if !strings.Contains(r.stderr.String(), "no sender answered on 10.93.0.255:9001 within 1s") {
			t.Errorf("message:\n%s", r.stderr)
		}
		if _, err := os.Stat(r.out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("output file created without a sender: %v", err)
		}
	})
	t.Run("async without FEC, loss: dropped, or --ignore-lost-data", func(t *testing.T) {
		e.t = t
		for _, h := range e.hosts {
			if err := h.DropUDP(e.port, 5); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = h.StopDropping() })
		}
		lossy := e.ours(0, "--nokbd", "--ignore-lost-data")
		strict := e.ours(1, "--nokbd")
		time.Sleep(200 * time.Millisecond)
		e.startSender(in, "--nokbd", "--async", "--max-bitrate", "200m", "--autostart", "1")
		if err := lossy.wait(t, 30*time.Second); err != nil {
			t.Fatalf("--ignore-lost-data: %v", err)
		}
		if st, err := os.Stat(lossy.out); err != nil || st.Size() != 6_000_000 {
			t.Errorf("--ignore-lost-data output: %v, size %d", err, st.Size())
		}
		err := strict.wait(t, 30*time.Second)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(strict.stderr.String(), "dropped by sender") {
			t.Errorf("without --ignore-lost-data: %v, want status 1 and 'dropped by sender'\n%s", err, strict.stderr)
		}
	})
	t.Run("start timeout after connecting: empty output, status 0", func(t *testing.T) {
		e.t = t
		e.startSender(in, "--nokbd") // waits for a GO that never comes
		r := e.ours(0, "--nokbd", "--start-timeout", "1")
		if err := r.wait(t, 10*time.Second); err != nil {
			t.Fatalf("exit %v, want status 0 (as udpcast)", err)
		}
		if st, err := os.Stat(r.out); err != nil || st.Size() != 0 {
			t.Errorf("output: %v", err)
		}
		if !strings.Contains(r.stderr.String(), "accepted us but sent no data within 1s") {
			t.Errorf("no warning:\n%s", r.stderr)
		}
	})
	t.Run("garbage and foreign packets on both ports", func(t *testing.T) {
		e.t = t
		junk, err := e.net.AddHost("junk", 66)
		if err != nil {
			t.Fatal(err)
		}
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		targets := []string{
			net.JoinHostPort(e.hosts[0].IP.String(), "9000"), net.JoinHostPort(e.hosts[1].IP.String(), "9000"),
			net.JoinHostPort(e.net.Broadcast().String(), "9000"), "234.93.0.2:9000",
			net.JoinHostPort(e.sender.IP.String(), "9001"), net.JoinHostPort(e.net.Broadcast().String(), "9001"),
		}
		g := junk.Command(ctx, os.Args[0], "-test.run=^TestHelperGarbage$")
		g.Env = append(os.Environ(), "IMGCAST_GARBAGE_TO="+strings.Join(targets, ","))
		var gerr lab.Output
		g.Stderr, g.Stdout = &gerr, &gerr
		if err := g.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { stop(); _ = g.Wait() }()
		time.Sleep(300 * time.Millisecond) // garbage already flowing at rendezvous
		// The garbage keeps udp-sender from ever seeing the 2 s of quiet
		// its --min-receivers needs: the second receiver's GO starts it.
		e.startSender(in, "--nokbd")
		first := e.ours(0, "--nokbd")
		waitFor(t, first, "Connected as")
		rs := []*proc{first, e.ours(1)}
		e.expectSame(in, rs...)
		if !strings.Contains(rs[0].stderr.String(), "Rogue packet") {
			t.Errorf("no rogue packet reported: did the garbage arrive?\n%s", gerr.String())
		}
	})
	t.Run("writing to a block device", func(t *testing.T) {
		e.t = t
		img := filepath.Join(e.dir, "disk.img")
		if err := os.WriteFile(img, make([]byte, 8<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("losetup", "-f", "--show", img).Output()
		if err != nil {
			t.Fatalf("losetup: %v", err)
		}
		dev := strings.TrimSpace(string(out))
		t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
		r := startProc(t, e.hosts[0], "our receiver to "+dev, dev, nil, ourBinary(t),
			"--nokbd", "--portbase", "9000", "--file", dev)
		e.startSender(in, "--nokbd", "--min-receivers", "1")
		if err := r.wait(t, 60*time.Second); err != nil {
			t.Fatalf("%v\n%s", err, r.stderr)
		}
		if out, err := exec.Command("cmp", "-n", "6000000", in, dev).CombinedOutput(); err != nil {
			t.Fatalf("device content differs: %s", out)
		}
	})
}

// TestHelperGarbage is not a test: run as a subprocess with
// IMGCAST_GARBAGE_TO set, it sprays junk and well-formed foreign packets
// at the given addresses until killed.
func TestHelperGarbage(t *testing.T) {
	to := os.Getenv("IMGCAST_GARBAGE_TO")
	if to == "" {
		t.Skip("helper process only")
	}
	var dsts []*net.UDPAddr
	for _, a := range strings.Split(to, ",") {
		ap, err := netip.ParseAddrPort(a) // literal addresses only: never a name lookup
		if err != nil {
			t.Fatal(err)
		}
		dsts = append(dsts, net.UDPAddrFromAddrPort(ap))
	}
	// From the sender's port (9001): everything but HELLO and
	// CONNECT_REPLY, which a receiver cannot tell from a real sender's
	// before it has one. From other ports: anything.
	asSender, err := net.ListenUDP("udp4", &net.UDPAddr{Port: 9001})
	if err != nil {
		t.Fatal(err)
	}
	other, err := net.ListenUDP("udp4", &net.UDPAddr{Port: 40000})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*net.UDPConn{asSender, other} {
		raw, _ := c.SyscallConn()
		_ = raw.Control(func(fd uintptr) { _ = setBroadcast(int(fd)) })
	}
	rng := rand.New(rand.NewPCG(1, 2))
	header := func(op uint16, slice, block, bytes uint32) []byte {
		b := binary.BigEndian.AppendUint16(nil, op)
		b = binary.BigEndian.AppendUint16(b, 8)
		b = binary.BigEndian.AppendUint32(b, slice)
		b = binary.BigEndian.AppendUint32(b, block<<16)
		b = binary.BigEndian.AppendUint32(b, bytes)
		return b
	}
	for i := 0; ; i++ {
		var pkt []byte
		conn := other
		switch i % 5 {
		case 0: // random junk
			pkt = make([]byte, rng.IntN(1500))
			for j := range pkt {
				pkt[j] = byte(rng.Uint32())
			}
		case 1: // foreign DATA that would land in our slices
			pkt = append(header(8, uint32(rng.IntN(8)), uint32(rng.IntN(112)), 163072), make([]byte, 1456)...)
			conn = asSender
		case 2: // foreign REQACK and FEC
			if i%2 == 0 {
				pkt = append(header(6, uint32(rng.IntN(8)), 0, 163072), make([]byte, 128)...)
			} else {
				pkt = append(header(9, uint32(rng.IntN(8)), uint32(rng.IntN(64)), 163072), make([]byte, 1456)...)
			}
			conn = asSender
		case 3: // HELLO / CONNECT_REPLY / OK / truncated headers from a foreign port
			ops := []uint16{0x0500, 7, 0, 1, 3, 4, 11}
			pkt = header(ops[rng.IntN(len(ops))], 0, 0, 0)[:rng.IntN(17)]
		case 4: // junk from the sender's port, never a rendezvous opcode
			pkt = make([]byte, 2+rng.IntN(200))
			for j := range pkt {
				pkt[j] = byte(rng.Uint32())
			}
			pkt[0] = 0x80 | pkt[0]
			conn = asSender
		}
		_, _ = conn.WriteToUDP(pkt, dsts[i%len(dsts)])
		if i%20 == 0 {
			time.Sleep(5 * time.Millisecond) // ~4000 packets/s
		}
	}
}

func setBroadcast(fd int) error {
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
}

// TestInteropCommandHabits: --pipe, --log, the 'q' key and SIGINT behave
// as udpcast's receiver does.
func TestInteropCommandHabits(t *testing.T) {
	e := newEnv(t, 95, 1)
	in := e.file("in.bin", 3_000_000)

	t.Run("--pipe gzip -dc and --log", func(t *testing.T) {
		e.t = t
		gz := in + ".gz"
		if out, err := exec.Command("sh", "-c", "gzip -1 -c "+in+" > "+gz).CombinedOutput(); err != nil {
			t.Fatalf("gzip: %v %s", err, out)
		}
		log := filepath.Join(e.dir, "rx.log")
		r := e.ours(0, "--pipe", "gzip -dc", "--log", log)
		e.startSender(gz, "--nokbd")
		e.expectSame(in, r)
		if !strings.Contains(r.stderr.String(), "Compressed UDP receiver for") {
			t.Errorf("banner:\n%s", r.stderr)
		}
		logged, _ := os.ReadFile(log)
		if !regexpMatch(`(?m)^\d\d:\d\d:\d\d\.\d{6} Connected as #0 to 10\.95\.0\.2$`, string(logged)) {
			t.Errorf("log file:\n%s", logged)
		}
		if strings.Contains(r.stderr.String(), "Connected as") {
			t.Error("informational message on stderr despite --log")
		}
	})
	t.Run("--pipe command failing gives its status", func(t *testing.T) {
		e.t = t
		script := filepath.Join(e.dir, "fail3")
		if err := os.WriteFile(script, []byte("#!/bin/sh\nhead -c 1000 >/dev/null\nexit 3\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		r := e.ours(0, "--pipe", script)
		e.startSender(in, "--nokbd")
		err := r.wait(t, 30*time.Second)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("exit %v, want status 3\n%s", err, r.stderr)
		}
		if !strings.Contains(r.stderr.String(), "Pipe process died with code 3") {
			t.Errorf("message:\n%s", r.stderr)
		}
	})
	t.Run("q on the console quits with status 1", func(t *testing.T) {
		e.t = t
		e.startSender(in, "--nokbd") // waits for a GO that never comes
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer pr.Close()
		out := filepath.Join(e.dir, "q.out")
		r := startProc(t, e.hosts[0], "our receiver", out, pr, ourBinary(t), "--file", out)
		waitFor(t, r, "Press any key to start receiving data!")
		pw.Write([]byte("q"))
		pw.Close()
		err = r.wait(t, 5*time.Second)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("exit %v, want status 1", err)
		}
	})
	t.Run("SIGINT: killed by the signal, sender told", func(t *testing.T) {
		e.t = t
		snd := e.startSender(in, "--nokbd", "--max-bitrate", "8m")
		r := e.ours(0)
		waitFor(t, r, "bytes=")
		_ = r.cmd.Process.Signal(os.Interrupt)
		err := r.wait(t, 5*time.Second)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != -1 || !strings.Contains(ee.Error(), "interrupt") {
			t.Fatalf("exit %v, want death by SIGINT", err)
		}
		if !strings.Contains(r.stderr.String(), "Signal 2: Cancelled by user") {
			t.Errorf("message:\n%s", r.stderr)
		}
		// Our DISCONNECT leaves the sender without participants.
		if err := snd.wait(t, 10*time.Second); err != nil {
			t.Logf("udp-sender: %v", err)
		}
	})
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
