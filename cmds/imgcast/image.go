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
	"strings"
	"time"

	"github.com/imgcast/imgcast/pkg/imaging"
	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/manifest"
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
	disk := fs.String("disk", "", "disk (/dev/... or serial:SERIAL) or image file to write; default: chosen by the rule of imgcast.disk's README entry")
	diskTimeout := fs.Duration("disk-timeout", 10*time.Second, "how long to wait for a /dev disk to appear")
	portBase := fs.Int("portbase", 9000, "udpcast port base of the first partition (when the server lists no session streams: partition i uses +2*i)")
	iface := fs.String("interface", "", "NIC to receive on (default: as udp-receiver chooses)")
	rdv := fs.String("rdv", "", "udpcast rendezvous address (the server, or a multicast group; default: broadcast)")
	ttl := fs.Int("ttl", imaging.DefaultTTL, "TTL of multicast packets (1 without -rdv)")
	fallback := fs.String("fallback", "none", "http: fetch over HTTP when no sender answers or the session cannot be joined")
	startTimeout := fs.Duration("start-timeout", 10*time.Minute, "how long to wait for the first partition's sender")
	nextStartTimeout := fs.Duration("next-start-timeout", imaging.DefaultNextStartTimeout, "how long to wait for each later partition's sender")
	receiveTimeout := fs.Duration("receive-timeout", 30*time.Second, "how long a sender may be silent mid-stream")
	report := fs.String("report", "", "URL to POST status reports to (imgcast-server: http://SERVER:8080/api/status)")
	session := fs.String("session", "", "URL of the session to check before joining (default: derived from -report)")
	pubkey := fs.String("pubkey", "", "require d1.manifest signed by this key (NAME.pub) and verify every chunk before it is written (default: the key built into the boot image, "+manifest.BuiltinKeyPath+", if any)")
	imageID := fs.String("image-id", "", "with a key: the image id the manifest must name (default: the folder's name)")
	igmpInterval := fs.Int("igmp-interval", 5, "seconds between the receiver's own IGMP membership reports (keeps snooping switches without a querier forwarding); 0: off")
	sessionWait := fs.Duration("session-wait", 2*time.Hour, "with imgcast-server --rolling: how long to wait for the next session when this machine came too late for the running one")
	verbose := fs.Bool("v", false, "log details (the receiver's phases)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("image: want exactly one IMAGE-URL|DIR")
	}
	diskSource, err := diskFlag(*disk, *diskTimeout)
	if err != nil {
		return fmt.Errorf("image: -disk: %w", err)
	}
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "imgcast: "+format+"\n", a...) }
	cfg := imaging.Config{
		Image: fs.Arg(0), Transfer: imaging.Transfer(*mode), PortBase: *portBase, Interface: *iface, TTL: *ttl,
		FirstStartTimeout: *startTimeout, NextStartTimeout: *nextStartTimeout, ReceiveTimeout: *receiveTimeout,
		ReportURL: *report, SessionURL: *session, SessionWait: *sessionWait, Console: stdout, ConsoleTTY: isTerminal(stdout), Logf: logf,
		Disk: diskSource,
	}
	if *verbose {
		cfg.Debugf = logf
	}
	if *igmpInterval < 0 {
		return fmt.Errorf("image: -igmp-interval %d is negative (0 turns it off)", *igmpInterval)
	}
	cfg.IGMPReportInterval = igmpReportInterval(time.Duration(*igmpInterval) * time.Second)
	if *pubkey != "" {
		cfg.PublicKey, err = manifest.LoadPublicKey(*pubkey)
	} else {
		cfg.PublicKey, err = manifest.LoadBuiltinKey("")
	}
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	cfg.ImageID = *imageID
	if *imageID != "" && cfg.PublicKey == nil {
		return errors.New("image: -image-id needs a key (-pubkey)")
	}
	switch *fallback {
	case "http":
		cfg.FallbackHTTP = true
	case "none", "":
	default:
		return fmt.Errorf("image: -fallback %q is not http or none", *fallback)
	}
	if *rdv != "" {
		a, err := netip.ParseAddr(*rdv)
		if err != nil || !a.Is4() {
			return fmt.Errorf("image: -rdv %q is not an IPv4 address", *rdv)
		}
		cfg.Rendezvous = a
	}
	cfg.MAC, cfg.IP = identity(*iface)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return runImaging(ctx, cfg)
}

// diskFlag is -disk's disk source: a /dev disk or serial:SERIAL is checked
// like imgcast.disk, then waited for and its size checked; another path is
// an image file used as it is; none is the agent's choice rule.
func diskFlag(path string, timeout time.Duration) (imaging.DiskSource, error) {
	if path != "" && !strings.HasPrefix(path, "/dev/") && !strings.HasPrefix(path, inventory.SerialPrefix) {
		return imaging.DiskPath(path), nil
	}
	if path != "" {
		if err := inventory.CheckDiskName(path); err != nil {
			return nil, err
		}
	}
	return inventory.DiskWait{Root: "/", Named: path, Timeout: timeout}, nil
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
