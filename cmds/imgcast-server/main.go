// imgcast-server serves an image to imgcast clients: the image folders
// over HTTP, the iPXE boot script with the kernel and initramfs, a status
// API and page, and each partition image by multicast through udpcast's
// udp-sender.
//
// Synopsis:
//
//	imgcast-server --images DIR [--image NAME] --interface IF --clients N [--max-wait DUR]
//	               [--listen :8080] [--portbase 9000] [--kernel FILE --initrd FILE...] [OPTIONS]
//
// For partition image i (in partition order) it runs
//
//	udp-sender --nokbd --interface IF --portbase PORTBASE+2*i --min-receivers N --max-wait SECONDS ...
//
// and feeds it the image on stdin, behind a 128-byte FOGMC1 header naming
// the file. udp-sender starts a transfer about 2 s after the N-th receiver
// connects, or --max-wait after the first one connected, whichever comes
// first. The next partition's sender starts when one finishes.
//
// With --rolling, a machine that boots after a session has started waits
// for the next session, which runs on its own port base as soon as the
// running one ends (or --max-wait after the first waiting machine).
//
// Endpoints: / (status page), /boot.ipxe, /vmlinuz, /initramfs.img,
// /images/NAME/... (the files of the image being sent), /api/status (GET
// list, POST a report), /api/session (?mac= for a machine's own session),
// /api/sessions. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/server"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "imgcast-server:", err)
		os.Exit(1)
	}
}

// list is a flag that may be given several times.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

// seconds is a duration flag that also takes a bare number of seconds,
// as udp-sender does.
type seconds struct{ d *time.Duration }

func (s seconds) String() string {
	if s.d == nil {
		return "0s"
	}
	return s.d.String()
}

func (s seconds) Set(v string) error {
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		*s.d = time.Duration(n * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q is neither a duration (90s, 2m) nor a number of seconds", v)
	}
	*s.d = d
	return nil
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("imgcast-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg      server.Config
		listen   string
		consoles string
		initrds  list
		extra    list
		signKey  string
	)
	cfg.Sender.StreamHeader = true
	fs.StringVar(&cfg.Images, "images", "", "folder of FOG-style image folders, served at /images/ (required)")
	fs.StringVar(&cfg.Image, "image", "", "image folder inside --images to send (default: the only one)")
	fs.StringVar(&cfg.Sender.Interface, "interface", "", "network interface for udp-sender, and whose address clients are given")
	fs.IntVar(&cfg.Sender.Clients, "clients", 0, "receivers each udp-sender waits for (--min-receivers)")
	fs.Var(seconds{&cfg.Sender.MaxWait}, "max-wait", "start a partition anyway this long after its first receiver connected (0: wait for all --clients)")
	fs.Var(seconds{&cfg.Sender.MinWait}, "min-wait", "even with all --clients, wait this long after the first connected")
	fs.StringVar(&listen, "listen", ":8080", "HTTP listen address")
	fs.IntVar(&cfg.Sender.PortBase, "portbase", 9000, "udpcast port of partition image 0; image i uses portbase+2*i")
	fs.StringVar(&cfg.Address, "address", "", "IP address clients reach the server at (default: the IPv4 address of --interface)")
	fs.StringVar(&cfg.Kernel, "kernel", "", "kernel served at /vmlinuz for boot.ipxe")
	fs.Var(&initrds, "initrd", "initramfs served at /initramfs.img for boot.ipxe (repeat for more: /initramfs-2.img, …)")
	fs.StringVar(&cfg.Mode, "mode", server.ModeMulticast, "multicast (run udp-sender) or unicast (clients fetch the images over HTTP)")
	fs.StringVar(&cfg.After, "after", "reboot", "what clients do when done: reboot, poweroff or shell")
	fs.StringVar(&consoles, "console", "ttyS0,tty0", "kernel consoles, comma-separated; the last is /dev/console")
	fs.StringVar(&cfg.Append, "append", "", "more kernel command line arguments for the clients")
	fs.IntVar(&cfg.Sender.RetriesUntilDrop, "retries-until-drop", 50, "udp-sender --retries-until-drop: drops a dead receiver in ~40 s at 50 (udp-sender's own default, 200, takes minutes); 0 leaves it out")
	fs.StringVar(&cfg.Sender.MaxBitrate, "max-bitrate", "", "udp-sender --max-bitrate, e.g. 600m")
	fs.StringVar(&cfg.Sender.FEC, "fec", "", "udp-sender --fec, e.g. 8x8/128")
	fs.StringVar(&cfg.Sender.RdvAddress, "mcast-rdv-address", "", "udp-sender --mcast-rdv-address (clients must use the same)")
	fs.IntVar(&cfg.Sender.TTL, "ttl", 0, "udp-sender --ttl")
	fs.Var(&extra, "sender-arg", "extra udp-sender argument (repeatable)")
	fs.BoolVar(&cfg.Sender.StreamHeader, "stream-header", true, "put a FOGMC1 header naming the image file in front of each stream")
	fs.StringVar(&cfg.Sender.Program, "udp-sender", "udp-sender", "udp-sender program")
	fs.StringVar(&signKey, "sign-key", "", "private key (imgcast keygen NAME → NAME.key): sign the image folder at start if it has no d1.manifest")
	fs.BoolVar(&cfg.Rolling, "rolling", false, "rolling sessions: machines that come after a session started wait for the next one, which starts when the running one ends (or --max-wait after the first of them), on its own port base")
	fs.BoolVar(&cfg.ServeAllImages, "serve-all-images", false, "serve every image folder under --images, with directory listings (default: only the files of the image being sent)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (everything is a flag; see -h)", fs.Args())
	}
	if cfg.Images == "" {
		return errors.New("--images DIR is required")
	}
	if cfg.Mode == server.ModeMulticast && cfg.Sender.Clients < 1 {
		return errors.New("--clients N is required: how many machines each partition's sender waits for")
	}
	cfg.Initrds = initrds
	cfg.Sender.Extra = extra
	for _, c := range strings.Split(consoles, ",") {
		if c = strings.TrimSpace(c); c != "" {
			cfg.Consoles = append(cfg.Consoles, c)
		}
	}
	if cfg.Address == "" && cfg.Sender.Interface != "" {
		ip, err := interfaceIPv4(cfg.Sender.Interface)
		if err != nil {
			return err
		}
		cfg.Address = ip
	}
	logger := log.New(stderr, "imgcast-server: ", log.LstdFlags|log.Lmsgprefix)
	cfg.Log = logger
	if signKey != "" {
		if err := signIfUnsigned(context.Background(), cfg.Images, cfg.Image, signKey, logger); err != nil {
			return err
		}
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	cfg.Port = ln.Addr().(*net.TCPAddr).Port
	srv, err := server.New(cfg)
	if err != nil {
		ln.Close()
		return err
	}
	describe(logger, cfg, srv)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		logger.Print("stopping (signal): stopping udp-sender, then the HTTP server")
	}()
	return srv.Run(ctx, ln)
}

func interfaceIPv4(name string) (string, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return "", fmt.Errorf("--interface %s: %w", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return "", fmt.Errorf("--interface %s: %w", name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.String(), nil
		}
	}
	return "", fmt.Errorf("--interface %s has no IPv4 address; give one to it, or pass --address", name)
}

// describe logs what the server is about to do, so the admin can check it
// before any machine boots.
func describe(l *log.Logger, cfg server.Config, srv *server.Server) {
	name, streams := srv.Image()
	l.Printf("image %q from %s: %d partition image(s)", name, cfg.Images, len(streams))
	for i, s := range streams {
		l.Printf("  partition %d: %s, %s in %s → udpcast port %d",
			s.Partition, s.ID, inventory.HumanBytes(uint64(s.Size)), strings.Join(s.Files, " + "), cfg.Sender.Port(i))
	}
	host := cfg.Address
	if host == "" {
		host = "SERVER"
	}
	base := "http://" + net.JoinHostPort(host, strconv.Itoa(cfg.Port))
	l.Printf("status page %s/ ; clients boot from %s/boot.ipxe", base, base)
	if cfg.Mode == server.ModeUnicast {
		l.Print("unicast: no udp-sender; clients fetch the image files over HTTP")
		return
	}
	when := "when all of them are connected (no --max-wait)"
	if cfg.Sender.MaxWait > 0 {
		when = fmt.Sprintf("about 2 s after the last connects, or %v after the first", cfg.Sender.MaxWait)
	}
	l.Printf("multicast on %s: each partition waits for %d receiver(s) and starts %s", cfg.Sender.Interface, cfg.Sender.Clients, when)
	if cfg.Rolling {
		l.Print("rolling sessions: machines that come after a session started wait for the next one, on its own port base")
	}
}
