package qemutests

import (
	"image/png"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcast/imgcast/qemu-tests/vm"
)

// screen watches a VM's VGA text screen (tty0, what a real machine's
// monitor shows): it reads it every 200 ms and keeps every row it saw, and
// saves a picture of the screen the first time a row matches snapRE.
type screen struct {
	t      *testing.T
	v      *vm.VM
	mu     sync.Mutex
	rows   []string
	seen   map[string]bool
	snapRE *regexp.Regexp
	snap   string // the PNG file, once taken
	stop   chan struct{}
	done   chan struct{}
}

func watchScreen(t *testing.T, v *vm.VM, snapRE string) *screen {
	s := &screen{t: t, v: v, seen: map[string]bool{}, snapRE: regexp.MustCompile(snapRE),
		stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			s.read()
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(s.finish)
	return s
}

// read takes one look at the screen.
func (s *screen) read() {
	rows, err := s.v.ScreenText()
	if err != nil {
		return // not yet, or the VM has gone
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := false
	for _, r := range rows {
		if r != "" && !s.seen[r] {
			s.seen[r] = true
			s.rows = append(s.rows, r)
		}
		snap = snap || (s.snap == "" && s.snapRE.MatchString(r))
	}
	if snap {
		file := s.t.TempDir() + "/screen.png"
		if err := s.v.Screendump(file); err != nil {
			s.t.Errorf("screendump: %v", err)
			return
		}
		s.snap = file
	}
}

// finish stops watching after one last look (the VM is stopped at its
// power-off, its screen intact).
func (s *screen) finish() {
	select {
	case <-s.stop:
		return
	default:
	}
	close(s.stop)
	<-s.done
	s.read()
}

// expect checks that some row the screen showed matches each expression.
func (s *screen) expect(res ...string) {
	s.t.Helper()
	s.finish()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, re := range res {
		found := false
		for _, r := range s.rows {
			if regexp.MustCompile(re).MatchString(r) {
				found = true
				break
			}
		}
		if !found {
			s.t.Errorf("the VGA screen never showed %q; it showed:\n%s", re, strings.Join(s.rows, "\n"))
		}
	}
}

// picture checks the picture taken and copies it to $IMGCAST_SCREENSHOT
// if that is set (the README's picture of a client's screen).
func (s *screen) picture() {
	s.t.Helper()
	s.mu.Lock()
	file := s.snap
	s.mu.Unlock()
	if file == "" {
		s.t.Errorf("no picture: the screen never showed %q", s.snapRE)
		return
	}
	f, err := os.Open(file)
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		s.t.Fatalf("screendump %s: %v", file, err)
	}
	s.t.Logf("screen picture: %s, %dx%d", file, img.Bounds().Dx(), img.Bounds().Dy())
	if dst := os.Getenv("IMGCAST_SCREENSHOT"); dst != "" {
		b, err := os.ReadFile(file)
		if err == nil {
			err = os.WriteFile(dst, b, 0o644)
		}
		if err != nil {
			s.t.Errorf("IMGCAST_SCREENSHOT: %v", err)
		}
	}
}
