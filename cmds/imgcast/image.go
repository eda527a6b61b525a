package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"time"

	"github.com/imgcast/imgcast/pkg/imaging"
)

// runImage is `imgcast image`: the agent's imaging job by hand, with flags
// instead of the kernel command line — from the debug shell after fixing
// something, or on any Linux machine.
func runImage(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: imgcast image [flags] IMAGE-URL|DIR")
		fs.PrintDefaults()
	}
	mode := fs.String("mode", "multicast", "multicast (udpcast streams) or unicast (the files over HTTP)")
	disk := fs.String("disk", "", "disk (or image file) to write; default: the first non-removable disk large enough")
	portBase := fs.Int("portbase", 9000, "udpcast port base of the first partition; partition i uses +2*i")
	iface := fs.String("interface", "", "NIC to receive on (default: as udp-receiver chooses)")
	rdv := fs.String("rdv", "", "udpcast rendezvous address (the server, or a multicast group; default: broadcast)")
	fallback := fs.String("fallback", "none", "http: fetch over HTTP when no sender answers or the session cannot be joined")
	startTimeout := fs.Duration("start-timeout", 10*time.Minute, "how long to wait for each partition's sender")
	receiveTimeout := fs.Duration("receive-timeout", 30*time.Second, "how long a sender may be silent mid-stream")
	report := fs.String("report", "", "URL to POST status reports to (imgcast-server: http://SERVER:8080/api/status)")
	session := fs.String("session", "", "URL of the session to check before joining (default: derived from -report)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("image: want exactly one IMAGE-URL|DIR")
	}
	c := imageConfig{
		image: fs.Arg(0), disk: *disk, mode: imaging.Mode(*mode), portBase: *portBase, iface: *iface,
		startTimeout: *startTimeout, receiveTimeout: *receiveTimeout,
		reportURL: *report, sessionURL: *session, console: stdout,
		logf: func(format string, a ...any) { fmt.Fprintf(stderr, "imgcast: "+format+"\n", a...) },
	}
	switch *fallback {
	case "http":
		c.fallbackHTTP = true
	case "none", "":
	default:
		return fmt.Errorf("image: -fallback %q is not http or none", *fallback)
	}
	if *rdv != "" {
		a, err := netip.ParseAddr(*rdv)
		if err != nil || !a.Is4() {
			return fmt.Errorf("image: -rdv %q is not an IPv4 address", *rdv)
		}
		c.rdv = a
	}
	c.mac, c.ip = identity(*iface)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return runImaging(ctx, c)
}

// identity is the MAC and IPv4 address reports name this machine by: those
// of the given interface, else of the first one that is up and has both.
func identity(name string) (mac, ip string) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", ""
	}
	for _, ifi := range ifs {
		if (name != "" && ifi.Name != name) || ifi.Flags&net.FlagLoopback != 0 || len(ifi.HardwareAddr) == 0 {
			continue
		}
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				return ifi.HardwareAddr.String(), n.IP.String()
			}
		}
		if name != "" {
			return ifi.HardwareAddr.String(), ""
		}
	}
	return "", ""
}
