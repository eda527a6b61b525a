package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// formatCount renders a byte count the way udpcast's statistics do: three
// space-separated groups of digits followed by a unit character (space,
// or K / M for values scaled down by 1024 / 1048576).
func formatCount(x uint64) string {
	unit := byte(' ')
	switch {
	case x > 1_000_000_000_000:
		x /= 1024 * 1024
		unit = 'M'
	case x >= 1_000_000_000:
		x /= 1024
		unit = 'K'
	}
	var b strings.Builder
	leading := true
	for i, g := range []uint64{(x / 1_000_000) % 1000, (x / 1000) % 1000, x % 1000} {
		if i > 0 {
			b.WriteByte(' ')
		}
		switch {
		case leading && g == 0:
			b.WriteString("    ")
		case leading:
			fmt.Fprintf(&b, "%3d", g)
			leading = false
		default:
			fmt.Fprintf(&b, "%03d", g)
		}
	}
	b.WriteByte(unit)
	return b.String()
}

// formatRate renders bytes over elapsed as udpcast's "%3d.%02d" Mbps.
func formatRate(bytes int64, elapsed time.Duration) string {
	us := elapsed.Microseconds()
	if us <= 0 {
		return "  0.00"
	}
	h := uint64(bytes) * 800 / uint64(us)
	return fmt.Sprintf("%3d.%02d", h/100, h%100)
}

// statsLine is one progress line, without the trailing carriage return.
func statsLine(bytes int64, elapsed time.Duration, pos int64) string {
	s := "bytes=" + formatCount(uint64(bytes)) + " (" + formatRate(bytes, elapsed) + " Mbps)"
	if pos >= 0 {
		s += formatCount(uint64(pos))
	}
	return s
}

// console writes udp-receiver's stderr: progress lines end in a carriage
// return, and the next ordinary message starts on a fresh line.
// Informational messages go to the --log file instead, when one is given.
type console struct {
	mu      sync.Mutex
	w       io.Writer
	log     *os.File
	inStats bool
}

// status prints a progress line.
func (c *console) status(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprint(c.w, line+"\r")
	c.inStats = true
}

// println prints a message that always goes to stderr.
func (c *console) println(msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.breakStats()
	fmt.Fprintln(c.w, msg)
}

func (c *console) breakStats() {
	if c.inStats {
		fmt.Fprintln(c.w)
		c.inStats = false
	}
}

// info prints an informational message (to the log file if there is one).
func (c *console) info(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.log != nil {
		now := time.Now()
		fmt.Fprintf(c.log, "%s.%06d %s\n", now.Format("15:04:05"), now.Nanosecond()/1000, msg)
		return
	}
	c.breakStats()
	fmt.Fprintln(c.w, msg)
}
