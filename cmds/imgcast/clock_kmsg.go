package main

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// initStarted returns when the kernel started /init, from its "Run /init
// as init process" log line: PID 1 exists long before that (as a kernel
// thread), so its process start time would be too early. The fallback is
// this process's own start time.
func initStarted() (time.Duration, string) {
	if d, err := kmsgTime("as init process"); err == nil {
		return d, "init started"
	}
	if d, err := processStart(os.Getpid()); err == nil {
		return d, "imgcast started"
	}
	return 0, "boot"
}

// kmsgTime finds the first kernel log record containing text and returns
// its timestamp.
func kmsgTime(text string) (time.Duration, error) {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EPIPE) {
			continue // records were overwritten while we read
		}
		if err != nil {
			return 0, err // EAGAIN: the end of the log
		}
		if d, ok := parseKmsgRecord(buf[:n], text); ok {
			return d, nil
		}
	}
}

// parseKmsgRecord reads a /dev/kmsg record "prio,seq,usec,flags;message"
// and returns its time if the message contains text.
func parseKmsgRecord(rec []byte, text string) (time.Duration, bool) {
	head, msg, ok := bytes.Cut(rec, []byte(";"))
	if !ok || !bytes.Contains(msg, []byte(text)) {
		return 0, false
	}
	f := bytes.Split(head, []byte(","))
	if len(f) < 3 {
		return 0, false
	}
	usec, err := strconv.ParseUint(string(f[2]), 10, 64)
	if err != nil {
		return 0, false
	}
	return time.Duration(usec) * time.Microsecond, true
}
