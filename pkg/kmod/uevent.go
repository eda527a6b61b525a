package kmod

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/imgcast/imgcast/internal/recovered"
)

// uevent is one kernel device event (the kobject uevent netlink message).
type uevent struct {
	Action, Devpath, Subsystem, Modalias string
}

// parseUevent decodes a kernel uevent message: a header "action@devpath"
// then NUL-separated KEY=value pairs. Messages from udev (which start with
// "libudev") are not for us and yield ok=false.
func parseUevent(b []byte) (ev uevent, ok bool) {
	parts := bytes.Split(b, []byte{0})
	if len(parts) < 2 || !bytes.Contains(parts[0], []byte("@")) {
		return ev, false
	}
	for _, p := range parts[1:] {
		k, v, found := bytes.Cut(p, []byte("="))
		if !found {
			continue
		}
		switch string(k) {
		case "ACTION":
			ev.Action = string(v)
		case "DEVPATH":
			ev.Devpath = string(v)
		case "SUBSYSTEM":
			ev.Subsystem = string(v)
		case "MODALIAS":
			ev.Modalias = string(v)
		}
	}
	return ev, ev.Action != ""
}

// listenUevents subscribes to kernel uevents; the channel closes when ctx
// ends. onPanic gets a panic of its goroutines (see recovered.Go).
func listenUevents(ctx context.Context, onPanic func(error)) (<-chan uevent, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("uevent socket: %w", err)
	}
	// A generous buffer: loading a driver can announce dozens of devices
	// at once, and a dropped event is a device without a driver.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("uevent bind: %w", err)
	}
	// Non-blocking, so the runtime poller owns it and Close ends a Read.
	f := os.NewFile(uintptr(fd), "uevent")
	ch := make(chan uevent, 64)
	go func() {
		<-ctx.Done()
		f.Close()
	}()
	recovered.Go("uevent listener", onPanic, func() {
		defer close(ch)
		buf := make([]byte, 16<<10)
		for {
			n, err := f.Read(buf)
			if err != nil {
				if errors.Is(err, unix.ENOBUFS) && ctx.Err() == nil {
					continue // events were lost in an overflow; keep listening
				}
				return
			}
			if ev, ok := parseUevent(buf[:n]); ok {
				select {
				case ch <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	})
	return ch, nil
}
