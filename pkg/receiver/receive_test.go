package receiver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/lab"
)

// These tests run the library against the real udp-sender over the
// loopback interface of the test's own network namespace, which needs
// neither root nor a lab network (udpcast's sender then "broadcasts" to
// 127.0.0.1 and sends data by unicast).

func requireSender(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("udp-sender"); err != nil {
		if os.Getenv(lab.QuickEnv) != "" {
			t.Skip("udp-sender not installed")
		}
		t.Fatal("udp-sender is not installed; run scripts/deps.sh (make deps)")
	}
}

// testPort picks an even port base unlikely to collide with other test
// runs on the machine.
func testPort() int { return 30000 + 2*rand.IntN(10000) }

func writeRandomFile(t *testing.T, n int) (string, []byte) {
	t.Helper()
	data := randomBytes(rand.New(rand.NewPCG(uint64(n), 1)), n)
	path := filepath.Join(t.TempDir(), "in.bin")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, data
}

// startSender runs udp-sender on lo; the receiver's GO starts it.
func startSender(t *testing.T, port int, file string, extra ...string) (*exec.Cmd, *lab.Output) {
	t.Helper()
	args := append([]string{"-f", file, "--nokbd", "-i", "lo", "--portbase", strconv.Itoa(port)}, extra...)
	cmd := exec.Command("udp-sender", args...)
	var stderr lab.Output
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("udp-sender: %s", strings.ReplaceAll(stderr.String(), "\r", "\n"))
		}
	})
	return cmd, &stderr
}

func loopbackConfig(t *testing.T, port int) Config {
	start := make(chan struct{})
	close(start)
	return Config{
		Port: port, Interface: "lo", StartSignal: start, ExitWait: 100 * time.Millisecond,
		Logf: t.Logf,
	}
}

func TestReceiveLoopbackRepeatedly(t *testing.T) {
	requireSender(t)
	file, data := writeRandomFile(t, 2_000_003)
	port := testPort()
	for i := range 3 { // same port each time: sockets must be released
		startSender(t, port, file)
		cfg := loopbackConfig(t, port)
		var phases []Phase
		cfg.Progress = func(p Progress) {
			if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
				phases = append(phases, p.Phase)
			}
		}
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		p, err := Receive(ctx, cfg, &out)
		cancel()
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("run %d: received %d bytes differing from the %d sent", i, out.Len(), len(data))
		}
		want := []Phase{PhaseRendezvous, PhaseConnected, PhaseReceiving, PhaseFinishing, PhaseDone}
		if !equalPhases(phases, want) {
			t.Errorf("phases %v, want %v", phases, want)
		}
		if p.Sender.String() != "127.0.0.1:"+strconv.Itoa(port+1) || p.BlockSize != 1456 || p.Path != PathUnicast ||
			p.Received != int64(len(data)) || p.Written != int64(len(data)) {
			t.Errorf("final progress %+v", p)
		}
	}
}

func equalPhases(a, b []Phase) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestStartTimeoutWithoutSender(t *testing.T) {
	port := testPort()
	cfg := loopbackConfig(t, port)
	cfg.StartTimeout = 300 * time.Millisecond
	var out bytes.Buffer
	begin := time.Now()
	_, err := Receive(context.Background(), cfg, &out)
	var st *StartTimeoutError
	if !errors.Is(err, ErrStartTimeout) || !errors.As(err, &st) || st.Connected {
		t.Fatalf("got %v, want a start timeout before connecting", err)
	}
	if want := "no sender answered on 127.0.0.1:" + strconv.Itoa(port+1) + " within 300ms"; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	for _, other := range []error{ErrReceiveTimeout, ErrDropped, ErrWrite, context.Canceled} {
		if errors.Is(err, other) {
			t.Errorf("start timeout also matches %v", other)
		}
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("took %s", d)
	}
	if out.Len() != 0 {
		t.Errorf("%d bytes written", out.Len())
	}
}

func TestCancelDuringRendezvousAndTransfer(t *testing.T) {
	requireSender(t)
	port := testPort()
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := errors.New("operator stopped it")
	time.AfterFunc(200*time.Millisecond, func() { cancel(stop) })
	begin := time.Now()
	_, err := Receive(ctx, loopbackConfig(t, port), io.Discard)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, stop) || time.Since(begin) > 2*time.Second {
		t.Fatalf("cancel in rendezvous: %v after %s", err, time.Since(begin))
	}

	file, _ := writeRandomFile(t, 4_000_000)
	startSender(t, port, file, "--max-bitrate", "16m")
	ctx, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	cfg := loopbackConfig(t, port)
	var once sync.Once
	var cancelledAt time.Time
	cfg.Progress = func(p Progress) {
		if p.Received > 0 {
			once.Do(func() { cancelledAt = time.Now(); cancel2() })
		}
	}
	cfg.ProgressInterval = -1
	p, err := Receive(ctx, cfg, io.Discard)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancel mid-transfer: %v", err)
	}
	if d := time.Since(cancelledAt); d > time.Second {
		t.Errorf("returned %s after cancellation", d)
	}
	if p.Received >= 4_000_000 {
		t.Errorf("the whole stream arrived: cancellation came too late to test anything")
	}
}

func TestSenderGoesSilent(t *testing.T) {
	requireSender(t)
	port := testPort()
	file, _ := writeRandomFile(t, 4_000_000)
	snd, _ := startSender(t, port, file, "--max-bitrate", "16m")
	cfg := loopbackConfig(t, port)
	cfg.ReceiveTimeout = 700 * time.Millisecond
	cfg.ProgressInterval = -1
	var once sync.Once
	cfg.Progress = func(p Progress) {
		if p.Received > 500_000 {
			once.Do(func() { _ = snd.Process.Signal(syscall.SIGSTOP) })
		}
	}
	_, err := Receive(context.Background(), cfg, io.Discard)
	if !errors.Is(err, ErrReceiveTimeout) || !strings.Contains(err.Error(), "went silent after") {
		t.Fatalf("got %v, want a receive timeout", err)
	}
	t.Log(err)
}

// failingWriter fails once it has taken limit bytes.
type failingWriter struct {
	n, limit int
	err      error
}

func (w *failingWriter) Write(b []byte) (int, error) {
	if w.n+len(b) > w.limit {
		return 0, w.err
	}
	w.n += len(b)
	return len(b), nil
}

func TestWriterFailureStopsAndTellsSender(t *testing.T) {
	requireSender(t)
	port := testPort()
	file, _ := writeRandomFile(t, 3_000_000)
	snd, _ := startSender(t, port, file)
	full := errors.New("disk full")
	_, err := Receive(context.Background(), loopbackConfig(t, port), &failingWriter{limit: 1_000_000, err: full})
	if !errors.Is(err, ErrWrite) || !errors.Is(err, full) {
		t.Fatalf("got %v, want ErrWrite wrapping the writer's error", err)
	}
	// Our DISCONNECT leaves the sender without participants: it ends.
	done := make(chan error, 1)
	go func() { done <- snd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Error("udp-sender still running 10 s after we left")
	}
}

// slowWriter sleeps on every write, like a slow disk.
type slowWriter struct {
	buf   bytes.Buffer
	delay time.Duration
}

func (w *slowWriter) Write(b []byte) (int, error) {
	time.Sleep(w.delay)
	return w.buf.Write(b)
}

func TestSlowWriterHoldsTheSenderBack(t *testing.T) {
	requireSender(t)
	port := testPort()
	file, data := writeRandomFile(t, 3_000_000)
	startSender(t, port, file, "--max-slice-size", "112")
	cfg := loopbackConfig(t, port)
	cfg.MemoryLimit = 4 * 112 * 1456 // four slices: one more than the window and the writer need
	w := &slowWriter{delay: 5 * time.Millisecond}
	p, err := Receive(context.Background(), cfg, w)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w.buf.Bytes(), data) {
		t.Fatal("output differs")
	}
	if p.AcksHeldBack == 0 {
		t.Error("the writer never held an acknowledgement back: flow control untested")
	}
	t.Logf("%d acknowledgements held back, %d retransmissions requested", p.AcksHeldBack, p.Retransmits)
}
