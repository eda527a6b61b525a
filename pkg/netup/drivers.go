package netup

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Drivers loads the modules for the devices of the machine: first every
// device already in sysfs (coldplug, repeated as loaded drivers create new
// devices, e.g. virtio_pci creating the virtio-net device), then every
// device the kernel announces later (hotplug: USB NICs, SCSI disks behind
// an AHCI controller).
type Drivers struct {
	Loader *Loader
	// Sysfs is where sysfs is mounted ("/sys").
	Sysfs string
	// Logf reports loads and failures; nil discards.
	Logf func(format string, args ...any)

	settled chan struct{}

	mu      sync.Mutex
	changed chan struct{}       // closed and replaced on every device event
	tried   map[string]bool     // module names handed to the loader
	devices map[string][]string // modalias -> matching modules
	started time.Time
	took    time.Duration
}

// StartDrivers starts loading drivers in the background and returns at
// once. Loading continues for new devices until ctx ends. sysfs is where
// sysfs is mounted ("/sys"); logf may be nil.
func StartDrivers(ctx context.Context, l *Loader, sysfs string, logf func(string, ...any)) *Drivers {
	d := &Drivers{
		Loader:  l,
		Sysfs:   sysfs,
		Logf:    logf,
		settled: make(chan struct{}),
		changed: make(chan struct{}),
		tried:   map[string]bool{},
		devices: map[string][]string{},
		started: time.Now(),
	}
	if d.Logf == nil {
		d.Logf = func(string, ...any) {}
	}
	// Listen before the first scan so no device falls between the two.
	events, err := listenUevents(ctx)
	if err != nil {
		d.Logf("hotplug: %v (devices that appear later will not get drivers)", err)
	}
	go d.coldplug(ctx)
	if events != nil {
		go d.hotplug(ctx, events)
	}
	return d
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

func (d *Drivers) signalChange() {
	d.mu.Lock()
	close(d.changed)
	d.changed = make(chan struct{})
	d.mu.Unlock()
}

type loadDone struct {
	module string
	err    error
}

func (d *Drivers) coldplug(ctx context.Context) {
	results := make(chan loadDone)
	inflight := 0
	scan := func() {
		for _, m := range d.newModules(readModaliases(d.Sysfs)) {
			inflight++
			go func() { results <- loadDone{m, d.Loader.Load(m)} }()
		}
	}
	scan()
	// Rescan after every finished load rather than in rounds, so a slow
	// driver (ahci probing its ports) does not hold up the drivers for the
	// devices a fast one (virtio_pci) just created.
	for inflight > 0 {
		r := <-results
		inflight--
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

func (d *Drivers) hotplug(ctx context.Context, events <-chan uevent) {
	for ev := range events {
		d.signalChange()
		if ev.Action != "add" || ev.Modalias == "" {
			continue
		}
		for _, m := range d.newModules([]string{ev.Modalias}) {
			go func() { d.report(loadDone{m, d.Loader.Load(m)}) }()
		}
	}
}

func (d *Drivers) report(r loadDone) {
	if r.err != nil {
		d.Logf("driver %s: %v", r.module, r.err)
	}
}

// newModules records the devices' matches and returns the modules not
// tried yet.
func (d *Drivers) newModules(modaliases []string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, ma := range modaliases {
		if _, seen := d.devices[ma]; seen {
			continue
		}
		mods := d.Loader.Index.Match(ma)
		d.devices[ma] = mods
		for _, m := range mods {
			if !d.tried[m] {
				d.tried[m] = true
				out = append(out, m)
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
