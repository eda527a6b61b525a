package netup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/dnsmasq"
	"github.com/imgcast/imgcast/internal/lab"
	"github.com/vishvananda/netlink"
)

// These tests run Up for real, in a network namespace attached to a lab
// bridge with dnsmasq on it. Up works on the namespace of the whole
// process (netlink, raw sockets, sysfs), so the test binary re-runs itself
// inside the namespace as a helper (TestMain) and reports back as JSON.

const helperEnv = "NETUP_TEST_HELPER"

type helperRequest struct {
	NICs        []string
	Server      string
	ServerPort  int
	MAC         string
	LinkTimeout time.Duration
	DHCPTimeout time.Duration
	Renew       bool
}

type helperResult struct {
	NIC, Addr      string
	Err, Reason    string
	Addrs          map[string][]string // after Up, per NIC
	MulticastRoute bool
	Renewed        string
	RenewErr       string
}

func TestMain(m *testing.M) {
	if req := os.Getenv(helperEnv); req != "" {
		os.Exit(runHelper(req))
	}
	os.Exit(m.Run())
}

func runHelper(reqJSON string) int {
	var req helperRequest
	if err := json.Unmarshal([]byte(reqJSON), &req); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg := Config{
		Server:      net.ParseIP(req.Server),
		ServerPort:  req.ServerPort,
		LinkTimeout: req.LinkTimeout,
		DHCPTimeout: req.DHCPTimeout,
		ResolvConf:  "-",
		IsNIC: func(name string) bool {
			for _, n := range req.NICs {
				if n == name {
					return true
				}
			}
			return false
		},
		Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, "netup: "+f+"\n", a...) },
	}
	if req.MAC != "" {
		cfg.MAC, _ = net.ParseMAC(req.MAC)
	}
	var res helperResult
	n, err := Up(context.Background(), cfg)
	if err != nil {
		res.Err = err.Error()
		var d *Diagnosis
		if errors.As(err, &d) {
			res.Reason = d.Reason
		}
	} else {
		res.NIC, res.Addr = n.NIC.Name, n.Lease().Address.String()
		routes, _ := netlink.RouteList(nil, netlink.FAMILY_V4)
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == "224.0.0.0/4" && r.LinkIndex == n.NIC.Index {
				res.MulticastRoute = true
			}
		}
		if req.Renew {
			fresh, err := n.Lease().Renew(context.Background())
			if err != nil {
				res.RenewErr = err.Error()
			} else {
				res.Renewed = fresh.Address.String()
			}
		}
	}
	res.Addrs = map[string][]string{}
	for _, name := range req.NICs {
		link, err := netlink.LinkByName(name)
		if err != nil {
			continue
		}
		addrs, _ := netlink.AddrList(link, netlink.FAMILY_V4)
		for _, a := range addrs {
			res.Addrs[name] = append(res.Addrs[name], a.IPNet.String())
		}
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// runUp runs Up inside the host's namespace.
func runUp(t *testing.T, h *lab.Host, req helperRequest) helperResult {
	t.Helper()
	b, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := h.Command(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(b))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("Up in %s:\n%s", h.NS, stderr.String())
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	var res helperResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("helper output %q: %v", stdout.String(), err)
	}
	return res
}

// bareHost adds a host to the lab whose eth0 is down and has no address,
// like a NIC at boot.
func bareHost(t *testing.T, n *lab.Net, role string, num int) *lab.Host {
	t.Helper()
	h, err := n.AddHost(role, num)
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"addr", "flush", "dev", "eth0"}, {"route", "flush", "dev", "eth0"}, {"link", "set", "eth0", "down"}} {
		if err := h.Run("ip", args...); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func TestUpGetsLeaseAndRenews(t *testing.T) {
	lab.Require(t, "dnsmasq")
	n := lab.T(t, 91)
	dhcp := dnsmasq.Start(t, n.Switch, dnsmasq.Options{})
	client := bareHost(t, n, "client", 50)
	res := runUp(t, client, helperRequest{
		NICs: []string{"eth0"}, Server: n.Switch.IP.String(), ServerPort: 9, // nothing listens: refused = reachable
		LinkTimeout: 10 * time.Second, DHCPTimeout: 20 * time.Second, Renew: true,
	})
	if res.Err != "" {
		t.Fatalf("Up: %s", res.Err)
	}
	if res.NIC != "eth0" || !strings.HasPrefix(res.Addr, "10.91.0.1") || !strings.HasSuffix(res.Addr, "/24") {
		t.Errorf("got %s %s, want eth0 with an address from 10.91.0.100-199/24", res.NIC, res.Addr)
	}
	if got := res.Addrs["eth0"]; len(got) != 1 || got[0] != res.Addr {
		t.Errorf("eth0 addresses %v, want [%s]", got, res.Addr)
	}
	if !res.MulticastRoute {
		t.Error("no 224.0.0.0/4 route on the chosen NIC")
	}
	if res.RenewErr != "" || res.Renewed != res.Addr {
		t.Errorf("renewal: %q %q, want the same address again", res.Renewed, res.RenewErr)
	}
	if leases := dhcp.Leases(); len(leases) != 1 {
		t.Errorf("dnsmasq leases %v, want one", leases)
	}
	if got := strings.Count(dhcp.Log(), "DHCPACK(br0)"); got != 2 {
		t.Errorf("dnsmasq sent %d ACKs, want 2 (lease and renewal)", got)
	}

	// A server that does not answer (the switch does not route): the
	// diagnosis says so, and the NIC keeps its address for debugging.
	res = runUp(t, client, helperRequest{
		NICs: []string{"eth0"}, Server: "10.91.77.77", ServerPort: 80,
		LinkTimeout: 10 * time.Second, DHCPTimeout: 20 * time.Second,
	})
	if !strings.Contains(res.Reason, "server 10.91.77.77 is not reachable") || !strings.Contains(res.Err, "eth0 cannot reach the server 10.91.77.77:80") {
		t.Errorf("unreachable server: diagnosis %q", res.Err)
	}
	if len(res.Addrs["eth0"]) != 1 {
		t.Errorf("after an unreachable server eth0 has %v, want its lease kept for debugging", res.Addrs["eth0"])
	}
}

// twoNICHost gives a client namespace two NICs: eth0 on lab a and eth1 on
// lab b.
func twoNICHost(t *testing.T, a, b *lab.Net) *lab.Host {
	t.Helper()
	client := bareHost(t, a, "client", 50)
	other := bareHost(t, b, "other", 50)
	for _, args := range [][]string{
		{"-n", other.NS, "link", "set", "eth0", "name", "eth1"},
		{"-n", other.NS, "link", "set", "eth1", "netns", client.NS},
	} {
		if out, err := client.Command(context.Background(), "ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	return client
}

func TestUpPicksTheNICThatReachesTheServer(t *testing.T) {
	lab.Require(t, "dnsmasq")
	a, b := lab.T(t, 92), lab.T(t, 93)
	dnsmasq.Start(t, a.Switch, dnsmasq.Options{})
	dnsmasq.Start(t, b.Switch, dnsmasq.Options{})
	client := twoNICHost(t, a, b)

	// Both NICs get a lease; only eth1's network has the server.
	res := runUp(t, client, helperRequest{
		NICs: []string{"eth0", "eth1"}, Server: b.Switch.IP.String(), ServerPort: 9,
		LinkTimeout: 10 * time.Second, DHCPTimeout: 20 * time.Second,
	})
	if res.Err != "" {
		t.Fatalf("Up: %s", res.Err)
	}
	if res.NIC != "eth1" || !strings.HasPrefix(res.Addr, "10.93.0.") {
		t.Errorf("chose %s %s, want eth1 on 10.93.0.0/24", res.NIC, res.Addr)
	}
	if len(res.Addrs["eth0"]) != 0 {
		t.Errorf("eth0 kept %v; the NICs not chosen must be left unconfigured", res.Addrs["eth0"])
	}

	// The command line names eth0's MAC: eth1 is not even tried.
	if err := client.Run("ip", "addr", "flush", "dev", "eth1"); err != nil {
		t.Fatal(err)
	}
	link := linkIn(t, client, "eth0")
	res = runUp(t, client, helperRequest{
		NICs: []string{"eth0", "eth1"}, MAC: link,
		LinkTimeout: 10 * time.Second, DHCPTimeout: 20 * time.Second,
	})
	if res.Err != "" || res.NIC != "eth0" || !strings.HasPrefix(res.Addr, "10.92.0.") {
		t.Errorf("with eth0's MAC: chose %q %q (err %s), want eth0 on 10.92.0.0/24", res.NIC, res.Addr, res.Err)
	}
	if len(res.Addrs["eth1"]) != 0 {
		t.Errorf("eth1 configured %v though another MAC was asked for", res.Addrs["eth1"])
	}
}

func linkIn(t *testing.T, h *lab.Host, name string) string {
	t.Helper()
	out, err := h.Command(context.Background(), "cat", "/sys/class/net/"+name+"/address").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func TestUpDiagnosesNoLeaseAndNoCarrier(t *testing.T) {
	lab.Require(t)
	n := lab.T(t, 94) // no DHCP server
	client := bareHost(t, n, "client", 50)
	res := runUp(t, client, helperRequest{NICs: []string{"eth0"}, LinkTimeout: 5 * time.Second, DHCPTimeout: 2 * time.Second})
	if !strings.Contains(res.Reason, "no DHCP lease") {
		t.Errorf("reason %q, want no DHCP lease", res.Reason)
	}
	for _, want := range []string{"carrier after", "DHCP on eth0: no lease after", "no answer from any DHCP server", "What was tried:"} {
		if !strings.Contains(res.Err, want) {
			t.Errorf("diagnosis lacks %q:\n%s", want, res.Err)
		}
	}

	// Unplug the cable: the switch end of the veth goes down.
	if err := n.Switch.Run("ip", "link", "set", "vh50", "down"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res = runUp(t, client, helperRequest{NICs: []string{"eth0"}, LinkTimeout: time.Second, DHCPTimeout: 2 * time.Second})
	if !strings.Contains(res.Reason, "no NIC got carrier") || !strings.Contains(res.Err, "no carrier") {
		t.Errorf("unplugged: diagnosis %q, want no carrier", res.Err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the no-carrier diagnosis took %s; the link timeout was 1 s", took)
	}

	// The command line names a MAC no NIC has.
	res = runUp(t, client, helperRequest{NICs: []string{"eth0"}, MAC: "02:00:00:00:00:99", LinkTimeout: time.Second})
	if !strings.Contains(res.Reason, "no NIC has the MAC address 02:00:00:00:00:99") || !strings.Contains(res.Err, "NICs present but not tried:") {
		t.Errorf("unknown MAC: diagnosis %q", res.Err)
	}

	// No NIC at all.
	res = runUp(t, client, helperRequest{NICs: []string{"eth9"}, LinkTimeout: time.Second})
	if !strings.Contains(res.Reason, "no network interface found") {
		t.Errorf("no NIC: reason %q", res.Reason)
	}
}
