package lab

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The lab's switch normally floods multicast to every port, like a switch
// without IGMP snooping. The functions here make it behave like the
// switches that break multicast in real labs, with nftables in the bridge
// family, so that tests can reproduce those networks.

// Port is the name of the host's port on the lab bridge.
func (h *Host) Port() string { return fmt.Sprintf("vh%d", h.IP.To4()[3]) }

// snoopTable is the nftables table of SnoopWithoutQuerier.
const snoopTable = "lab_snoop"

// SnoopWithoutQuerier makes the bridge behave like a switch that snoops
// IGMP but has no querier: it forwards multicast to a port only while
// that port sent an IGMP membership report within the last forget (real
// switches: about 260 s). Reports arrive on join and, without a querier
// to ask for more, never again, so the group stops flowing forget after
// the join. Link-local groups (224.0.0.0/24: queries, reports) are always
// flooded, as switches do. The remembered ports are a dynamic nftables
// set refreshed with "update" in the prerouting hook; the forward hook
// (traffic between ports) and the output hook (traffic from the switch's
// own stack) drop multicast to any other port.
func (n *Net) SnoopWithoutQuerier(forget time.Duration) error {
	ms := forget.Milliseconds()
	if ms < 1 {
		return fmt.Errorf("lab: snooping timeout %s is too short", forget)
	}
	return n.Switch.nft(fmt.Sprintf(`table bridge %[1]s
delete table bridge %[1]s
table bridge %[1]s {
	set reported {
		type ifname
		flags timeout
		timeout %[2]dms
	}
	chain prerouting {
		type filter hook prerouting priority 0; policy accept;
		igmp type { membership-report-v1, membership-report-v2, membership-report-v3 } update @reported { iifname timeout %[2]dms }
	}
	chain forward {
		type filter hook forward priority 0; policy accept;
		ip daddr 224.0.0.0/24 accept
		ip daddr 224.0.0.0/4 oifname != @reported counter drop
	}
	chain output {
		type filter hook output priority 0; policy accept;
		ip daddr 224.0.0.0/24 accept
		ip daddr 224.0.0.0/4 oifname != @reported counter drop
	}
}
`, snoopTable, ms))
}

// ReportedPorts lists the bridge ports SnoopWithoutQuerier currently
// forwards multicast to (those that reported recently).
func (n *Net) ReportedPorts() ([]string, error) {
	out, err := n.Switch.Command(context.Background(), "nft", "list", "set", "bridge", snoopTable, "reported").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("nft list set in %s: %v: %s", n.Switch.NS, err, bytes.TrimSpace(out))
	}
	_, elems, ok := strings.Cut(string(out), "elements = {")
	if !ok {
		return nil, nil
	}
	elems, _, _ = strings.Cut(elems, "}")
	var ports []string
	for _, m := range regexp.MustCompile(`"([^"]+)"`).FindAllStringSubmatch(elems, -1) {
		ports = append(ports, m[1])
	}
	return ports, nil
}

// SnoopDrops is how many multicast packets SnoopWithoutQuerier has
// dropped so far.
func (n *Net) SnoopDrops() (int, error) {
	out, err := n.Switch.Command(context.Background(), "nft", "list", "table", "bridge", snoopTable).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("nft list table in %s: %v: %s", n.Switch.NS, err, bytes.TrimSpace(out))
	}
	total := 0
	for _, m := range regexp.MustCompile(`counter packets (\d+)`).FindAllStringSubmatch(string(out), -1) {
		v, _ := strconv.Atoi(m[1])
		total += v
	}
	return total, nil
}

// EnableQuerier makes the bridge an IGMP querier of the given version (2
// or 3) that sends a general query every interval, as a switch's IGMP
// querier or a Linux/Proxmox bridge with multicast_querier=1 does. It
// also turns on the bridge's own snooping (a Linux bridge queries only
// when it snoops). The querier sends from 0.0.0.0, the Linux default.
func (n *Net) EnableQuerier(version int, interval time.Duration) error {
	cs := func(d time.Duration) string { return strconv.FormatInt(int64(d/(10*time.Millisecond)), 10) }
	response := min(time.Second, interval/2)
	return n.Switch.ip("link", "set", n.Bridge, "type", "bridge",
		"mcast_snooping", "1", "mcast_querier", "1", "mcast_igmp_version", strconv.Itoa(version),
		"mcast_query_interval", cs(interval), "mcast_startup_query_interval", cs(interval),
		"mcast_query_response_interval", cs(response))
}

// blockTable is the nftables table of BlockMulticast.
const blockTable = "lab_block"

// BlockMulticast makes the bridge drop every multicast packet except
// link-local ones (224.0.0.0/24, where IGMP lives), as a firewall that
// drops multicast, or a switch port that filters it, does; unicast and
// broadcast still pass.
func (n *Net) BlockMulticast() error {
	return n.Switch.nft(fmt.Sprintf(`table bridge %[1]s
delete table bridge %[1]s
table bridge %[1]s {
	chain forward {
		type filter hook forward priority -10; policy accept;
		ip daddr 224.0.0.0/24 accept
		ip daddr 224.0.0.0/4 counter drop
	}
	chain output {
		type filter hook output priority -10; policy accept;
		ip daddr 224.0.0.0/24 accept
		ip daddr 224.0.0.0/4 counter drop
	}
}
`, blockTable))
}

// nft loads an nftables script in the host's namespace.
func (h *Host) nft(script string) error {
	c := h.Command(context.Background(), "nft", "-f", "-")
	c.Stdin = strings.NewReader(script)
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %v: %s", h.NS, err, bytes.TrimSpace(out))
	}
	return nil
}
