package main

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imgcast/imgcast/pkg/receiver/receivertest"
)

// Crafted-packet tests: our udp-receiver binary, on the loopback
// interface, against a scripted sender (pkg/receiver/receivertest) that
// sends hand-built datagrams from the sender's address 127.0.0.1:P+1 (and
// a second host's, 127.0.0.2). Everything stays on loopback; no root is
// needed.

const craftedBS = 1456

var loopback = netip.MustParseAddr("127.0.0.1")

// crafted is one receiver and the sender scripting its session.
type crafted struct {
	t    *testing.T
	port int
	snd  *receivertest.Sender
	rcv  *proc
	to   netip.AddrPort // the receiver, once it asked to connect
}

// startCrafted opens the sender socket on a free port base and starts
// our receiver against it with args added.
func startCrafted(t *testing.T, args ...string) *crafted {
	t.Helper()
	c := &crafted{t: t}
	for try := 0; ; try++ {
		c.port = 20000 + 2*rand.IntN(20000)
		snd, err := receivertest.Listen(netip.AddrPortFrom(loopback, uint16(c.port+1)))
		if err == nil {
			c.snd = snd
			break
		}
		if try == 20 {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { c.snd.Close() })
	out := filepath.Join(t.TempDir(), "out.bin")
	all := append([]string{"-i", "lo", "--portbase", strconv.Itoa(c.port), "--nokbd", "--file", out,
		"--exit-wait", "50", "--start-timeout", "15", "--receive-timeout", "15"}, args...)
	c.rcv = startCmd(t, "our receiver", out, nil, exec.Command(ourBinary(t), all...))
	return c
}

// accept answers the receiver's CONNECT_REQ with client number 0.
func (c *crafted) accept() {
	c.t.Helper()
	to, err := c.snd.Accept(craftedBS, 5*time.Second)
	if err != nil {
		c.t.Fatalf("handshake: %v", err)
	}
	c.to = to
	time.Sleep(20 * time.Millisecond) // the receiver joins its groups
}

func (c *crafted) send(pkts ...[]byte) {
	c.t.Helper()
	for _, p := range pkts {
		if err := c.snd.Send(c.to, p); err != nil {
			c.t.Fatal(err)
		}
	}
}

// stream sends data from slice first on, as udp-sender does, and ends
// the stream.
func (c *crafted) stream(first int32, data []byte) {
	c.t.Helper()
	if err := c.snd.Stream(c.to, first, data, craftedBS, 4*craftedBS); err != nil {
		c.t.Errorf("sender: %v", err)
	}
}

// exit waits for the receiver and returns its exit status.
func (c *crafted) exit(timeout time.Duration) int {
	c.t.Helper()
	err := c.rcv.wait(c.t, timeout)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	c.t.Fatalf("receiver: %v", err)
	return -1
}

// expectOutput checks that the receiver exited 0 with want as output.
func (c *crafted) expectOutput(want []byte) {
	c.t.Helper()
	if code := c.exit(20 * time.Second); code != 0 {
		c.t.Fatalf("receiver exit status %d, want 0:\n%s", code, c.rcv.stderr)
	}
	got, err := os.ReadFile(c.rcv.out)
	if err != nil || !bytes.Equal(got, want) {
		c.t.Fatalf("output: %d bytes (%v), want the %d sent", len(got), err, len(want))
	}
}

func payload(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 9))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func block(data []byte, b int) []byte {
	return data[b*craftedBS : min(len(data), (b+1)*craftedBS)]
}

func TestCraftedFECStripeOverflow(t *testing.T) {
	// One FEC block whose interleave (1) puts all 200 blocks of the
	// slice into one stripe, more than udpcast's code covers: decoding
	// it crashed the receiver. Now it is ignored and the slice completes
	// by retransmission.
	c := startCrafted(t)
	c.accept()
	data := payload(200*craftedBS, 1)
	for b := range 199 {
		c.send(receivertest.Data(0, b, len(data), block(data, b)))
	}
	c.send(receivertest.FEC(0, 1, 0, len(data), bytes.Repeat([]byte{0xfe}, craftedBS)))
	if err := c.snd.Acknowledge(c.to, 0, data, craftedBS); err != nil {
		t.Errorf("slice 0: %v", err)
	}
	if err := c.snd.Acknowledge(c.to, 1, nil, craftedBS); err != nil {
		t.Errorf("end: %v", err)
	}
	c.expectOutput(data)
}

func TestCraftedHandshakeOnlyFromTheRendezvousAddress(t *testing.T) {
	c := startCrafted(t, "--mcast-rdv-address", "127.0.0.1")
	// Another host sprays async HELLOs (which would connect a receiver
	// at once) and its own stream, from the sender's port.
	intruder, err := receivertest.Listen(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), uint16(c.port+1)))
	if err != nil {
		t.Fatal(err)
	}
	defer intruder.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		rcv := netip.AddrPortFrom(loopback, uint16(c.port))
		evil := []byte("written by an intruder")
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			_ = intruder.Send(rcv, receivertest.Hello(receivertest.OpHello, receivertest.CapsAsync, netip.Addr{}, craftedBS))
			_ = intruder.Send(rcv, receivertest.Data(0, 0, len(evil), evil))
			_ = intruder.Send(rcv, receivertest.ReqAck(1, 0, i))
		}
	})
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(100 * time.Millisecond) // the intruder is first
	c.accept()
	data := payload(30_000, 2)
	c.stream(0, data)
	c.expectOutput(data)
	if !strings.Contains(c.rcv.stderr.String(), "Ignored a handshake message from 127.0.0.2") {
		t.Errorf("the intruder's HELLOs are not reported:\n%s", c.rcv.stderr)
	}
}

func TestCraftedSinglePacketsEndNothing(t *testing.T) {
	data := payload(40_000, 3) // 28 blocks: slices of 4 blocks, the last 3
	tests := []struct {
		name   string
		script func(c *crafted)
	}{
		{"DATA two slices ahead, and a REQACK far ahead", func(c *crafted) {
			c.accept()
			c.send(receivertest.Data(0, 0, 4*craftedBS, block(data, 0)),
				receivertest.Data(2, 0, 4*craftedBS, block(data, 8)),
				receivertest.ReqAck(100, 4*craftedBS, 0))
			c.stream(0, data)
		}},
		{"an end of the stream announced once", func(c *crafted) {
			c.accept()
			sl := data[:4*craftedBS]
			c.send(receivertest.DataPackets(0, sl, craftedBS)...)
			if err := c.snd.Acknowledge(c.to, 0, sl, craftedBS); err != nil {
				c.t.Error(err)
			}
			c.send(receivertest.ReqAck(1, 0, 0))
			c.stream(1, data[4*craftedBS:])
		}},
		{"a slice size announced once", func(c *crafted) {
			c.accept()
			c.send(receivertest.ReqAck(0, 5, 0))
			c.stream(0, data)
		}},
		{"a refusal", func(c *crafted) {
			m, err := c.snd.Expect(receivertest.OpConnectReq, 5*time.Second)
			if err != nil {
				c.t.Fatal(err)
			}
			c.to = m.From
			c.send(receivertest.ConnectReply(-1, craftedBS, receivertest.CapsSender, netip.Addr{}))
			c.accept() // asked again
			c.stream(0, data)
		}},
		{"a HELLO with an unusable block size", func(c *crafted) {
			m, err := c.snd.Expect(receivertest.OpConnectReq, 5*time.Second)
			if err != nil {
				c.t.Fatal(err)
			}
			c.to = m.From
			c.send(receivertest.Hello(receivertest.OpHello, receivertest.CapsAsync, netip.Addr{}, 0))
			time.Sleep(50 * time.Millisecond)
			c.send(receivertest.ConnectReply(0, craftedBS, receivertest.CapsSender, netip.Addr{}))
			time.Sleep(20 * time.Millisecond)
			c.stream(0, data)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := startCrafted(t)
			tc.script(c)
			c.expectOutput(data)
		})
	}
}

func TestCraftedLeftBehindFailsClearlyAndQuickly(t *testing.T) {
	data := payload(40_000, 4)
	tests := []struct {
		name   string
		script func(c *crafted)
		within time.Duration // after the first packet ahead
	}{
		{"the sender goes on with later slices", func(c *crafted) {
			c.send(receivertest.Data(0, 0, 4*craftedBS, block(data, 0)))
			for n := int32(2); n < 6; n++ {
				c.send(receivertest.DataPackets(n, data[4*craftedBS*int(n):4*craftedBS*int(n+1)], craftedBS)...)
			}
		}, time.Second},
		{"the sender ends without us", func(c *crafted) {
			c.send(receivertest.Data(0, 0, 4*craftedBS, block(data, 0)))
			c.send(receivertest.ReqAck(2, 0, 0))
		}, 5 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := startCrafted(t)
			c.accept()
			begin := time.Now()
			tc.script(c)
			if code := c.exit(20 * time.Second); code != 1 {
				t.Fatalf("exit status %d, want 1", code)
			}
			if d := c.rcv.ended.Sub(begin); d > tc.within {
				t.Errorf("took %s to notice, want at most %s", d, tc.within)
			}
			if !strings.Contains(c.rcv.stderr.String(), "dropped by sender") {
				t.Errorf("message:\n%s", c.rcv.stderr)
			}
		})
	}
}

func TestCraftedRefusedTwiceIsRefused(t *testing.T) {
	c := startCrafted(t)
	for range 2 {
		if _, err := c.snd.Expect(receivertest.OpConnectReq, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		c.to = netip.AddrPortFrom(loopback, uint16(c.port))
		c.send(receivertest.ConnectReply(-1, craftedBS, receivertest.CapsSender, netip.Addr{}))
	}
	if code := c.exit(5 * time.Second); code != 1 || !strings.Contains(c.rcv.stderr.String(), "refused the connection") {
		t.Fatalf("exit status %d:\n%s", code, c.rcv.stderr)
	}
}

// TestCraftedHostileSenderMemory measures the receiver's peak RSS against
// senders that announce as much as the protocol lets them: 64 MiB slices
// (1024 blocks of 65000 bytes) made the receiver take ~130 MiB for two
// slices, more than a 256 MiB client can spare. Slices that do fit, sent
// to a receiver whose output never drains, stay within the limit too.
func TestCraftedHostileSenderMemory(t *testing.T) {
	// The peak comes from /proc/PID/status, not from wait4's ru_maxrss:
	// Linux carries the parent's high-water mark across fork and exec into
	// the child's ru_maxrss, so under -race the test binary's own 40 MiB
	// showed up as the receiver's.
	tests := []struct {
		name      string
		args      []string
		blockSize int
		blocks    int   // per slice
		slices    int32 // sent, each complete but for one block covered by FEC
		wantExit  int   // -1: still running after 5 s (then killed)
		wantMsg   string
	}{
		{"64 MiB slices: refused", nil, 65000, 1024, 2, 1, "too large for this receiver's memory"},
		{"5 MB slices, output stuck: held within the limit", []string{"--pipe", "sleep 6"}, 5000, 1000, 8, -1, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := startCrafted(t, tc.args...)
			peakRSS := watchPeakRSS(c.rcv.cmd.Process.Pid, c.rcv.done)
			to, err := c.snd.Accept(uint32(tc.blockSize), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c.to = to
			time.Sleep(20 * time.Millisecond)
			size := tc.blocks * tc.blockSize
			pay := make([]byte, tc.blockSize)
			for n := range tc.slices {
				for b := range tc.blocks - 1 {
					pay[0] = byte(b)
					c.send(receivertest.Data(n, b, size, pay))
					if b%16 == 15 {
						time.Sleep(200 * time.Microsecond) // let the receiver keep up
					}
				}
				for f := range 8 {
					c.send(receivertest.FEC(n, 8, f, size, pay))
				}
			}
			code := -1
			select {
			case <-c.rcv.done:
				code = c.exit(time.Second)
			case <-time.After(5 * time.Second):
				_ = c.rcv.cmd.Process.Kill()
				<-c.rcv.done
			}
			peak := peakRSS()
			t.Logf("peak RSS %d MiB, exit status %d", peak>>20, code)
			// 16 MiB of slices, up to 4 MiB of read buffers, the Go
			// runtime and the binary.
			if peak > 40<<20 {
				t.Errorf("peak RSS %d MiB, want at most 40", peak>>20)
			}
			if code != tc.wantExit || !strings.Contains(c.rcv.stderr.String(), tc.wantMsg) {
				t.Errorf("exit status %d, want %d with %q:\n%s", code, tc.wantExit, tc.wantMsg, c.rcv.stderr)
			}
		})
	}
}

// watchPeakRSS samples a process's VmHWM every 2 ms until done is closed,
// and returns a function that gives the last (highest) sample in bytes.
// A spike between the last sample and the exit is missed, but the memory
// this test looks for is held for as long as the slices are.
func watchPeakRSS(pid int, done <-chan struct{}) func() int64 {
	var peak atomic.Int64
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			if kb := vmHWM(pid); kb > 0 {
				peak.Store(kb << 10)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() int64 {
		<-stopped
		return peak.Load()
	}
}

// vmHWM is a running process's peak resident set in kB, or 0 once it is
// gone.
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb
		}
	}
	return 0
}
