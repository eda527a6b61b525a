package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgcast/imgcast/internal/recovered"
	"github.com/imgcast/imgcast/pkg/fog"
	"github.com/imgcast/imgcast/pkg/imaging"
	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/kmod"
	"github.com/imgcast/imgcast/pkg/mcastcheck"
	"github.com/imgcast/imgcast/pkg/netup"
	"github.com/imgcast/imgcast/pkg/power"
)

// The agent is the client as u-root's uinit: it reads its settings from
// the kernel command line, starts loading drivers, brings the network up,
// and runs the job imgcast.mode names. Every failure ends in the failure
// path (failure.go): the error with what to check, then a shell or, after
// imgcast.failwait, imgcast.after. It never returns to init on purpose:
// init would exit and the kernel panic.

// agent holds one run of the client. The function fields are the seams
// tests replace.
type agent struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// console and logOut write to stdout and stderr under one lock: the
	// imaging job's progress lines and the status reporter's log lines
	// come from different goroutines.
	console, logOut io.Writer
	root            string // "/", or a fake one in tests
	moduleRoot      string

	settings *Settings
	drivers  *kmod.Drivers
	network  *netup.Network
	netErr   error

	// initStart is when the kernel ran /init (startLabel says if it is
	// something else); netReady when the network was up; both on the guest
	// clock (time since boot).
	initStart, netReady time.Duration
	startLabel          string

	netUp    func(context.Context, netup.Config) (*netup.Network, error)
	runShell func() error
	powerDo  func(power.Action) error
	uptime   func() time.Duration
	// diskSource turns the agent's disk wait into the imaging job's disk
	// source; receive receives a multicast stream (nil: pkg/receiver).
	diskSource func(inventory.DiskWait) imaging.DiskSource
	receive    imaging.ReceiveFunc
	// mcastCheck runs the multicast check of imgcast.mcastcheck=1.
	mcastCheck func(context.Context, mcastcheck.Options, func(string)) (mcastcheck.Result, error)
	keepLease  bool

	// fogTask is the FOG task of the kernel command line (FOG mode, fog.go),
	// nil in imgcast's own mode; fogEnv and fogHTTP are its seams.
	fogTask *fog.Task
	fogEnv  fogEnv
	fogHTTP *http.Client

	shellRunning atomic.Bool
	cancelMu     sync.Mutex
	cancelPhase  context.CancelCauseFunc
	// bug is the first panic of a goroutine the agent started; it ends
	// the running phase and goes down the failure path.
	bug error
}

func newAgent(stdin io.Reader, stdout, stderr io.Writer) *agent {
	a := &agent{
		stdin: stdin, stdout: stdout, stderr: stderr,
		root:       "/",
		moduleRoot: "/lib/modules",
		netUp:      netup.Up,
		powerDo:    power.Do,
		diskSource: func(w inventory.DiskWait) imaging.DiskSource { return w },
		uptime:     uptime,
		mcastCheck: checkMulticast,
		keepLease:  true,
		startLabel: "init started",
	}
	var mu sync.Mutex
	a.console, a.logOut = &lockedWriter{mu: &mu, w: stdout}, &lockedWriter{mu: &mu, w: stderr}
	a.runShell = a.shell
	return a
}

// lockedWriter serialises writes to w with writes to other writers that
// share mu.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func runAgent(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cmdline := fs.String("cmdline", "/proc/cmdline", "read the imgcast.* settings from this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// Seed the kernel RNG while everything else starts: DHCP needs it.
	netup.SeedEntropy()
	a := newAgent(stdin, stdout, stderr)
	a.initStart, a.startLabel = initStarted()
	raw, err := os.ReadFile(*cmdline)
	if err != nil {
		a.settings = defaultSettings()
		return a.fail(fmt.Errorf("read settings: %w", err))
	}
	return a.run(context.Background(), string(raw))
}

// logf prints a progress line on the console, stamped with the guest clock
// like the kernel's own messages.
func (a *agent) logf(format string, args ...any) {
	fmt.Fprintf(a.logOut, "[%8.3f] imgcast: %s\n", a.uptime().Seconds(), fmt.Sprintf(format, args...))
}

func (a *agent) sysfs() string { return filepath.Join(a.root, "sys") }

// debugf is logf when imgcast.verbose is on, else nil.
func (a *agent) debugf() func(string, ...any) {
	if a.settings.Verbose {
		return a.logf
	}
	return nil
}

func (a *agent) run(ctx context.Context, cmdline string) (err error) {
	stopSignals := a.handleInterrupts()
	defer stopSignals()
	// A bug must not end in a kernel panic with the trace scrolled away:
	// it goes down the failure path like any other error.
	defer func() {
		if r := recover(); r != nil {
			if a.settings == nil {
				a.settings = defaultSettings()
			}
			err = a.fail(fmt.Errorf("internal error (a bug in imgcast): %v\n%s", r, debug.Stack()))
		}
	}()
	a.logf("starting (%s at %s)", a.startLabel, seconds(a.initStart))
	s, err := parseSettings(cmdline)
	a.settings = s
	if err != nil {
		return a.fail(err)
	}
	if a.fogTask = fogTaskFrom(cmdline); a.fogTask != nil {
		applyFOG(s, a.fogTask, cmdline)
		a.logf("FOG task on the kernel command line: FOG mode")
	}
	a.logf("mode %s, server %v, image %q, after %s", s.Mode, s.serverAddr(), s.Image, s.After)
	a.drivers = a.startDrivers(ctx, cmdline)

	netCtx, done := a.phase(ctx)
	a.network, a.netErr = a.netUp(netCtx, netup.Config{
		Drivers:     a.drivers,
		MAC:         s.MAC,
		Server:      s.serverAddr(),
		ServerPort:  s.serverPort(),
		LinkTimeout: s.LinkTimeout,
		DHCPTimeout: s.DHCPTimeout,
		Sysfs:       a.sysfs(),
		Logf:        a.logf,
		Debugf:      a.debugf(),
	})
	done()
	if bug := a.panicked(); bug != nil {
		return a.fail(bug)
	}
	if a.netErr != nil {
		return a.fail(fmt.Errorf("network: %w", a.netErr))
	}
	a.netReady = a.uptime()
	l := a.network.Lease()
	a.logf("network ready: %s %s in %s since %s (uptime %s)",
		a.network.NIC.Name, l, seconds(a.netReady-a.initStart), a.startLabel, seconds(a.netReady))
	if a.keepLease {
		recovered.Go("lease renewal", a.onPanic, func() { a.network.KeepLease(ctx, a.logf) })
	}

	if s.Mode == ModeDebug {
		a.debugJob()
		return a.after(s.After, nil)
	}
	jobCtx, done := a.phase(ctx)
	if a.fogTask != nil {
		err = a.fogJob(jobCtx)
	} else {
		err = a.imageJob(jobCtx)
	}
	done()
	if bug := a.panicked(); bug != nil {
		err = bug
	}
	if err != nil {
		return a.fail(fmt.Errorf("%s: %w", s.Mode, err))
	}
	return a.after(s.After, nil)
}

// onPanic takes the panic of a goroutine the agent started: it becomes
// the error of the running phase, which it cancels.
func (a *agent) onPanic(err error) {
	a.cancelMu.Lock()
	if a.bug == nil {
		a.bug = err
	}
	cancel := a.cancelPhase
	a.cancelMu.Unlock()
	a.logf("%v", err)
	if cancel != nil {
		cancel(err)
	}
}

// panicked returns the panic of a background goroutine, if one happened.
func (a *agent) panicked() error {
	a.cancelMu.Lock()
	defer a.cancelMu.Unlock()
	return a.bug
}

// startDrivers loads the modules of the running kernel for the devices
// present, in the background. Without a module tree (a kernel with
// built-in drivers) there is nothing to load.
func (a *agent) startDrivers(ctx context.Context, cmdline string) *kmod.Drivers {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		a.logf("uname: %v; not loading drivers", err)
		return nil
	}
	dir := filepath.Join(a.moduleRoot, unix.ByteSliceToString(u.Release[:]))
	ix, err := kmod.ReadIndex(dir)
	if err != nil {
		a.logf("no driver modules for this kernel (%v); relying on built-in drivers", err)
		return nil
	}
	l := kmod.NewLoader(ix)
	l.Params, l.Blacklist = kmod.OptionsFromCmdline(cmdline)
	d := &kmod.Drivers{Loader: l, Sysfs: a.sysfs(), Logf: a.logf, OnPanic: a.onPanic}
	d.Debugf = a.debugf()
	d.Start(ctx)
	return d
}

// phase returns a context for a phase of work that Ctrl-C on the console
// cancels, and the function that ends the phase.
func (a *agent) phase(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	a.cancelMu.Lock()
	a.cancelPhase = cancel
	a.cancelMu.Unlock()
	return ctx, func() {
		a.cancelMu.Lock()
		a.cancelPhase = nil
		a.cancelMu.Unlock()
		cancel(nil)
	}
}

// handleInterrupts makes Ctrl-C on the console cancel the running phase
// (which then goes down the failure path) instead of killing the agent.
// While a shell runs, Ctrl-C belongs to the shell's commands: the agent
// shares their process group and ignores it.
func (a *agent) handleInterrupts() (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT)
	recovered.Go("the Ctrl-C handler", a.onPanic, func() {
		for range ch {
			if a.shellRunning.Load() {
				continue
			}
			a.cancelMu.Lock()
			cancel := a.cancelPhase
			a.cancelMu.Unlock()
			if cancel != nil {
				fmt.Fprintln(a.stderr)
				a.logf("interrupted (Ctrl-C)")
				cancel(errors.New("interrupted (Ctrl-C)"))
			}
		}
	})
	return func() { signal.Stop(ch); close(ch) }
}

// after does the after-action: a shell first if asked, then reboot or
// power off. It returns jobErr (or the power error) only when the machine
// did not go down, which happens in tests and without root.
func (a *agent) after(what After, jobErr error) error {
	action := power.Reboot
	switch what {
	case AfterPowerOff:
		action = power.PowerOff
	case AfterShell:
		a.startShell("the job has ended")
	}
	a.logf("%s", action)
	drainConsole(2*time.Second, a.stdout, a.stderr)
	if err := a.powerDo(action); err != nil {
		return errors.Join(jobErr, err)
	}
	return jobErr
}
