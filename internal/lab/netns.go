package lab

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn with the calling goroutine's thread inside the host's
// network namespace, then moves the thread back. Sockets fn opens belong
// to the host's namespace for their whole life and may be used from any
// goroutine afterwards; so a test can send and receive as the host
// without a helper process. fn must not start goroutines that open
// sockets: they would run in the test's own namespace.
func (h *Host) Do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("lab: current namespace: %w", err)
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + h.NS)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("lab: namespace %s: %w", h.NS, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("lab: enter %s: %w", h.NS, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked, so the runtime ends it with this
		// goroutine instead of reusing it in the wrong namespace.
		return fmt.Errorf("lab: leave %s: %w (and fn: %v)", h.NS, err, ferr)
	}
	runtime.UnlockOSThread()
	return ferr
}
