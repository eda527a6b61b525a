package netup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/imgcast/imgcast/pkg/kmod"
)

// Config says how to bring the network up. The zero value works: every
// physical Ethernet NIC is tried and the first one with a lease wins.
type Config struct {
	// Drivers, if set, is the driver loading already under way; Up then
	// waits for the NICs it creates and reports its failures.
	Drivers *kmod.Drivers
	// MAC, if set, restricts Up to the NIC with this address.
	MAC net.HardwareAddr
	// Server, if set, must be reachable through the chosen NIC: a TCP
	// connection to ServerPort (default 80) must be answered, by an accept
	// or a refusal.
	Server     net.IP
	ServerPort int
	// LinkTimeout bounds the wait for NICs to appear and get carrier, all
	// in parallel, from the start of Up (default 15 s).
	LinkTimeout time.Duration
	// DHCPTimeout bounds DHCP on each NIC once it has carrier (default
	// 30 s: a switch port without portfast forwards only after ~30 s of
	// spanning tree).
	DHCPTimeout time.Duration
	// EntropyWait bounds the wait for the kernel's RNG before DHCP
	// (default 5 s).
	EntropyWait time.Duration
	// VendorClass is sent as DHCP option 60 (default "imgcast").
	VendorClass string
	// IsNIC overrides which interfaces are tried (default:
	// IsPhysicalEthernet).
	IsNIC func(name string) bool
	// ResolvConf is where to write the name servers ("" means
	// /etc/resolv.conf, "-" means nowhere).
	ResolvConf string
	// Sysfs is where sysfs is mounted (default /sys).
	Sysfs string
	// Logf reports progress; nil discards.
	Logf func(format string, args ...any)
	// Debugf, if set, reports every DHCP message.
	Debugf func(format string, args ...any)
}

func (c *Config) setDefaults() {
	if c.ServerPort == 0 {
		c.ServerPort = 80
	}
	if c.LinkTimeout == 0 {
		c.LinkTimeout = 15 * time.Second
	}
	if c.DHCPTimeout == 0 {
		c.DHCPTimeout = 30 * time.Second
	}
	if c.EntropyWait == 0 {
		c.EntropyWait = 5 * time.Second
	}
	if c.VendorClass == "" {
		c.VendorClass = "imgcast"
	}
	if c.Sysfs == "" {
		c.Sysfs = "/sys"
	}
	if c.IsNIC == nil {
		sysfs := c.Sysfs
		c.IsNIC = func(name string) bool { return IsPhysicalEthernet(sysfs, name) }
	}
	if c.ResolvConf == "" {
		c.ResolvConf = "/etc/resolv.conf"
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}

// Network is a machine on the network: the chosen NIC and its lease.
type Network struct {
	NIC NIC
	// Took is the time from the start of Up to the network being ready.
	Took time.Duration
	// Attempts records every NIC tried, the chosen one included.
	Attempts []*Attempt

	mu    sync.Mutex
	lease *Lease
}

// Lease returns the current lease (renewals replace it).
func (n *Network) Lease() *Lease {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lease
}

func (n *Network) setLease(l *Lease) {
	n.mu.Lock()
	n.lease = l
	n.mu.Unlock()
}

// Attempt is what happened on one NIC.
type Attempt struct {
	NIC          NIC
	Carrier      bool
	CarrierAfter time.Duration
	Lease        *Lease
	LeaseAfter   time.Duration
	Reachable    bool
	// Err is why this NIC was not chosen (nil for the chosen one).
	Err error
}

// UnreachableError says a NIC got a lease but cannot reach the server.
type UnreachableError struct {
	Interface string
	Server    string
	Err       error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("%s cannot reach the server %s: %v", e.Interface, e.Server, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Up loads nothing itself but waits for NICs (as cfg.Drivers creates them),
// sets each up, waits for carrier on all of them in parallel, runs DHCP on
// those with carrier, and returns the first that has a lease and reaches
// the server. The other NICs are left unconfigured. On failure the error
// is a *Diagnosis; a NIC with a lease that could not reach the server is
// then left configured, for the operator's debugging.
func Up(ctx context.Context, cfg Config) (*Network, error) {
	cfg.setDefaults()
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	subErr := make(chan error, 1)
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ListExisting: true,
		ErrorCallback: func(err error) {
			select {
			case subErr <- err:
			default:
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("watch links: %w", err)
	}
	// The netlink reader blocks on a full channel; keep it drained until
	// Up returns even if the loop below has stopped reading.
	defer func() {
		go func() {
			for range updates {
			}
		}()
	}()

	u := &upRun{cfg: cfg, start: start, linkDeadline: start.Add(cfg.LinkTimeout)}
	settled := make(<-chan struct{})
	if cfg.Drivers != nil {
		settled = cfg.Drivers.Settled()
	}
	waiters := map[int]*carrierWaiter{}
	results := make(chan *Attempt)
	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	pending := 0
	var attempts []*Attempt
	var winner *Attempt
	linkTimer := time.NewTimer(cfg.LinkTimeout)
	defer linkTimer.Stop()
	linkExpired := false

	finish := func() {
		stopWork()
		for pending > 0 {
			attempts = append(attempts, <-results)
			pending--
		}
	}
loop:
	for {
		if linkExpired && pending == 0 {
			break
		}
		select {
		case upd := <-updates:
			a := upd.Attrs()
			if w := waiters[a.Index]; w != nil {
				w.notify()
				continue
			}
			if upd.Header.Type != unix.RTM_NEWLINK || u.seen(a.Index) || !cfg.IsNIC(a.Name) {
				continue
			}
			nic := nicFromLink(cfg.Sysfs, upd.Link)
			u.markSeen(nic)
			if cfg.MAC != nil && !bytes.Equal(nic.MAC, cfg.MAC) {
				cfg.Logf("%s: not the NIC with MAC %s, ignoring it", nic, cfg.MAC)
				continue
			}
			cfg.Logf("%s: found, bringing it up", nic)
			w := newCarrierWaiter(a.Index)
			waiters[a.Index] = w
			pending++
			metric := 100 + len(waiters) // read here: waiters is the loop's
			go func() { results <- u.work(workCtx, nic, w, metric) }()
		case a := <-results:
			pending--
			attempts = append(attempts, a)
			if a.Err == nil {
				winner = a
				finish()
				break loop
			}
			cfg.Logf("%s: %v", a.NIC.Name, a.Err)
		case <-linkTimer.C:
			linkExpired = true
		case <-settled:
			settled = nil
			if cfg.Drivers != nil {
				cfg.Logf("drivers: coldplug done in %s", cfg.Drivers.ColdplugTime().Round(time.Millisecond))
			}
		case err := <-subErr:
			finish()
			return nil, fmt.Errorf("watching links: %w", err)
		case <-ctx.Done():
			finish()
			break loop
		}
	}

	if winner == nil {
		u.keepOneForDebugging(attempts)
		return nil, u.diagnose(ctx, attempts)
	}
	for _, a := range attempts {
		if a != winner && a.Lease != nil {
			if err := a.Lease.unapply(); err != nil {
				cfg.Logf("%s: removing its address: %v", a.NIC.Name, err)
			}
		}
	}
	l := winner.Lease
	if err := multicastRoute(l.Index); err != nil {
		return nil, fmt.Errorf("%s: multicast route: %w", l.Interface, err)
	}
	if cfg.ResolvConf != "-" {
		if err := l.writeResolvConf(cfg.ResolvConf); err != nil {
			cfg.Logf("resolv.conf: %v", err)
		}
	}
	n := &Network{NIC: winner.NIC, Took: time.Since(start), Attempts: attempts, lease: l}
	return n, nil
}

// upRun is the state of one Up call shared with its workers.
type upRun struct {
	cfg          Config
	start        time.Time
	linkDeadline time.Time

	mu   sync.Mutex
	nics []NIC // every NIC seen, tried or not
}

func (u *upRun) seen(index int) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, n := range u.nics {
		if n.Index == index {
			return true
		}
	}
	return false
}

func (u *upRun) markSeen(n NIC) {
	u.mu.Lock()
	u.nics = append(u.nics, n)
	u.mu.Unlock()
}

// work brings one NIC from down to a lease that reaches the server.
func (u *upRun) work(ctx context.Context, nic NIC, w *carrierWaiter, metric int) *Attempt {
	a := &Attempt{NIC: nic}
	after, err := w.bringUp(ctx, u.linkDeadline)
	if err != nil {
		a.Err = err
		return a
	}
	a.Carrier, a.CarrierAfter = true, after
	u.cfg.Logf("%s: carrier after %s", nic.Name, after.Round(time.Millisecond))
	dctx, cancel := context.WithTimeout(ctx, u.cfg.DHCPTimeout)
	t0 := time.Now()
	lease, err := requestLease(dctx, nic.Name, nic.Index, u.cfg.VendorClass, u.cfg.EntropyWait, u.cfg.Logf, u.cfg.Debugf)
	cancel()
	if err != nil {
		a.Err = err
		return a
	}
	a.LeaseAfter = time.Since(t0)
	// Recorded before applying, so a half-applied lease is removed with
	// the others if this NIC is not chosen.
	a.Lease = lease
	if err := lease.apply(metric); err != nil {
		a.Err = err
		return a
	}
	u.cfg.Logf("%s: %s (DHCP took %s)", nic.Name, lease, a.LeaseAfter.Round(time.Millisecond))
	if u.cfg.Server != nil {
		if err := probeReach(ctx, nic.Name, u.cfg.Server, u.cfg.ServerPort); err != nil {
			a.Err = &UnreachableError{Interface: nic.Name, Server: net.JoinHostPort(u.cfg.Server.String(), strconv.Itoa(u.cfg.ServerPort)), Err: err}
			return a
		}
		a.Reachable = true
	}
	return a
}

// keepOneForDebugging leaves the first NIC with a lease configured and
// removes the others' addresses.
func (u *upRun) keepOneForDebugging(attempts []*Attempt) {
	kept := false
	for _, a := range attempts {
		if a.Lease == nil {
			continue
		}
		if !kept {
			kept = true
			_ = multicastRoute(a.Lease.Index)
			continue
		}
		_ = a.Lease.unapply()
	}
}

// probeReach checks that the server answers on port through the named
// interface. A refused connection proves the server is there as well as an
// accepted one does; only silence (or "no route") means unreachable.
func probeReach(ctx context.Context, iface string, server net.IP, port int) error {
	d := net.Dialer{
		Timeout: 2 * time.Second,
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), iface) }); err != nil {
				return err
			}
			return serr
		},
	}
	addr := net.JoinHostPort(server.String(), strconv.Itoa(port))
	var err error
	for try := 0; try < 3 && ctx.Err() == nil; try++ {
		var c net.Conn
		c, err = d.DialContext(ctx, "tcp4", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if errors.Is(err, unix.ECONNREFUSED) {
			return nil
		}
	}
	return err
}

// NewNetwork describes a network configured by other means (a static
// address, or a test): KeepLease does nothing for a lease without a
// duration.
func NewNetwork(nic NIC, l *Lease) *Network {
	return &Network{NIC: nic, lease: l}
}
