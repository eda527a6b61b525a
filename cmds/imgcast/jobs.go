package main

import (
	"context"
	"io"
	"time"

	"github.com/imgcast/imgcast/pkg/netup"
)

// Job is the work of one imgcast.mode, run once the network is up. It
// returns nil when the machine is done, and the agent then does
// imgcast.after. An error goes down the agent's failure path, which prints
// it with its Hint() if it has one (see Hinter): return errors that say
// what went wrong and what to check, and never leave a disk half-written
// without saying so.
type Job func(ctx context.Context, env *Env) error

// jobs maps each mode to its job.
var jobs = map[Mode]Job{
	ModeDebug:     debugJob,
	ModeMulticast: multicastJob,
	ModeUnicast:   unicastJob,
}

// Env is what a job gets from the agent.
type Env struct {
	Settings *Settings
	// Network is the NIC that reaches the server and its lease (renewed
	// in the background while the job runs).
	Network *netup.Network
	// Stdin, Stdout and Stderr are the console.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Logf prints a progress line on the console with the guest clock.
	Logf func(format string, args ...any)

	agent *agent
}

func (a *agent) env() *Env {
	return &Env{
		Settings: a.settings,
		Network:  a.network,
		Stdin:    a.stdin, Stdout: a.stdout, Stderr: a.stderr,
		Logf:  a.logf,
		agent: a,
	}
}

// Disk waits (up to imgcast.disktimeout, woken by device events) for the
// disk to write: imgcast.disk, or the first non-removable, non-USB disk of
// at least minSize bytes. The error is a *DiskError listing the disks.
func (e *Env) Disk(ctx context.Context, minSize uint64) (Disk, error) {
	a := e.agent
	var changed func() <-chan struct{}
	if a.drivers != nil {
		changed = a.drivers.Changed
	}
	return waitForDisk(ctx, a.root, e.Settings.Disk, minSize, e.Settings.DiskTimeout, changed)
}

// Uptime is the guest clock: time since the kernel started.
func (e *Env) Uptime() time.Duration { return e.agent.uptime() }

// debugJob prints the banner and gives the shell. When the shell exits
// the agent does imgcast.after (reboot unless it says poweroff).
func debugJob(ctx context.Context, env *Env) error {
	a := env.agent
	a.printBanner()
	a.startShell("imgcast.mode=debug")
	if env.Settings.After == AfterShell {
		env.Settings.After = AfterReboot // the shell has been had
	}
	return nil
}
