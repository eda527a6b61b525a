package vm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Console is a VM's serial console: everything the guest printed, kept in
// memory and in a log file, plus a way to type.
type Console struct {
	mu      sync.Mutex
	buf     []byte
	cursor  int           // where the next Expect starts looking
	grew    chan struct{} // closed and replaced when buf grows or the VM exits
	exited  bool
	exitErr error
	log     *os.File
	logPath string
	stdin   io.WriteCloser
}

func newConsole(logPath string) (*Console, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	return &Console{grew: make(chan struct{}), log: f, logPath: logPath}, nil
}

// Write receives QEMU's output.
func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(c.buf, p...)
	c.log.Write(p)
	close(c.grew)
	c.grew = make(chan struct{})
	return len(p), nil
}

// note writes a line of the harness's own into the log.
func (c *Console) note(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.log, "### %s\n", s)
}

func (c *Console) close(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.exited, c.exitErr = true, err
	fmt.Fprintf(c.log, "\n### qemu exited: %v\n", err)
	close(c.grew)
	c.grew = make(chan struct{})
}

// Expect waits for re to match the output after the cursor, moves the
// cursor past the match and returns the match and its groups.
func (c *Console) Expect(re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		rest := c.buf[c.cursor:]
		if loc := re.FindSubmatchIndex(rest); loc != nil {
			var groups []string
			for i := 0; i < len(loc); i += 2 {
				if loc[i] < 0 {
					groups = append(groups, "")
					continue
				}
				groups = append(groups, string(rest[loc[i]:loc[i+1]]))
			}
			c.cursor += loc[1]
			c.mu.Unlock()
			return groups, nil
		}
		if c.exited {
			err := c.exitErr
			c.mu.Unlock()
			return nil, fmt.Errorf("VM exited (%v) before the console showed %q", err, re)
		}
		grew := c.grew
		c.mu.Unlock()
		select {
		case <-grew:
		case <-deadline.C:
			return nil, fmt.Errorf("the console did not show %q within %s", re, timeout)
		}
	}
}

// Type writes to the serial port as a terminal would.
func (c *Console) Type(s string) error {
	_, err := io.WriteString(c.stdin, s)
	return err
}

// Output is everything the console showed so far.
func (c *Console) Output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.buf)
}

// finish closes the log; it keeps the log and prints its tail if the test
// failed, and removes it otherwise (unless IMGCAST_KEEP_LOGS=1).
func (c *Console) finish(t testing.TB, name string) {
	c.mu.Lock()
	c.log.Close()
	out := c.buf
	c.mu.Unlock()
	if t.Failed() || os.Getenv("IMGCAST_KEEP_LOGS") == "1" {
		lines := strings.Split(string(bytes.TrimRight(out, "\n")), "\n")
		if len(lines) > 80 {
			lines = lines[len(lines)-80:]
		}
		if t.Failed() {
			t.Logf("%s: console log kept at %s; last lines:\n%s", name, c.logPath, strings.Join(lines, "\n"))
		}
		return
	}
	if err := os.Remove(c.logPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Logf("%s: %v", name, err)
	}
}
