// Package lab builds throwaway test networks out of Linux network namespaces:
// one "switch" namespace that holds a bridge (and is itself a host on it, so
// servers can run there), any number of hosts attached to the bridge by veth
// pairs, tap devices for QEMU guests, and packet loss injected with nftables.
//
// Everything a Net creates is named with a prefix that contains the creating
// process's PID, so concurrent test binaries never collide, and namespaces
// left behind by a crashed run are removed by the next New.
//
// Lab networks need root. Tests call Require first: it skips when the
// developer asked for a quick run (IMGCAST_QUICK=1) and fails — never skips —
// when root or a tool is missing, so CI cannot silently lose coverage.
package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// QuickEnv is the environment variable that skips namespace and VM tests.
const QuickEnv = "IMGCAST_QUICK"

// Require skips t when QuickEnv is set, and otherwise fails it unless the
// process is root and every named command is installed.
func Require(t testing.TB, commands ...string) {
	t.Helper()
	if os.Getenv(QuickEnv) != "" {
		t.Skipf("%s is set: skipping a test that needs root and network namespaces", QuickEnv)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("this test needs root (network namespaces); run it as root, or set %s=1 to skip it locally", QuickEnv)
	}
	for _, c := range append([]string{"ip", "nft"}, commands...) {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s is not installed; run scripts/deps.sh (make deps) first", c)
		}
	}
}

// Net is a bridge in its own namespace plus the hosts attached to it.
type Net struct {
	prefix string
	// Switch is the namespace holding the bridge. It is also a host on the
	// bridge, with address .1 on interface Bridge.
	Switch *Host
	// Bridge is the bridge's interface name inside Switch.
	Bridge string
	// Subnet is the /24 of the lab, e.g. 10.99.0.0/24.
	Subnet *net.IPNet

	mu    sync.Mutex
	hosts []*Host
	procs []*exec.Cmd
	taps  int
}

// Host is one network namespace with one interface on the lab bridge.
type Host struct {
	net *Net
	// NS is the namespace name (usable with `ip netns exec`).
	NS string
	// Iface is the host's interface on the bridge (eth0 for hosts, the
	// bridge itself for the switch).
	Iface string
	// IP is the host's address on the lab subnet.
	IP net.IP
}

var seq atomic.Int32

// New creates a lab network on 10.<octet>.0.0/24. Call Close when done.
func New(octet int) (*Net, error) {
	removeStale()
	n := &Net{
		prefix: fmt.Sprintf("ic%d-%d", os.Getpid(), seq.Add(1)),
		Bridge: "br0",
		Subnet: &net.IPNet{IP: net.IPv4(10, byte(octet), 0, 0).To4(), Mask: net.CIDRMask(24, 32)},
	}
	sw, err := n.newNS("sw")
	if err != nil {
		return nil, err
	}
	n.Switch = sw
	sw.Iface = n.Bridge
	sw.IP = n.addr(1)
	steps := [][]string{
		{"link", "add", n.Bridge, "type", "bridge", "mcast_snooping", "0"},
		{"addr", "add", sw.IP.String() + "/24", "brd", "+", "dev", n.Bridge},
		{"link", "set", n.Bridge, "up"},
		{"route", "add", "224.0.0.0/4", "dev", n.Bridge},
	}
	for _, s := range steps {
		if err := sw.ip(s...); err != nil {
			n.Close()
			return nil, err
		}
	}
	return n, nil
}

// T creates a lab network for a test and closes it when the test ends.
func T(t testing.TB, octet int) *Net {
	t.Helper()
	n, err := New(octet)
	if err != nil {
		t.Fatalf("lab network: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
	})
	return n
}

func (n *Net) addr(host int) net.IP {
	ip := make(net.IP, 4)
	copy(ip, n.Subnet.IP.To4())
	ip[3] = byte(host)
	return ip
}

// Addr returns the lab address 10.<octet>.0.<host>.
func (n *Net) Addr(host int) net.IP { return n.addr(host) }

// Broadcast is the subnet's broadcast address.
func (n *Net) Broadcast() net.IP { return n.addr(255) }

func (n *Net) newNS(role string) (*Host, error) {
	name := n.prefix + "-" + role
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, bytes.TrimSpace(out))
	}
	h := &Host{net: n, NS: name}
	n.mu.Lock()
	n.hosts = append(n.hosts, h)
	n.mu.Unlock()
	if err := h.ip("link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	// IPv6 only adds router solicitations and MLD noise to captures.
	_ = h.Run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	return h, nil
}

// AddHost creates a namespace attached to the bridge with address .num and
// interface eth0.
func (n *Net) AddHost(role string, num int) (*Host, error) {
	h, err := n.newNS(role)
	if err != nil {
		return nil, err
	}
	h.Iface = "eth0"
	h.IP = n.addr(num)
	// veth names are global only inside a namespace, but both ends are born
	// in the switch namespace, so they must be unique there.
	swEnd := fmt.Sprintf("vh%d", num)
	tmp := fmt.Sprintf("vp%d", num)
	steps := []struct {
		h    *Host
		args []string
	}{
		{n.Switch, []string{"link", "add", swEnd, "type", "veth", "peer", "name", tmp}},
		{n.Switch, []string{"link", "set", tmp, "netns", h.NS}},
		{n.Switch, []string{"link", "set", swEnd, "master", n.Bridge}},
		{n.Switch, []string{"link", "set", swEnd, "up"}},
		{h, []string{"link", "set", tmp, "name", "eth0"}},
		{h, []string{"addr", "add", h.IP.String() + "/24", "brd", "+", "dev", "eth0"}},
		{h, []string{"link", "set", "eth0", "up"}},
		{h, []string{"route", "add", "224.0.0.0/4", "dev", "eth0"}},
	}
	for _, s := range steps {
		if err := s.h.ip(s.args...); err != nil {
			return nil, fmt.Errorf("add host %s: %w", role, err)
		}
	}
	return h, nil
}

// AddTap creates a tap device in the switch namespace, attached to the
// bridge, and returns its name (for QEMU's -netdev tap,ifname=...).
func (n *Net) AddTap() (string, error) {
	n.mu.Lock()
	n.taps++
	name := fmt.Sprintf("tap%d", n.taps-1)
	n.mu.Unlock()
	for _, s := range [][]string{
		{"tuntap", "add", "dev", name, "mode", "tap"},
		{"link", "set", name, "master", n.Bridge},
		{"link", "set", name, "up"},
	} {
		if err := n.Switch.ip(s...); err != nil {
			return "", fmt.Errorf("add tap: %w", err)
		}
	}
	return name, nil
}

// Close kills every process started through the lab and deletes its
// namespaces.
func (n *Net) Close() error {
	n.mu.Lock()
	procs, hosts := n.procs, n.hosts
	n.procs, n.hosts = nil, nil
	n.mu.Unlock()
	for _, p := range procs {
		if p.Process != nil && p.ProcessState == nil {
			_ = p.Process.Kill()
		}
	}
	var errs []error
	for i := len(hosts) - 1; i >= 0; i-- {
		errs = append(errs, deleteNS(hosts[i].NS))
	}
	return errors.Join(errs...)
}

func deleteNS(name string) error {
	if out, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}

// removeStale deletes namespaces left by lab processes that no longer exist.
func removeStale() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, "ic")
		if !ok {
			continue
		}
		pidText, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == nil || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue
		}
		_ = deleteNS(name)
	}
}

func (h *Host) ip(args ...string) error {
	full := append([]string{"-n", h.NS}, args...)
	if out, err := exec.Command("ip", full...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(full, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Command returns a command that runs inside the host's namespace. Processes
// started from it are killed by Net.Close if still running.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	full := append([]string{"netns", "exec", h.NS, name}, args...)
	c := exec.CommandContext(ctx, "ip", full...)
	// `ip netns exec` execs the command in place, so killing this process
	// kills the command itself. WaitDelay keeps a killed command whose
	// output pipes are inherited by children from blocking Wait forever.
	c.WaitDelay = 5 * time.Second
	h.net.mu.Lock()
	h.net.procs = append(h.net.procs, c)
	h.net.mu.Unlock()
	return c
}

// Run runs a command in the namespace and returns its combined output in the
// error when it fails.
func (h *Host) Run(name string, args ...string) error {
	out, err := h.Command(context.Background(), name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s in %s: %v: %s", name, strings.Join(args, " "), h.NS, err, bytes.TrimSpace(out))
	}
	return nil
}

// DropUDP makes the host drop the given percentage of incoming UDP datagrams
// to port, at random, with an nftables rule (tc netem is not available on
// every kernel). Calling it again replaces the previous rule.
func (h *Host) DropUDP(port, percent int) error {
	script := fmt.Sprintf(`table inet lab
delete table inet lab
table inet lab {
	chain input {
		type filter hook input priority 0; policy accept;
		udp dport %d numgen random mod 100 < %d drop
	}
}
`, port, percent)
	c := h.Command(context.Background(), "nft", "-f", "-")
	c.Stdin = strings.NewReader(script)
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %v: %s", h.NS, err, bytes.TrimSpace(out))
	}
	return nil
}

// StopDropping removes the rule DropUDP installed.
func (h *Host) StopDropping() error {
	return h.Run("nft", "delete", "table", "inet", "lab")
}
