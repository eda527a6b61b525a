// udp-receiver receives a file from udpcast's udp-sender. It is a drop-in
// replacement for udpcast's udp-receiver (20120424): the same options,
// long and short, the same progress line on stderr and the same exit
// statuses, built on pkg/receiver.
//
//	udp-receiver --nokbd --portbase 9000 --file /dev/vda
//	udp-receiver --nokbd --mcast-rdv-address 10.0.0.1 | partclone.restore ...
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imgcast/imgcast/pkg/receiver"
	"golang.org/x/sys/unix"
)

// exitError ends the program with a status, or by re-raising a signal.
type exitError struct {
	code   int
	signal syscall.Signal
}

func (e *exitError) Error() string {
	if e.signal != 0 {
		return "killed by " + e.signal.String()
	}
	return fmt.Sprintf("exit status %d", e.code)
}

func main() {
	if path := os.Getenv("IMGCAST_CPUPROFILE"); path != "" {
		// For performance work: profile the whole run.
		if f, err := os.Create(path); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer pprof.StopCPUProfile()
			}
		}
	}
	err := run(os.Args, os.Stdin, os.Stdout, os.Stderr)
	pprof.StopCPUProfile()
	var ee *exitError
	switch {
	case err == nil:
		os.Exit(0)
	case errors.As(err, &ee) && ee.signal != 0:
		signal.Reset(ee.signal)
		_ = syscall.Kill(os.Getpid(), ee.signal)
		time.Sleep(time.Second)
		os.Exit(128 + int(ee.signal))
	case errors.As(err, &ee):
		os.Exit(ee.code)
	default:
		os.Exit(1)
	}
}

var (
	errInterrupted = errors.New("Signal 2: Cancelled by user")
	errQuit        = errors.New("cancelled by user ('q' pressed)")
)

const licenseText = `udp-receiver (imgcast): a Go implementation of the receiving side of the
UDPcast protocol, written from a description of the protocol; it contains
no code from udpcast. Forward error correction uses
github.com/klauspost/reedsolomon (MIT licence).
`

// environment is what the program takes from the machine besides its
// arguments and standard streams; tests substitute it.
type environment struct {
	getenv  func(string) string
	resolve resolver
}

var system = environment{getenv: os.Getenv, resolve: systemResolver}

// run is the whole program; stdin is the start key console, stdout the
// default output, stderr gets messages and progress.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return runIn(system, args, stdin, stdout, stderr)
}

func runIn(env environment, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	prog := "udp-receiver"
	if len(args) > 0 {
		prog, args = args[0], args[1:]
	}
	o, err := parseOptions(prog, args, env.getenv, env.resolve)
	if err != nil {
		fmt.Fprintln(stderr, err)
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(stderr, prog+" "+usageLine)
		}
		return &exitError{code: 1}
	}
	if o.license {
		fmt.Fprint(stderr, licenseText)
		return nil
	}
	con := &console{w: stderr}
	if o.log != "" {
		f, err := os.OpenFile(o.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintf(stderr, "open log file %s: %v\n", o.log, err)
			return &exitError{code: 1}
		}
		defer f.Close()
		con.log = f
	}
	con.println("Udp-receiver 20120424 (imgcast)")

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-sigs:
			cancel(errInterrupted)
		case <-ctx.Done():
		}
	}()

	out := &sink{opts: o, stdout: stdout}
	kbd := &keyboard{stdin: stdin, cancel: cancel, start: make(chan struct{})}
	defer kbd.restore()

	cfg := receiver.Config{
		Port:             o.portbase,
		Interface:        o.iface,
		RendezvousAddr:   o.rdv,
		TTL:              o.ttl,
		Passive:          o.passive,
		StartTimeout:     time.Duration(o.startTimeout) * time.Second,
		ReceiveTimeout:   time.Duration(o.receiveTimeout) * time.Second,
		ExitWait:         time.Duration(o.exitWaitMS) * time.Millisecond,
		IgnoreLostData:   o.ignoreLostData,
		ReceiveBuffer:    o.rcvbuf,
		ProgressInterval: time.Duration(o.statPeriodMS) * time.Millisecond,
		Logf:             con.info,
	}
	cfg.IGMPReportInterval = o.igmpReport
	if o.exitWaitMS <= 0 {
		cfg.ExitWait = -1
	}
	if o.statPeriodMS <= 0 {
		cfg.ProgressInterval = -1
	}
	useKeyboard := !o.nokbd && !o.passive
	if useKeyboard {
		cfg.StartSignal = kbd.start
	}
	bannerDone := false
	cfg.Progress = func(p receiver.Progress) {
		switch {
		case p.Phase == receiver.PhaseRendezvous && !bannerDone:
			bannerDone = true
			what := "UDP receiver"
			if o.pipe != "" {
				what = "Compressed UDP receiver"
			}
			name := o.file
			if name == "" {
				name = "(stdout)"
			}
			con.println(fmt.Sprintf("%s for %s at %s on %s", what, name, p.LocalIP, p.Interface))
		case p.Phase == receiver.PhaseReceiving:
			kbd.dataStarted()
			if !o.noProgress && p.Received > 0 {
				con.status(statsLine(p.Received, p.Elapsed, out.position()))
			}
		}
	}
	cfg.OnConnect = func(p receiver.Progress) error {
		if err := out.open(); err != nil {
			return err
		}
		if useKeyboard && !p.Async {
			kbd.begin()
			con.println("Press any key to start receiving data!")
		}
		return nil
	}

	final, rerr := receiver.Receive(ctx, cfg, out)
	kbd.restore()
	pipeErr := out.close()
	return conclude(con, o, out, final, rerr, pipeErr)
}

// conclude prints the end of the run and decides the exit status.
func conclude(con *console, o *options, out *sink, final receiver.Progress, rerr, pipeErr error) error {
	var pipeExit *exec.ExitError
	pipeCode := 0
	if errors.As(pipeErr, &pipeExit) {
		pipeCode = pipeExit.ExitCode()
		if pipeCode < 0 { // killed by a signal
			pipeCode = 1
		}
	} else if pipeErr != nil && rerr == nil {
		rerr = pipeErr
	}
	var st *receiver.StartTimeoutError
	switch {
	case rerr == nil, errors.As(rerr, &st) && st.Connected:
		if !o.noProgress {
			con.status(statsLine(final.Received, final.Elapsed, out.position()))
		}
		if rerr != nil {
			// udpcast ends this case "successfully" with an empty output;
			// keep its exit status but say what happened.
			con.println("Warning: " + rerr.Error() + "; the output is empty")
		}
		con.println("Transfer complete.\a")
		if pipeCode != 0 {
			con.println(fmt.Sprintf("Pipe process died with code %d", pipeCode))
			return &exitError{code: pipeCode}
		}
		return nil
	case errors.As(rerr, &st):
		con.println(rerr.Error())
		con.println("Receiver error")
		return &exitError{code: 255}
	case errors.Is(rerr, errInterrupted):
		con.println(errInterrupted.Error())
		return &exitError{signal: syscall.SIGINT}
	}
	if pipeCode != 0 {
		con.println(rerr.Error())
		con.println(fmt.Sprintf("Pipe process died with code %d", pipeCode))
		return &exitError{code: pipeCode}
	}
	con.println(rerr.Error())
	return &exitError{code: 1}
}

// sink is the output: the --file (or stdout), possibly behind a --pipe
// command. It is opened only once a sender accepted us, as udpcast does,
// so that a failed rendezvous leaves an existing file untouched.
type sink struct {
	opts   *options
	stdout io.Writer
	w      io.Writer
	file   *os.File // the final output file, if --file
	cmd    *exec.Cmd
	pipeIn io.WriteCloser
}

func (s *sink) Write(b []byte) (int, error) { return s.w.Write(b) }

func (s *sink) open() error {
	var final io.Writer = s.stdout
	if s.opts.file != "" {
		flags := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
		if s.opts.sync {
			flags |= os.O_SYNC
		}
		f, err := os.OpenFile(s.opts.file, flags, 0o644)
		if err != nil {
			return fmt.Errorf("open outfile %s: %w", s.opts.file, err)
		}
		s.file, final = f, f
	}
	s.w = final
	if s.opts.pipe == "" {
		return nil
	}
	var argv []string
	for _, a := range strings.Split(s.opts.pipe, " ") {
		if a != "" {
			argv = append(argv, a)
		}
	}
	if len(argv) == 0 {
		return fmt.Errorf("empty --pipe command")
	}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Stdout = final
	s.cmd.Stderr = os.Stderr
	in, err := s.cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("pipe %q: %w", s.opts.pipe, err)
	}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start pipe %q: %w", s.opts.pipe, err)
	}
	s.pipeIn, s.w = in, in
	return nil
}

// close ends the pipe command (returning its failure as *exec.ExitError)
// and syncs and closes the output file.
func (s *sink) close() error {
	var errs []error
	if s.cmd != nil {
		s.pipeIn.Close()
		errs = append(errs, s.cmd.Wait())
	}
	if s.file != nil {
		// Always attempted, as udpcast does; on a block device this is
		// what makes the image durable.
		if err := s.file.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
			errs = append(errs, fmt.Errorf("sync %s: %w", s.file.Name(), err))
		}
		if err := s.file.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", s.file.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// position is the output file offset shown after the rate, or -1: shown
// with --print-uncompressed-position 1, or by default when a --pipe
// writes to a seekable file.
func (s *sink) position() int64 {
	show := s.opts.printPosition == 1 || (s.opts.printPosition < 0 && s.cmd != nil)
	if !show || s.file == nil {
		return -1
	}
	pos, err := s.file.Seek(0, io.SeekCurrent)
	if err != nil {
		return -1
	}
	return pos
}

// keyboard is udpcast's start console: once connected, any key (or end of
// input) on stdin sends GO; 'q' quits. A terminal is put in
// non-canonical, no-echo mode while waiting.
type keyboard struct {
	stdin   io.Reader
	cancel  context.CancelCauseFunc
	start   chan struct{}
	once    sync.Once
	started atomic.Bool // data arrived: keys no longer matter

	mu      sync.Mutex
	saved   *unix.Termios
	ttyFD   int
	restord bool
}

func (k *keyboard) begin() {
	if f, ok := k.stdin.(*os.File); ok {
		fd := int(f.Fd())
		if t, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
			raw := *t
			raw.Lflag &^= unix.ICANON | unix.ECHO
			raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
			if unix.IoctlSetTermios(fd, unix.TCSETS, &raw) == nil {
				k.mu.Lock()
				k.saved, k.ttyFD = t, fd
				k.mu.Unlock()
			}
		}
	}
	go func() {
		var b [1]byte
		n, _ := k.stdin.Read(b[:])
		if k.started.Load() {
			return
		}
		k.restore()
		if n == 1 && b[0] == 'q' {
			k.cancel(errQuit)
			return
		}
		k.once.Do(func() { close(k.start) })
	}()
}

func (k *keyboard) dataStarted() {
	if !k.started.Swap(true) {
		k.restore()
	}
}

func (k *keyboard) restore() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.saved != nil && !k.restord {
		_ = unix.IoctlSetTermios(k.ttyFD, unix.TCSETS, k.saved)
		k.restord = true
	}
}
