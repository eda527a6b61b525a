package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Codes of the long-only options.
const (
	keyReceiveTimeout = 256 + iota
	keyNoProgress
	keyIGMPReportInterval
)

// shortOptions is udpcast's udp-receiver short option string.
const shortOptions = "b:f:p:P:i:l:M:s:t:w:x:z:dkLnyZ"

// longOptions is the long option table; its order decides how an
// ambiguous prefix is reported, as in udpcast.
var longOptions = []longOption{
	{"file", true, 'f'},
	{"pipe", true, 'p'},
	{"port", true, 'P'},
	{"portbase", true, 'P'},
	{"interface", true, 'i'},
	{"ttl", true, 't'},
	{"mcast-all-address", true, 'M'},
	{"mcast_all_address", true, 'M'},
	{"mcast-rdv-address", true, 'M'},
	{"mcast_rdv_address", true, 'M'},
	{"rcvbuf", true, 'b'},
	{"nosync", false, 'n'},
	{"sync", false, 'y'},
	{"nokbd", false, 'k'},
	{"passive", false, 'd'},
	{"start-timeout", true, 's'},
	{"receive-timeout", true, keyReceiveTimeout},
	{"exit-wait", true, 'w'},
	{"exitWait", true, 'w'},
	{"license", false, 'L'},
	{"log", true, 'l'},
	{"no-progress", false, keyNoProgress},
	{"print-uncompressed-position", true, 'x'},
	{"statistics-period", true, 'z'},
	{"stat-period", true, 'z'},
	{"ignore-lost-data", false, 'Z'},
	{"igmp-report-interval", true, keyIGMPReportInterval},
}

// fullNameOnly are imgcast's own long options: they match only their full
// name, so that every abbreviation means what it means to udpcast.
var fullNameOnly = map[string]bool{"igmp-report-interval": true}

const usageLine = "[--file file] [--pipe pipe] [--portbase portbase] [--interface net-interface] " +
	"[--log file] [--no-progress] [--ttl time-to-live] [--mcast-rdv-address mcast-rdv-address] " +
	"[--rcvbuf buf] [--nokbd] [--exit-wait milliseconds] [--nosync] [--sync] [--start-timeout sto] " +
	"[--receive-timeout rct] [--license] [-x uncomprStatPrint] [-z statPeriod] " +
	"[--print-uncompressed-position flag] [--stat-period millis] [--ignore-lost-data] " +
	"[--igmp-report-interval seconds]"

// options is udp-receiver's command line.
type options struct {
	file           string // "" = stdout
	pipe           string
	portbase       int
	iface          string
	ttl            int
	rdv            netip.Addr
	rcvbuf         int // 0 = default
	nokbd          bool
	passive        bool
	sync           bool
	exitWaitMS     int
	startTimeout   int // seconds
	receiveTimeout int // seconds
	log            string
	noProgress     bool
	statPeriodMS   int
	printPosition  int // -1 = auto
	ignoreLostData bool
	license        bool
	// igmpReport paces our own IGMP membership reports: 0 is the
	// receiver's default, negative off (--igmp-report-interval 0).
	igmpReport time.Duration
}

// usageError is a command-line error: message, usage line, exit 1.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// resolver returns the IPv4 addresses of a host name. The option parser
// is handed one, so that tests and fuzzers never query the machine's
// resolver.
type resolver func(ctx context.Context, host string) ([]netip.Addr, error)

// systemResolver asks the machine's resolver.
func systemResolver(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
}

// resolveTimeout bounds a host name lookup for --mcast-rdv-address.
const resolveTimeout = 10 * time.Second

func parseOptions(prog string, args []string, getenv func(string) string, resolve resolver) (*options, error) {
	parsed, _, err := getopt(prog, args, shortOptions, longOptions)
	if err != nil {
		return nil, &usageError{err.Error()}
	}
	o := &options{portbase: 9000, ttl: 1, exitWaitMS: 500, statPeriodMS: 500, printPosition: -1}
	ifaceGiven := false
	for _, p := range parsed {
		switch p.key {
		case 'f':
			o.file = p.arg
		case 'p':
			o.pipe = p.arg
		case 'P':
			o.portbase = atoi(p.arg)
		case 'i':
			o.iface, ifaceGiven = p.arg, true
		case 't':
			o.ttl = atoi(p.arg)
		case 'M':
			a, err := resolveIPv4(p.arg, resolve)
			if err != nil {
				return nil, err
			}
			o.rdv = a
		case 'b':
			n, err := parseSize(p.arg)
			if err != nil {
				return nil, err
			}
			o.rcvbuf = n
		case 'n': // the default since udpcast 20120424
		case 'y':
			o.sync = true
		case 'k':
			o.nokbd = true
		case 'd':
			o.passive = true
		case 's':
			o.startTimeout = atoi(p.arg)
		case keyReceiveTimeout:
			o.receiveTimeout = atoi(p.arg)
		case 'w':
			o.exitWaitMS = atoi(p.arg)
		case 'L':
			o.license = true
		case 'l':
			o.log = p.arg
		case keyNoProgress:
			o.noProgress = true
		case 'x':
			o.printPosition = atoi(p.arg)
		case 'z':
			o.statPeriodMS = atoi(p.arg)
		case 'Z':
			o.ignoreLostData = true
		case keyIGMPReportInterval:
			n := atoi(p.arg)
			if n < 0 {
				return nil, fmt.Errorf("igmp report interval %d is negative (0 turns the reports off)", n)
			}
			o.igmpReport = time.Duration(n) * time.Second
			if n == 0 {
				o.igmpReport = -1
			}
		}
	}
	if !ifaceGiven {
		o.iface = getenv("IFNAME")
	}
	if o.portbase <= 0 || o.portbase > 65534 {
		return nil, fmt.Errorf("port base %d is out of range (1..65534)", o.portbase)
	}
	if o.ttl <= 0 || o.ttl > 255 {
		return nil, fmt.Errorf("ttl %d is out of range (1..255)", o.ttl)
	}
	return o, nil
}

// parseSize reads a --rcvbuf value: a number with an optional k/K (KiB)
// or m/M (MiB) unit.
func parseSize(s string) (int, error) {
	n := atoi(s)
	t := strings.TrimLeft(s, " \t\n\v\f\r")
	t = strings.TrimLeft(t, "+-")
	t = strings.TrimLeft(t, "0123456789")
	if t == "" {
		return n, nil
	}
	switch t[0] {
	case 'k', 'K':
		return n * 1024, nil
	case 'm', 'M':
		return n * 1024 * 1024, nil
	}
	return 0, fmt.Errorf("Unit %c unsupported", t[0])
}

// resolveIPv4 accepts a dotted address or a host name.
func resolveIPv4(s string, resolve resolver) (netip.Addr, error) {
	if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
		return a, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	addrs, err := resolve(ctx, s)
	if err == nil {
		for _, a := range addrs {
			if a = a.Unmap(); a.Is4() {
				return a, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("bad address %q: not an IPv4 address or a known host name", s)
}
