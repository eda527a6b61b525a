package main

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// drainConsole waits, at most d, until what the agent printed has left the
// machine: u-root's init copies the agent's stdout and stderr pipes to the
// consoles, so the last lines (the result, "power off") are still in a pipe
// or a UART queue when the agent decides to power off, and would be lost.
// It waits for the pipes to be read empty, then for the console's output
// queue to be sent (tcdrain).
func drainConsole(d time.Duration, outputs ...any) {
	deadline := time.Now().Add(d)
	for _, o := range outputs {
		f, ok := o.(*os.File)
		if !ok {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(int(f.Fd()), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
			continue
		}
		for time.Now().Before(deadline) {
			n, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCINQ) // FIONREAD: bytes unread in the pipe
			if err != nil || n == 0 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	console, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return
	}
	defer console.Close()
	done := make(chan struct{})
	go func() {
		// TCSBRK with a non-zero argument is tcdrain(3).
		_ = unix.IoctlSetInt(int(console.Fd()), unix.TCSBRK, 1)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Until(deadline)):
	}
}
