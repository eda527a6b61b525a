package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"
)

func noEnv(string) string { return "" }

// fakeResolver knows one name and never asks the machine's resolver.
func fakeResolver(_ context.Context, host string) ([]netip.Addr, error) {
	if host == "imgserver.lab" {
		return []netip.Addr{netip.MustParseAddr("::ffff:10.9.8.7")}, nil
	}
	return nil, fmt.Errorf("%s: no such host (test resolver)", host)
}

// testEnv is the machine as tests see it: no environment variables, no
// name resolution.
var testEnv = environment{getenv: noEnv, resolve: fakeResolver}

func TestParseOptions(t *testing.T) {
	base := func(f func(o *options)) *options {
		o := &options{portbase: 9000, ttl: 1, exitWaitMS: 500, statPeriodMS: 500, printPosition: -1}
		f(o)
		return o
	}
	tests := []struct {
		args []string
		env  string
		want *options
	}{
		{nil, "", base(func(o *options) {})},
		{[]string{"--nokbd", "--portbase", "9002", "--file", "/dev/vda"}, "",
			base(func(o *options) { o.nokbd, o.portbase, o.file = true, 9002, "/dev/vda" })},
		{[]string{"--portbase=9004", "-kn", "-fout", "operand", "--start", "5", "--exitWait=7"}, "",
			base(func(o *options) { o.portbase, o.nokbd, o.file, o.startTimeout, o.exitWaitMS = 9004, true, "out", 5, 7 })},
		{[]string{"-P", "9006", "-kf", "x", "-s3", "--mcast", "10.0.0.1", "-b", "2k"}, "",
			base(func(o *options) {
				o.portbase, o.nokbd, o.file, o.startTimeout = 9006, true, "x", 3
				o.rdv, o.rcvbuf = netip.MustParseAddr("10.0.0.1"), 2048
			})},
		{[]string{"--mcast_all_address=239.1.2.3", "--rcvbuf", "1M", "--receive-timeout", "30", "--ttl", "2"}, "",
			base(func(o *options) {
				o.rdv, o.rcvbuf, o.receiveTimeout, o.ttl = netip.MustParseAddr("239.1.2.3"), 1<<20, 30, 2
			})},
		{[]string{"--port", "12abc", "-Z", "-d", "-y", "--no-progress", "-z", "100", "-x", "1", "--log", "l"}, "",
			base(func(o *options) {
				o.portbase, o.ignoreLostData, o.passive, o.sync, o.noProgress = 12, true, true, true, true
				o.statPeriodMS, o.printPosition, o.log = 100, 1, "l"
			})},
		{[]string{"--pipe", "gzip -dc", "--", "--nokbd"}, "",
			base(func(o *options) { o.pipe = "gzip -dc" })},
		{nil, "eth1", base(func(o *options) { o.iface = "eth1" })},
		{[]string{"-i", "10.0.0.5"}, "eth1", base(func(o *options) { o.iface = "10.0.0.5" })},
		{[]string{"--interface="}, "eth1", base(func(o *options) {})},
		{[]string{"-M", "imgserver.lab"}, "", base(func(o *options) { o.rdv = netip.MustParseAddr("10.9.8.7") })},
	}
	for _, tc := range tests {
		got, err := parseOptions("udp-receiver", tc.args, func(string) string { return tc.env }, fakeResolver)
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q:\n got %+v\nwant %+v", tc.args, got, tc.want)
		}
	}
}

// badCommandLines are rejected with glibc getopt_long's messages.
var badCommandLines = []struct {
	args []string
	want string
}{
	{[]string{"--x"}, "udp-receiver: unrecognized option '--x'"},
	{[]string{"--a=1"}, "udp-receiver: unrecognized option '--a=1'"},
	{[]string{"-q"}, "udp-receiver: invalid option -- 'q'"},
	{[]string{"-kq"}, "udp-receiver: invalid option -- 'q'"},
	{[]string{"--file"}, "udp-receiver: option '--file' requires an argument"},
	{[]string{"--fi"}, "udp-receiver: option '--file' requires an argument"},
	{[]string{"-f"}, "udp-receiver: option requires an argument -- 'f'"},
	{[]string{"--nokbd=3"}, "udp-receiver: option '--nokbd' doesn't allow an argument"},
	{[]string{"--nok=3"}, "udp-receiver: option '--nokbd' doesn't allow an argument"},
	{[]string{"--s", "3"}, "udp-receiver: option '--s' is ambiguous; possibilities: '--sync' '--start-timeout' '--statistics-period' '--stat-period'"},
	{[]string{"--st=1"}, "udp-receiver: option '--st=1' is ambiguous; possibilities: '--start-timeout' '--statistics-period' '--stat-period'"},
	{[]string{"--p=1"}, "udp-receiver: option '--p=1' is ambiguous; possibilities: '--pipe' '--port' '--portbase' '--passive' '--print-uncompressed-position'"},
	{[]string{"--n"}, "udp-receiver: option '--n' is ambiguous; possibilities: '--nosync' '--nokbd' '--no-progress'"},
	{[]string{"--i", "x"}, "udp-receiver: option '--i' is ambiguous; possibilities: '--interface' '--ignore-lost-data'"},
	{[]string{"--l"}, "udp-receiver: option '--l' is ambiguous; possibilities: '--license' '--log'"},
	{[]string{"--r", "1"}, "udp-receiver: option '--r' is ambiguous; possibilities: '--rcvbuf' '--receive-timeout'"},
	{[]string{"--rcvbuf", "3x"}, "Unit x unsupported"},
}

func TestUnknownRendezvousHost(t *testing.T) {
	var stderr bytes.Buffer
	err := runIn(testEnv, []string{"udp-receiver", "--mcast-rdv-address", "nowhere.lab"}, strings.NewReader(""), &bytes.Buffer{}, &stderr)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(stderr.String(), `bad address "nowhere.lab"`) {
		t.Fatalf("got %v, stderr %q", err, stderr.String())
	}
}

func TestBadCommandLines(t *testing.T) {
	for _, tc := range badCommandLines {
		var stderr bytes.Buffer
		err := runIn(testEnv, append([]string{"udp-receiver"}, tc.args...), strings.NewReader(""), &bytes.Buffer{}, &stderr)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 1 {
			t.Errorf("%q: got %v, want exit status 1", tc.args, err)
		}
		first, rest, _ := strings.Cut(stderr.String(), "\n")
		if first != tc.want {
			t.Errorf("%q: message %q, want %q", tc.args, first, tc.want)
		}
		if strings.HasPrefix(tc.want, "udp-receiver:") && !strings.HasPrefix(rest, "udp-receiver [--file file]") {
			t.Errorf("%q: no usage line after the message: %q", tc.args, rest)
		}
	}
}

// The same command lines given to udpcast's own udp-receiver, when it is
// installed, must produce the same first line and status.
func TestBadCommandLinesMatchUdpcast(t *testing.T) {
	path, err := exec.LookPath("udp-receiver")
	if err != nil {
		t.Skip("udpcast's udp-receiver is not installed")
	}
	for _, tc := range badCommandLines {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cmd := exec.CommandContext(ctx, path, tc.args...)
		cmd.Args[0] = "udp-receiver"
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("%q: udpcast gave %v", tc.args, err)
		}
		if first, _, _ := strings.Cut(stderr.String(), "\n"); first != tc.want {
			t.Errorf("%q: udpcast says %q, we expect %q", tc.args, first, tc.want)
		}
	}
}

func TestLicenseExitsZero(t *testing.T) {
	var stderr bytes.Buffer
	if err := runIn(testEnv, []string{"udp-receiver", "--license"}, strings.NewReader(""), &bytes.Buffer{}, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "UDPcast") {
		t.Errorf("licence text: %q", stderr.String())
	}
}

func TestAtoi(t *testing.T) {
	for in, want := range map[string]int{"": 0, "x": 0, "12": 12, " 12x": 12, "-3": -3, "+7k": 7, "\t9": 9, "1 2": 1} {
		if got := atoi(in); got != want {
			t.Errorf("atoi(%q) = %d, want %d", in, got, want)
		}
	}
}

func FuzzParseOptions(f *testing.F) {
	f.Add("--nokbd\x00--portbase\x009000\x00-kfFILE\x00--s")
	f.Add("-b\x003M\x00--mcast=1.2.3.4\x00--\x00-x")
	f.Add("-ZMaA")
	f.Add("--mcast-rdv-address=imgserver.lab\x00-M\x00224.1.2.3")
	f.Fuzz(func(t *testing.T, joined string) {
		args := strings.Split(joined, "\x00")
		o, err := parseOptions("udp-receiver", args, noEnv, fakeResolver)
		if err == nil && o.rdv.IsValid() && !o.rdv.Is4() {
			t.Fatalf("rendezvous address %s is not IPv4", o.rdv)
		}
	})
}
