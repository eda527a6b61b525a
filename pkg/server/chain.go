package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"

	"github.com/imgcast/imgcast/pkg/fogmc"
	"github.com/imgcast/imgcast/pkg/status"
)

// CommandFunc makes the command that runs a program; tests use it to run
// udp-sender inside a network namespace.
type CommandFunc func(ctx context.Context, name string, args ...string) *exec.Cmd

// chain runs one udp-sender per partition image, one after the other, and
// feeds each the image through its stdin.
type chain struct {
	cfg SenderConfig
	// root is the images folder and image the folder inside it: image
	// files are opened through root, as HTTP serves them, so a symlink
	// cannot lead a sender out of the images folder.
	root    *os.Root
	image   string
	streams []ImageStream
	session *session
	command CommandFunc
	log     *log.Logger
	// stopGrace is how long a sender may take to exit after SIGTERM before
	// it is killed.
	stopGrace time.Duration
}

// run sends every stream in order and stops at the first failure. It
// returns when all are sent, one failed, or ctx is cancelled (then the
// running sender is stopped first).
func (c *chain) run(ctx context.Context) error {
	for i, s := range c.streams {
		if err := c.send(ctx, i); err != nil {
			return fmt.Errorf("partition %d (%s): %w", s.Partition, s.ID, err)
		}
	}
	c.log.Printf("all %d partitions sent", len(c.streams))
	return nil
}

// udp-sender's stderr lines that change the session.
var (
	newConnection = regexp.MustCompile(`^New connection from (\S+)\s+\(#(\d+)\)`)
	dropping      = regexp.MustCompile(`^Dropping client #(\d+)`)
	progress      = regexp.MustCompile(`^bytes=\s*([\d ]*\d)\s+re-xmits`)
)

func (c *chain) send(ctx context.Context, i int) error {
	s := c.streams[i]
	if err := ctx.Err(); err != nil {
		c.session.finished(i, status.StreamFailed, "", "not started: the server is shutting down")
		return err
	}
	var header []byte
	if c.cfg.StreamHeader {
		var err error
		if header, err = fogmc.Format(s.ID); err != nil {
			return err
		}
	}
	receivers := c.cfg.Clients
	if i > 0 {
		// Wait only for the machines that got the previous partition: one
		// that died on the way would otherwise hold everyone up for
		// --max-wait (or for ever, without it).
		if got := c.session.completed(i - 1); got > 0 && got < receivers {
			c.log.Printf("partition %d waits for the %d receiver(s) that completed partition %d, not %d", s.Partition, got, c.streams[i-1].Partition, receivers)
			receivers = got
		}
	}
	args := c.cfg.Args(i, receivers)
	cmd := c.command(ctx, c.cfg.Program, args...)
	// Its own process group, so a Ctrl-C on the terminal reaches only the
	// server, which stops the sender itself and logs it; Pdeathsig, so the
	// sender dies with the server even if the server is killed outright.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = c.stopGrace
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	prefix := fmt.Sprintf("udp-sender[p%d :%d] ", s.Partition, c.cfg.Port(i))
	out := &senderOutput{chain: c, index: i, prefix: prefix}
	stdout, stderr := out.writer(), out.writer()
	// Writers, not pipes we read ourselves: Wait then waits for the output
	// to be copied, but no longer than WaitDelay if a child of the sender
	// holds the pipe open.
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// Pdeathsig fires when the thread that forked the child exits, and Go
	// may retire threads: keep this goroutine on its thread until Wait.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// Signal the sender's whole process group (its own, see Setpgid). Set
	// before Start, which hands it to the goroutine that watches ctx.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	c.session.waiting(i, receivers) // before Start: its output may come at once
	if err := cmd.Start(); err != nil {
		c.session.finished(i, status.StreamFailed, "", "udp-sender did not start: "+err.Error())
		return fmt.Errorf("starting %s: %w", c.cfg.Program, err)
	}
	pid := cmd.Process.Pid
	c.log.Printf("%s: pid %d: %s %s", describeStream(s), pid, c.cfg.Program, strings.Join(args, " "))

	fed := make(chan error, 1)
	go func() { fed <- c.feed(stdin, header, s, func() { _ = syscall.Kill(-pid, syscall.SIGKILL) }) }()

	waitErr := cmd.Wait()
	feedErr := <-fed
	stdout.flush()
	stderr.flush()

	exit := "exit status 0"
	if cmd.ProcessState != nil {
		exit = cmd.ProcessState.String()
	}
	var reason string
	switch {
	case ctx.Err() != nil:
		reason = "stopped: the server is shutting down"
	case feedErr != nil && !errors.Is(feedErr, errWrite):
		reason = feedErr.Error()
	case waitErr != nil:
		reason = fmt.Sprintf("udp-sender failed (%s)%s", exit, out.lastWords())
	case !out.sawStart:
		reason = "udp-sender exited without sending" + out.lastWords()
	case feedErr != nil:
		reason = fmt.Sprintf("udp-sender stopped reading its input (%v)%s", feedErr, out.lastWords())
	}
	if reason != "" {
		c.log.Printf("%s%s; %s", prefix, exit, reason)
		c.session.finished(i, status.StreamFailed, exit, reason)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errors.New(reason)
	}
	c.log.Printf("%s%s: %s sent", prefix, exit, s.ID)
	c.session.finished(i, status.StreamDone, exit, "")
	return nil
}

// errWrite marks a failure to write to udp-sender (it exited or stopped
// reading), as opposed to a failure to read the image.
var errWrite = errors.New("writing to udp-sender")

// feed writes the header and the image files into udp-sender's stdin and
// closes it, which ends the stream. If an image file cannot be read, the
// stream must not end as if it were complete: feed kills the sender with
// its stdin still open.
func (c *chain) feed(stdin io.WriteCloser, header []byte, s ImageStream, kill func()) error {
	defer stdin.Close()
	abort := func(err error) error {
		c.log.Printf("%v: killing udp-sender so the receivers cannot take a truncated stream for a whole one", err)
		kill()
		return err
	}
	w := &errorWriter{w: stdin}
	if _, err := w.Write(header); err != nil {
		return err
	}
	for _, name := range s.Files {
		name := path.Join(c.image, name)
		f, err := c.root.Open(name)
		if err != nil {
			return abort(fmt.Errorf("reading image: %w", err))
		}
		n, err := io.Copy(w, f)
		f.Close()
		if errors.Is(err, errWrite) {
			return err
		}
		if err != nil {
			return abort(fmt.Errorf("reading image %s: %w", name, err))
		}
		if info, err := c.root.Stat(name); err != nil || info.Size() != n {
			return abort(fmt.Errorf("image %s changed while it was being sent (%d bytes read)", name, n))
		}
	}
	return nil
}

type errorWriter struct{ w io.Writer }

func (e *errorWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		return n, fmt.Errorf("%w: %w", errWrite, err)
	}
	return n, nil
}

// senderOutput logs one udp-sender's output line by line and updates the
// session from it.
type senderOutput struct {
	chain  *chain
	index  int
	prefix string

	mu           sync.Mutex
	sawStart     bool
	last         []string // the last few non-progress lines
	lastProgress time.Time
}

// writer returns a writer for one of the sender's output streams that
// passes each complete line to line.
func (o *senderOutput) writer() *lineWriter { return &lineWriter{line: o.line} }

func (o *senderOutput) line(l string) {
	l = strings.TrimFunc(l, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) })
	if l == "" {
		return
	}
	st := o.chain.session
	if m := progress.FindStringSubmatch(l); m != nil {
		var n int64
		fmt.Sscan(strings.ReplaceAll(m[1], " ", ""), &n)
		st.update(o.index, func(s *status.Stream) { s.BytesSent = n })
		o.mu.Lock()
		quiet := time.Since(o.lastProgress) < 5*time.Second
		if !quiet {
			o.lastProgress = time.Now()
		}
		o.mu.Unlock()
		if !quiet {
			o.chain.log.Print(o.prefix + l)
		}
		return
	}
	o.chain.log.Print(o.prefix + l)
	o.mu.Lock()
	o.last = append(o.last, l)
	if len(o.last) > 3 {
		o.last = o.last[1:]
	}
	o.mu.Unlock()
	switch {
	case strings.HasPrefix(l, "Starting transfer"):
		o.mu.Lock()
		o.sawStart = true
		o.mu.Unlock()
		st.started(o.index)
	case newConnection.MatchString(l):
		m := newConnection.FindStringSubmatch(l)
		st.connected(o.index, m[2], m[1])
	case dropping.MatchString(l):
		st.dropped(o.index, dropping.FindStringSubmatch(l)[1])
	}
}

func (o *senderOutput) lastWords() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.last) == 0 {
		return ""
	}
	return `; it said: "` + strings.Join(o.last, `" / "`) + `"`
}

// lineWriter splits what is written to it into lines, ending at \n or at
// \r (which udp-sender uses to redraw its progress line).
type lineWriter struct {
	line func(string)
	buf  []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexAny(w.buf, "\r\n")
		if i < 0 {
			break
		}
		w.line(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 64<<10 { // a runaway line: pass it on in pieces
		w.flush()
	}
	return len(p), nil
}

// flush passes on an unterminated last line.
func (w *lineWriter) flush() {
	if len(w.buf) > 0 {
		w.line(string(w.buf))
		w.buf = nil
	}
}
