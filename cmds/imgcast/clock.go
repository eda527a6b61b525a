package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The guest clock: time since the kernel started (CLOCK_BOOTTIME), the
// clock the kernel's own log uses. Boot timings are reported on it, so they
// compare across machines whatever their wall clocks say.

// uptime is the time since boot.
func uptime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// userHZ is the unit of process start times in /proc (sysconf(_SC_CLK_TCK)),
// 100 on every Linux architecture we boot.
const userHZ = 100

// processStart returns when process pid started, as time since boot.
func processStart(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStartTime(string(b))
}

// parseStartTime reads field 22 (starttime, in clock ticks since boot) of
// a /proc/PID/stat line. The command name (field 2) is in parentheses and
// may contain spaces, so fields are counted after its closing parenthesis.
func parseStartTime(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat line %q", stat)
	}
	f := strings.Fields(stat[i+1:])
	const startField = 22 - 3 // fields after ")" start at field 3
	if len(f) <= startField {
		return 0, fmt.Errorf("stat line has %d fields", len(f)+2)
	}
	ticks, err := strconv.ParseUint(f[startField], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("start time %q: %w", f[startField], err)
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// seconds formats a duration as seconds with two decimals: "1.23 s".
func seconds(d time.Duration) string {
	return fmt.Sprintf("%.2f s", d.Seconds())
}
