package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"

	"github.com/imgcast/imgcast/pkg/mcastcheck"
)

// runMcastCheck is `imgcast mcast-check send|recv`: a multicast test
// stream, and the check that says whether multicast works and why not.
func runMcastCheck(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	usage := func() {
		fmt.Fprintln(stderr, "usage: imgcast mcast-check send [-group G] [-port P] [-interface IF] [-rate PPS] [-duration D] [-to IP]...")
		fmt.Fprintln(stderr, "       imgcast mcast-check recv -server IP[:PORT] [-group G] [-port P] [-interface IF] [-duration D] [-rate PPS]")
		fmt.Fprintln(stderr, "       (imgcast mcast-check send|recv -h for the flags)")
	}
	if len(args) == 0 {
		usage()
		return errors.New("mcast-check: send or recv?")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	switch args[0] {
	case "send":
		return mcastSend(ctx, args[1:], stdout, stderr)
	case "recv", "receive":
		return mcastRecv(ctx, args[1:], stdout, stderr)
	}
	usage()
	return fmt.Errorf("mcast-check: unknown command %q (send or recv)", args[0])
}

// addrList is a repeatable IPv4 address flag.
type addrList []netip.Addr

func (l *addrList) String() string { return fmt.Sprint(*l) }
func (l *addrList) Set(s string) error {
	for _, f := range strings.Split(s, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil || !a.Is4() {
			return fmt.Errorf("%q is not an IPv4 address", f)
		}
		*l = append(*l, a)
	}
	return nil
}

// groupFlag is an optional multicast group.
type groupFlag struct{ a *netip.Addr }

func (g groupFlag) String() string {
	if g.a == nil || !g.a.IsValid() {
		return ""
	}
	return g.a.String()
}
func (g groupFlag) Set(s string) error {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() || !a.IsMulticast() {
		return fmt.Errorf("%q is not an IPv4 multicast group", s)
	}
	*g.a = a
	return nil
}

func mcastSend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mcast-check send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var group netip.Addr
	var to addrList
	fs.Var(groupFlag{&group}, "group", "multicast group (default: the one udp-sender uses, from the interface's address)")
	port := fs.Int("port", mcastcheck.DefaultPort, "UDP port")
	iface := fs.String("interface", "", "interface to send on (default: the first that is up with an IPv4 address)")
	rate := fs.Int("rate", mcastcheck.DefaultRate, "packets per second")
	duration := fs.Duration("duration", 0, "how long to send (0: until Ctrl-C)")
	ttl := fs.Int("ttl", 1, "multicast TTL (1: this network only, as udp-sender)")
	size := fs.Int("size", mcastcheck.DefaultSize, "bytes per packet")
	fs.Var(&to, "to", "also send a unicast copy to this receiver, to compare (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("mcast-check send: unexpected %q", fs.Args())
	}
	var toward netip.Addr
	if len(to) > 0 {
		toward = to[0]
	}
	ifi, ip, err := mcastcheck.ChooseInterface(*iface, toward)
	if err != nil {
		return fmt.Errorf("mcast-check send: %w", err)
	}
	if !group.IsValid() {
		group = mcastcheck.DefaultGroup(ip)
	}
	var packets uint64
	if *duration > 0 {
		packets = uint64(max(1, int64(*rate)*duration.Milliseconds()/1000))
	}
	s, err := mcastcheck.StartStream(mcastcheck.StreamConfig{Group: group, Port: *port, Interface: ifi, Source: ip,
		TTL: *ttl, Rate: *rate, Size: *size, Packets: packets, Unicast: to,
		Logf: func(f string, a ...any) { fmt.Fprintf(stderr, "mcast-check: "+f+"\n", a...) }})
	if err != nil {
		return fmt.Errorf("mcast-check send: %w", err)
	}
	how := "until Ctrl-C"
	if *duration > 0 {
		how = "for " + duration.String()
	}
	fmt.Fprintf(stdout, "sending test stream %x to %s:%d from %s on %s, %d packets/s of %d bytes, %s\n",
		s.ID(), group, *port, ip, ifi.Name, *rate, s.Config().Size, how)
	fmt.Fprintf(stdout, "on the receiver: imgcast mcast-check recv -server %s -group %s -port %d\n", ip, group, *port)
	s.Wait(ctx)
	fmt.Fprintf(stdout, "sent %d packets\n", s.Next())
	return nil
}

func mcastRecv(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mcast-check recv", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opt mcastcheck.Options
	fs.StringVar(&opt.Server, "server", "", "imgcast-server's address IP[:PORT] (port 8080), or the machine running mcast-check send")
	fs.Var(groupFlag{&opt.Group}, "group", "multicast group (default: the one udp-sender uses from the server's address)")
	fs.IntVar(&opt.Port, "port", mcastcheck.DefaultPort, "UDP port")
	fs.StringVar(&opt.Interface, "interface", "", "interface to receive on (default: the one that reaches the server)")
	fs.DurationVar(&opt.Duration, "duration", mcastcheck.DefaultDuration, "how long the test stream runs (a snooping switch without a querier cuts a group after about 260s)")
	fs.IntVar(&opt.Rate, "rate", mcastcheck.DefaultRate, "packets per second to ask the server for")
	fs.Float64Var(&opt.MaxLoss, "max-loss", mcastcheck.DefaultMaxLoss, "loss in percent above which the verdict is PROBLEM")
	asJSON := fs.Bool("json", false, "print the result as JSON after the verdict")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("mcast-check recv: unexpected %q", fs.Args())
	}
	if opt.Server == "" && !opt.Group.IsValid() {
		fs.Usage()
		return errors.New("mcast-check recv: give -server (or -group for a stream sent by hand)")
	}
	res, err := checkMulticast(ctx, opt, func(line string) { fmt.Fprintln(stdout, line) })
	if err != nil {
		return err
	}
	if *asJSON {
		b, _ := json.Marshal(res)
		fmt.Fprintln(stdout, string(b))
	}
	if !res.OK {
		return exitStatus(1)
	}
	return nil
}

// checkMulticast runs a check and prints its progress, one row per
// second, and its summary, the verdict last. The agent runs it before
// imaging (imgcast.mcastcheck=1) with opt.Server the imaging server and
// opt.Interface the NIC the network came up on, and reports the result.
func checkMulticast(ctx context.Context, opt mcastcheck.Options, println func(string)) (mcastcheck.Result, error) {
	opt.Logf = func(f string, a ...any) { println("mcast-check: " + fmt.Sprintf(f, a...)) }
	opt.Progress = func(s mcastcheck.Second) { println(s.String()) }
	res, err := mcastcheck.Run(ctx, opt)
	if err != nil {
		return res, fmt.Errorf("mcast-check: %w", err)
	}
	for _, l := range res.Lines() {
		println(l)
	}
	return res, nil
}

// exitStatus ends imgcast with a status and no further message: the
// command has said everything already.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
