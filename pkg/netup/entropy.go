package netup

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"

	uiorand "github.com/u-root/uio/rand"
	"golang.org/x/sys/unix"
)

// The DHCP library draws its transaction IDs from u-root's uio/rand, which
// busy-polls getrandom(GRND_NONBLOCK) until the kernel's CRNG is seeded and
// ignores any context. In a fresh VM without RDRAND or virtio-rng, nothing
// seeds the CRNG while it polls, so DHCP hangs forever. A blocking
// getrandom does seed it (the kernel then runs its jitter entropy
// collector: ~1 s under emulation, milliseconds on hardware).

var (
	seedOnce sync.Once
	seeded   = make(chan struct{})
)

// SeedEntropy starts seeding the kernel's random number generator in the
// background (once). Call it as early as possible at boot; DHCP waits for
// it.
func SeedEntropy() {
	seedOnce.Do(func() {
		go func() {
			var b [1]byte
			for {
				_, err := unix.Getrandom(b[:], 0)
				if !errors.Is(err, unix.EINTR) {
					break
				}
			}
			close(seeded)
		}()
	})
}

// EntropySeeded reports whether the CRNG is known to be seeded.
func EntropySeeded() bool {
	select {
	case <-seeded:
		return true
	default:
		return false
	}
}

var (
	fallbackMu        sync.Mutex
	fallbackInstalled bool
)

// waitEntropy waits until the CRNG is seeded, at most max. If it is still
// not seeded then, DHCP transaction IDs come from the unseeded pool instead
// (they need to be unique, not secret), and waitEntropy returns false.
func waitEntropy(ctx context.Context, max time.Duration) bool {
	SeedEntropy()
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-seeded:
	case <-ctx.Done():
	case <-t.C:
	}
	// Decide under the lock, so no caller reads uiorand.Reader while
	// another replaces it.
	fallbackMu.Lock()
	defer fallbackMu.Unlock()
	if EntropySeeded() {
		return true
	}
	if !fallbackInstalled {
		uiorand.Reader = insecureReader{}
		fallbackInstalled = true
	}
	return false
}

// insecureReader reads random bytes without waiting for the CRNG.
type insecureReader struct{}

func (insecureReader) Read(b []byte) (int, error) {
	return insecureReader{}.ReadContext(context.Background(), b)
}

func (insecureReader) ReadContext(_ context.Context, b []byte) (int, error) {
	n, err := unix.Getrandom(b, unix.GRND_INSECURE)
	if err == nil {
		return n, nil
	}
	f, err := os.Open("/dev/urandom")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Read(b)
}
