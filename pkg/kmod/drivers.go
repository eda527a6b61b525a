package kmod

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/imgcast/imgcast/internal/recovered"
)

// Drivers loads the modules for the devices of the machine: first every
// device already in sysfs (coldplug, repeated as loaded drivers create new
// devices, e.g. virtio_pci creating the virtio-net device), then every
// device the kernel announces later (hotplug: USB NICs, SCSI disks behind
// an AHCI controller).
type Drivers struct {
	Loader *Loader
	// Sysfs is where sysfs is mounted (default /sys).
	Sysfs string
	// Logf reports failures; nil discards.
	Logf func(format string, args ...any)
	// Debugf, if set, reports every load.
	Debugf func(format string, args ...any)
	// OnPanic, if set, gets a panic of one of the goroutines loading
	// drivers, as an error, instead of the process crashing.
	OnPanic func(error)

	settled chan struct{}

	mu        sync.Mutex
	changed   chan struct{}       // closed and replaced on every device event
	lastEvent time.Time           // when changed was last closed
	tried     map[string]bool     // module names handed to the loader
	devices   map[string][]string // modalias -> matching modules
	started   time.Time
	took      time.Duration
}

// Start starts loading drivers in the background and returns at once.
// Loading continues for new devices until ctx ends. Set the exported
// fields before calling it, and call it once.
func (d *Drivers) Start(ctx context.Context) {
	d.settled = make(chan struct{})
	d.changed = make(chan struct{})
	d.tried = map[string]bool{}
	d.devices = map[string][]string{}
	d.started = time.Now()
	d.lastEvent = d.started
	if d.Sysfs == "" {
		d.Sysfs = "/sys"
	}
	if d.Logf == nil {
		d.Logf = func(string, ...any) {}
	}
	// Listen before the first scan so no device falls between the two.
	events, err := listenUevents(ctx, d.OnPanic)
	if err != nil {
		d.Logf("hotplug: %v (devices that appear later will not get drivers)", err)
	}
	recovered.Go("driver loading (coldplug)", d.OnPanic, func() { d.coldplug(ctx) })
	if events != nil {
		recovered.Go("driver loading (hotplug)", d.OnPanic, func() { d.hotplug(ctx, events) })
	}
}

// Settled is closed when coldplug has finished: every device present at
// start, and every device their drivers created, has had its modules
// loaded (or failed). Drivers probe synchronously inside module loading, so
// the NICs of those devices exist by then.
func (d *Drivers) Settled() <-chan struct{} { return d.settled }

// ColdplugTime is how long coldplug took (zero until Settled).
func (d *Drivers) ColdplugTime() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.took
}

// Changed returns a channel that is closed at the next device event (a
// kernel uevent, or a finished coldplug load): wait on it, then look at
// sysfs again, instead of polling. Without a uevent socket only coldplug
// loads signal.
func (d *Drivers) Changed() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.changed
}

// LastChange is when the last device event came (the start of loading
// before any).
func (d *Drivers) LastChange() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastEvent
}

func (d *Drivers) signalChange() {
	d.mu.Lock()
	d.lastEvent = time.Now()
	close(d.changed)
	d.changed = make(chan struct{})
	d.mu.Unlock()
}

type loadDone struct {
	module  string
	err     error
	network bool
	took    time.Duration
}

// coldplug loads the modules for the devices in sysfs. Network devices go
// first: with one CPU, loading the disk stack (ahci, libata, scsi) at the
// same time would slow the NIC's drivers down, and the network is what the
// machine waits for. The other modules start as soon as no network driver
// is loading.
func (d *Drivers) coldplug(ctx context.Context) {
	results := make(chan loadDone)
	inflight, netInflight := 0, 0
	var deferred []string
	start := func(m string, network bool) {
		inflight++
		if network {
			netInflight++
		}
		recovered.Go("loading "+m, d.OnPanic, func() {
			t0 := time.Now()
			err := d.Loader.Load(m)
			results <- loadDone{m, err, network, time.Since(t0)}
		})
	}
	scan := func() {
		for _, p := range d.newModules(readModaliases(d.Sysfs)) {
			if p.network {
				start(p.module, true)
			} else {
				deferred = append(deferred, p.module)
			}
		}
		if netInflight == 0 {
			for _, m := range deferred {
				start(m, false)
			}
			deferred = nil
		}
	}
	scan()
	// Rescan after every finished load rather than in rounds, so a slow
	// driver (ahci probing its ports) does not hold up the drivers for the
	// devices a fast one (virtio_pci) just created.
	for inflight > 0 {
		r := <-results
		inflight--
		if r.network {
			netInflight--
		}
		d.report(r)
		d.signalChange()
		if ctx.Err() == nil {
			scan()
		}
	}
	d.mu.Lock()
	d.took = time.Since(d.started)
	d.mu.Unlock()
	close(d.settled)
}

// isNetworkModalias reports whether a modalias is a network device's: a
// PCI function of class 0x02 or a virtio network device.
func isNetworkModalias(ma string) bool {
	switch {
	case strings.HasPrefix(ma, "pci:"):
		return strings.Contains(ma, "bc02sc")
	case strings.HasPrefix(ma, "virtio:"):
		return strings.HasPrefix(ma, "virtio:d00000001v")
	}
	return false
}

func (d *Drivers) hotplug(ctx context.Context, events <-chan uevent) {
	for ev := range events {
		d.signalChange()
		if ev.Action != "add" || ev.Modalias == "" {
			continue
		}
		for _, p := range d.newModules([]string{ev.Modalias}) {
			recovered.Go("loading "+p.module, d.OnPanic, func() {
				t0 := time.Now()
				err := d.Loader.Load(p.module)
				d.report(loadDone{p.module, err, p.network, time.Since(t0)})
				d.signalChange()
			})
		}
	}
}

func (d *Drivers) report(r loadDone) {
	if r.err != nil {
		d.Logf("driver %s: %v", r.module, r.err)
	} else if d.Debugf != nil {
		d.Debugf("driver %s loaded in %s", r.module, r.took.Round(time.Millisecond))
	}
}

// pendingModule is a module to load; network says a network device
// needs it.
type pendingModule struct {
	module  string
	network bool
}

// newModules records the devices' matches and returns the modules not
// tried yet.
func (d *Drivers) newModules(modaliases []string) []pendingModule {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []pendingModule
	index := map[string]int{}
	for _, ma := range modaliases {
		if _, seen := d.devices[ma]; seen {
			continue
		}
		mods := d.Loader.Index.Match(ma)
		d.devices[ma] = mods
		network := isNetworkModalias(ma)
		for _, m := range mods {
			if i, ok := index[m]; ok {
				out[i].network = out[i].network || network
				continue
			}
			if !d.tried[m] {
				d.tried[m] = true
				index[m] = len(out)
				out = append(out, pendingModule{m, network})
			}
		}
	}
	return out
}

// Matches returns the modules the index matched for a modalias seen so far
// (nil if none or not seen).
func (d *Drivers) Matches(modalias string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.devices[modalias]
}

// readModaliases lists the modalias of every device on every bus, sorted.
func readModaliases(sysfs string) []string {
	files, _ := filepath.Glob(filepath.Join(sysfs, "bus", "*", "devices", "*", "modalias"))
	seen := map[string]bool{}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		ma := strings.TrimSpace(string(b))
		if ma != "" && !seen[ma] {
			seen[ma] = true
			out = append(out, ma)
		}
	}
	sort.Strings(out)
	return out
}
