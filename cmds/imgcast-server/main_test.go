package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/lab"
)

func TestFlagErrors(t *testing.T) {
	images := t.TempDir()
	os.MkdirAll(filepath.Join(images, "x"), 0o755)
	os.WriteFile(filepath.Join(images, "x", "d1p1.img"), []byte("x"), 0o644)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{}, "--images DIR is required"},
		{[]string{"--images", images}, "--clients N is required"},
		{[]string{"--images", images, "--clients", "2", "--interface", "no-such-if0"}, "no-such-if0"},
		{[]string{"--images", images, "--clients", "2", "--interface", "lo", "--max-wait", "soon"}, "neither a duration"},
		{[]string{"--images", images, "--clients", "2", "stray"}, "unexpected arguments"},
		{[]string{"--images", images, "--clients", "2", "--address", "10.0.0.1", "--mode", "broadcast", "--listen", "127.0.0.1:0"}, `mode "broadcast"`},
		{[]string{"--images", images, "--mode", "unicast", "--address", "10.0.0.1", "--after", "dance", "--listen", "127.0.0.1:0"}, `after "dance"`},
		{[]string{"--images", filepath.Join(images, "x"), "--mode", "unicast", "--listen", "127.0.0.1:0"}, "pass its parent"},
		{[]string{"--images", images, "--mode", "unicast", "--rolling", "--listen", "127.0.0.1:0"}, "rolling sessions are multicast"},
		{[]string{"--images", images, "--clients", "2", "--interface", "lo", "--kernel", "/nonexistent/vmlinuz", "--listen", "127.0.0.1:0"}, "/nonexistent/vmlinuz"},
	} {
		var stderr bytes.Buffer
		err := run(tt.args, nil, &stderr, &stderr)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%q) = %v, want an error mentioning %q", tt.args, err, tt.want)
		}
	}
}

func TestSecondsFlag(t *testing.T) {
	for in, want := range map[string]time.Duration{"90": 90 * time.Second, "1.5": 1500 * time.Millisecond, "2m": 2 * time.Minute, "0": 0} {
		var d time.Duration
		if err := (seconds{&d}).Set(in); err != nil || d != want {
			t.Errorf("Set(%q) = %v, %v; want %v", in, d, err, want)
		}
	}
}

// buildServer compiles this command for tests that run it as a process.
func buildServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "imgcast-server")
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// lines collects a process's output and signals when a line matches.
type lines struct {
	mu  sync.Mutex
	all []string
}

func (l *lines) scan(t *testing.T, r *bufio.Scanner) {
	for r.Scan() {
		t.Log(r.Text())
		l.mu.Lock()
		l.all = append(l.all, r.Text())
		l.mu.Unlock()
	}
}

func (l *lines) find(re *regexp.Regexp) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.all {
		if m := re.FindStringSubmatch(s); m != nil {
			return m
		}
	}
	return nil
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// "pid (comm) S ...": the state follows the last ')'.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || (b[i+2] != 'Z' && b[i+2] != 'X')
}

// TestStoppingTheServerStopsUdpSender starts the real server with the real
// udp-sender waiting for receivers, stops or kills the server, and checks
// that no udp-sender is left behind.
func TestStoppingTheServerStopsUdpSender(t *testing.T) {
	lab.Require(t, "udp-sender")
	bin := buildServer(t)
	n := lab.T(t, 72)
	images := t.TempDir()
	os.MkdirAll(filepath.Join(images, "x"), 0o755)
	for _, f := range []string{"d1p1.img", "d1p2.img"} {
		os.WriteFile(filepath.Join(images, "x", f), bytes.Repeat([]byte(f), 1000), 0o644)
	}
	senderPID := regexp.MustCompile(`: pid (\d+): udp-sender `)
	for _, tt := range []struct {
		sig      syscall.Signal
		graceful bool
	}{
		{syscall.SIGTERM, true},
		{syscall.SIGINT, true},
		{syscall.SIGKILL, false},
	} {
		t.Run(tt.sig.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := n.Switch.Command(ctx, bin, "--images", images, "--interface", n.Bridge, "--clients", "2",
				"--max-wait", "60", "--listen", "127.0.0.1:0")
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			out := &lines{}
			scanned := make(chan struct{})
			go func() { out.scan(t, bufio.NewScanner(stderr)); close(scanned) }()

			var pid int
			deadline := time.Now().Add(10 * time.Second)
			for pid == 0 || !alive(pid) {
				if time.Now().After(deadline) {
					t.Fatal("udp-sender did not start")
				}
				if m := out.find(senderPID); m != nil {
					pid, _ = strconv.Atoi(m[1])
				}
				time.Sleep(20 * time.Millisecond)
			}
			if comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); strings.TrimSpace(string(comm)) != "udp-sender" {
				t.Fatalf("pid %d is %q, not udp-sender", pid, comm)
			}
			time.Sleep(200 * time.Millisecond) // let udp-sender settle into waiting
			if err := cmd.Process.Signal(tt.sig); err != nil {
				t.Fatal(err)
			}
			<-scanned
			err = cmd.Wait()
			if tt.graceful && err != nil {
				t.Errorf("server exited with %v after %v, want a clean exit", err, tt.sig)
			}
			deadline = time.Now().Add(5 * time.Second)
			for alive(pid) {
				if time.Now().After(deadline) {
					syscall.Kill(pid, syscall.SIGKILL)
					t.Fatalf("udp-sender (pid %d) outlived the server (%v)", pid, tt.sig)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if tt.graceful && out.find(regexp.MustCompile(`udp-sender\[p1 :9000\] signal: terminated; stopped: the server is shutting down`)) == nil {
				t.Error("the server did not log how its udp-sender ended")
			}
		})
	}
}
