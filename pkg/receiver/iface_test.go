package receiver

import (
	"net/netip"
	"testing"
)

func TestChooseInterface(t *testing.T) {
	a := netip.MustParseAddr
	lo := netIface{Name: "lo", Index: 1, IP: a("127.0.0.1"), Running: true}
	eth0 := netIface{Name: "eth0", Index: 2, IP: a("10.0.0.5"), Broadcast: a("10.0.0.255"), Running: true}
	eth0alias := netIface{Name: "eth0:1", Index: 2, IP: a("10.0.1.5"), Broadcast: a("10.0.1.255"), Running: true}
	enp := netIface{Name: "enp0s3", Index: 3, IP: a("192.168.1.9"), Broadcast: a("192.168.1.255"), Running: true}
	enpDown := enp
	enpDown.Running = false
	wlan := netIface{Name: "wlan0", Index: 4, IP: a("172.16.0.2"), Broadcast: a("172.16.0.255"), Running: true}
	ptp := netIface{Name: "tun0", Index: 5, IP: a("10.8.0.2"), Running: true}

	tests := []struct {
		name  string
		cands []netIface
		want  string
		pick  string // expected Name, "" for an error
	}{
		{"eth0 beats everything", []netIface{lo, wlan, enp, eth0alias, eth0}, "", "eth0"},
		{"alias beats other en*", []netIface{lo, enp, eth0alias}, "", "eth0:1"},
		{"en* beats others", []netIface{lo, wlan, enp}, "", "enp0s3"},
		{"a running link beats en* without carrier", []netIface{enpDown, wlan}, "", "wlan0"},
		{"broadcast breaks ties", []netIface{ptp, wlan}, "", "wlan0"},
		{"first wins a tie", []netIface{wlan, func() netIface { w := wlan; w.Name = "wlan1"; return w }()}, "", "wlan0"},
		{"loopback only", []netIface{lo}, "", "lo"},
		{"by exact name", []netIface{eth0, eth0alias, enp}, "eth0:1", "eth0:1"},
		{"exact name beats prefix", []netIface{eth0alias, eth0}, "eth0", "eth0"},
		{"by address", []netIface{eth0, enp}, "192.168.1.9", "enp0s3"},
		{"by prefix", []netIface{lo, enp, wlan}, "wl", "wlan0"},
		{"no match", []netIface{lo, eth0}, "eth9", ""},
		{"nothing at all", nil, "", ""},
	}
	for _, tc := range tests {
		got, err := chooseInterface(tc.cands, tc.want)
		switch {
		case tc.pick == "" && err == nil:
			t.Errorf("%s: picked %s, want an error", tc.name, got.Name)
		case tc.pick != "" && (err != nil || got.Name != tc.pick):
			t.Errorf("%s: picked %q (%v), want %q", tc.name, got.Name, err, tc.pick)
		}
	}
}

func TestControlAddress(t *testing.T) {
	a := netip.MustParseAddr
	eth := netIface{Name: "eth0", IP: a("10.0.0.5"), Broadcast: a("10.0.0.255")}
	lo := netIface{Name: "lo", IP: a("127.0.0.1")}
	tests := []struct {
		ifc  netIface
		rdv  netip.Addr
		ttl  int
		want string
	}{
		{eth, netip.Addr{}, 1, "10.0.0.255"},
		{lo, netip.Addr{}, 1, "127.0.0.1"},
		{eth, netip.Addr{}, 2, "224.0.0.1"},
		{eth, a("239.1.1.1"), 1, "239.1.1.1"},
		{eth, a("10.0.0.1"), 1, "10.0.0.1"},
	}
	for _, tc := range tests {
		if got := controlAddress(tc.ifc, tc.rdv, tc.ttl); got.String() != tc.want {
			t.Errorf("controlAddress(%s, %v, %d) = %s, want %s", tc.ifc.Name, tc.rdv, tc.ttl, got, tc.want)
		}
	}
}

func TestListInterfacesHasLoopback(t *testing.T) {
	ifs, err := listInterfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Name == "lo" && i.IP == netip.MustParseAddr("127.0.0.1") && !i.Broadcast.IsValid() {
			return
		}
	}
	t.Errorf("no lo 127.0.0.1 without broadcast in %+v", ifs)
}
