package netup

import (
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
)

func ack(t *testing.T, mods ...dhcpv4.Modifier) *nclient4.Lease {
	t.Helper()
	base := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 0, 0, 1))),
	}
	m, err := dhcpv4.New(append(base, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return &nclient4.Lease{ACK: m, Offer: m, CreationTime: time.Unix(1000, 0)}
}

func TestLeaseFromACK(t *testing.T) {
	ip := net.IPv4(10, 0, 0, 123)
	for _, tt := range []struct {
		name           string
		mods           []dhcpv4.Modifier
		wantAddr       string
		wantBrd        string
		wantDur        time.Duration
		wantT1, wantT2 time.Duration
		wantMTU        int
		wantErr        bool
	}{
		{"typical", []dhcpv4.Modifier{dhcpv4.WithYourIP(ip), dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
			dhcpv4.WithRouter(net.IPv4(10, 0, 0, 1)), dhcpv4.WithLeaseTime(3600)},
			"10.0.0.123/24", "10.0.0.255", time.Hour, 30 * time.Minute, 3150 * time.Second, 0, false},
		{"explicit T1 T2 broadcast MTU", []dhcpv4.Modifier{dhcpv4.WithYourIP(ip), dhcpv4.WithNetmask(net.CIDRMask(16, 32)),
			dhcpv4.WithLeaseTime(1000), dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(100 * time.Second)),
			dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(200 * time.Second)),
			dhcpv4.WithOption(dhcpv4.OptBroadcastAddress(net.IPv4(10, 0, 255, 255))),
			dhcpv4.WithGeneric(dhcpv4.OptionInterfaceMTU, []byte{0x23, 0x28})},
			"10.0.0.123/16", "10.0.255.255", 1000 * time.Second, 100 * time.Second, 200 * time.Second, 9000, false},
		{"T1 beyond lease is ignored", []dhcpv4.Modifier{dhcpv4.WithYourIP(ip), dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
			dhcpv4.WithLeaseTime(100), dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(500 * time.Second))},
			"10.0.0.123/24", "10.0.0.255", 100 * time.Second, 50 * time.Second, 87500 * time.Millisecond, 0, false},
		{"no mask: classful default", []dhcpv4.Modifier{dhcpv4.WithYourIP(ip), dhcpv4.WithLeaseTime(0xffffffff)},
			"10.0.0.123/8", "10.255.255.255", 0, 0, 0, 0, false},
		{"no address", []dhcpv4.Modifier{dhcpv4.WithLeaseTime(60)}, "", "", 0, 0, 0, 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l, err := leaseFromACK("eth0", 2, ack(t, tt.mods...))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if l.Address.String() != tt.wantAddr || l.Broadcast.String() != tt.wantBrd {
				t.Errorf("address %s brd %s, want %s brd %s", l.Address, l.Broadcast, tt.wantAddr, tt.wantBrd)
			}
			if l.Duration != tt.wantDur || l.T1 != tt.wantT1 || l.T2 != tt.wantT2 {
				t.Errorf("lease %s T1 %s T2 %s, want %s %s %s", l.Duration, l.T1, l.T2, tt.wantDur, tt.wantT1, tt.wantT2)
			}
			if l.MTU != tt.wantMTU {
				t.Errorf("MTU %d, want %d", l.MTU, tt.wantMTU)
			}
			if !l.Server.Equal(net.IPv4(10, 0, 0, 1)) {
				t.Errorf("server %s", l.Server)
			}
		})
	}
}

func TestLeaseRoutes(t *testing.T) {
	_, subnet, _ := net.ParseCIDR("10.0.0.0/24")
	_, other, _ := net.ParseCIDR("192.168.0.0/16")
	addr := &net.IPNet{IP: net.IPv4(10, 0, 0, 5).To4(), Mask: subnet.Mask}
	type route struct {
		dst    string
		gw     string
		onlink bool
	}
	for _, tt := range []struct {
		name  string
		lease Lease
		want  []route
	}{
		{"none", Lease{}, nil},
		{"default via router", Lease{Routers: []net.IP{net.IPv4(10, 0, 0, 1)}}, []route{{"0.0.0.0/0", "10.0.0.1", false}}},
		{"router outside the subnet", Lease{Routers: []net.IP{net.IPv4(10, 9, 9, 9)}}, []route{{"0.0.0.0/0", "10.9.9.9", true}}},
		{"classless routes win over the router", Lease{
			Routers: []net.IP{net.IPv4(10, 0, 0, 1)},
			Routes:  []*dhcpv4.Route{{Dest: other, Router: net.IPv4(10, 0, 0, 2)}, {Dest: subnet, Router: net.IPv4zero}},
		}, []route{{"192.168.0.0/16", "10.0.0.2", false}, {"10.0.0.0/24", "<nil>", false}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := tt.lease
			l.Address, l.Index = addr, 7
			var got []route
			for _, r := range l.routes(101) {
				if r.LinkIndex != 7 || r.Priority != 101 {
					t.Errorf("route %v: wrong link or metric", r)
				}
				got = append(got, route{r.Dst.String(), r.Gw.String(), r.Flags&int(netlink.FLAG_ONLINK) != 0})
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("routes = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNextRenewal(t *testing.T) {
	t0 := time.Unix(10000, 0)
	l := &Lease{Duration: time.Hour, T1: 30 * time.Minute, T2: 52*time.Minute + 30*time.Second, Obtained: t0}
	for _, tt := range []struct {
		name   string
		lease  *Lease
		at     time.Duration
		failed bool
		want   time.Duration
		wantOK bool
	}{
		{"infinite lease", &Lease{}, 0, false, 0, false},
		{"fresh lease waits for T1", l, 0, false, 30 * time.Minute, true},
		{"later, the rest until T1", l, 10 * time.Minute, false, 20 * time.Minute, true},
		{"renewing after a failure: half the time to T2", l, 40 * time.Minute, true, 6*time.Minute + 15*time.Second, true},
		{"close to T2: at least the minimum", l, 52*time.Minute + 20*time.Second, true, minRenewRetry, true},
		{"rebinding: half the time to expiry", l, 56 * time.Minute, true, 2 * time.Minute, true},
		{"expired: every minute", l, 61 * time.Minute, true, time.Minute, true},
		{"failed before T1 (the job started late)", l, 29*time.Minute + 55*time.Second, true, minRenewRetry, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := nextRenewal(tt.lease, t0.Add(tt.at), tt.failed)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("nextRenewal = %s %v, want %s %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
