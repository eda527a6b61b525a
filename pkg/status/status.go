// Package status is the reporting protocol between imaging clients and the
// server: the JSON report a client POSTs to /api/status, the Reporter that
// sends it without ever slowing the data path, and the session description
// the server publishes at /api/session so a client can tell, before it
// waits for a stream, whether it can still join.
package status

import (
	"errors"
	"fmt"
	"math"
	"net"
	"time"
	"unicode/utf8"

	"github.com/imgcast/imgcast/pkg/inventory"
)

// State is where a client is in its imaging job.
type State string

// The states, in the order a successful job goes through them.
const (
	Ready     State = "ready"     // booted, network up, disk chosen; waiting for data
	Receiving State = "receiving" // a partition's stream has started
	Writing   State = "writing"   // partition table or data being written (no stream, e.g. the table)
	Verifying State = "verifying" // checking what was written
	Done      State = "done"      // finished, image verified
	Failed    State = "failed"    // gave up; Error says why
)

var states = []State{Ready, Receiving, Writing, Verifying, Done, Failed}

// Valid reports whether s is one of the defined states.
func (s State) Valid() bool {
	for _, v := range states {
		if s == v {
			return true
		}
	}
	return false
}

// Terminal reports whether s ends a job (done or failed).
func (s State) Terminal() bool { return s == Done || s == Failed }

// Report is one status message from a client. Rates are in bytes per
// second. Bytes and Total are the progress through the current partition.
type Report struct {
	MAC      string `json:"mac"`
	IP       string `json:"ip,omitempty"`
	Hostname string `json:"hostname,omitempty"`
	State    State  `json:"state"`
	// Partition is the partition number being worked on (2 for d1p2),
	// 0 when none; Partitions is how many partitions the image has data for.
	Partition  int     `json:"partition,omitempty"`
	Partitions int     `json:"partitions,omitempty"`
	Bytes      int64   `json:"bytes"`
	Total      int64   `json:"total"` // 0 when not known yet
	WireRate   float64 `json:"wire_rate"`
	DiskRate   float64 `json:"disk_rate"`
	Error      string  `json:"error,omitempty"`
	// Inventory is sent with the ready report.
	Inventory *inventory.Machine `json:"inventory,omitempty"`
	// Disk is the disk being imaged (model, size, serial), from the ready
	// report on.
	Disk *inventory.Disk `json:"disk,omitempty"`
	// MulticastCheck is the result of a multicast check the client ran
	// before imaging (imgcast mcast-check), if it ran one.
	MulticastCheck *MulticastCheck `json:"mcast_check,omitempty"`
	// Seq counts the reports of one client run from 1; Time is when the
	// client made this report. The Reporter fills both.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
}

// MulticastCheck is what a client's multicast check found: the verdict
// line ("ok", or "PROBLEM — " and what to change) and the figures behind
// it. Rates are in bytes per second; durations in seconds.
type MulticastCheck struct {
	Verdict            string  `json:"verdict"`
	LossPercent        float64 `json:"loss_percent"`                   // of the multicast test stream
	UnicastLossPercent float64 `json:"unicast_loss_percent,omitempty"` // the same over unicast, for comparison
	// Querier is the IGMP querier's address, empty when none was seen;
	// QuerierVersion its IGMP version and QueryInterval its interval.
	Querier        string  `json:"querier,omitempty"`
	QuerierVersion int     `json:"querier_version,omitempty"`
	QueryInterval  float64 `json:"query_interval_seconds,omitempty"`
	FirstPacket    float64 `json:"first_packet_seconds,omitempty"` // until the first multicast packet came
	MulticastRate  float64 `json:"multicast_rate,omitempty"`
	UnicastRate    float64 `json:"unicast_rate,omitempty"`
}

// OK reports whether the check found nothing wrong.
func (m *MulticastCheck) OK() bool { return m.Verdict == "ok" }

// Bounds on what a client may send; Validate enforces them, so the server
// can bound the memory its records take.
const (
	// MaxErrorLen bounds Report.Error; longer texts are cut.
	MaxErrorLen = 4096
	// MaxVerdictLen bounds MulticastCheck.Verdict; longer texts are cut.
	MaxVerdictLen = 512
	// MaxFieldLen bounds each string of the inventory; longer ones are cut.
	MaxFieldLen = 256
	// MaxNICs and MaxDisks bound the inventory's lists; a report with
	// more is refused.
	MaxNICs  = 64
	MaxDisks = 256
)

// Validate checks a report received from the network, normalises the MAC
// to lower-case colon form and cuts over-long texts.
func (r *Report) Validate() error {
	mac, err := net.ParseMAC(r.MAC)
	if err != nil || len(mac) != 6 {
		return fmt.Errorf("mac %q is not an Ethernet MAC address", r.MAC)
	}
	r.MAC = mac.String()
	if !r.State.Valid() {
		return fmt.Errorf("state %q is not one of %v", r.State, states)
	}
	if r.IP != "" && net.ParseIP(r.IP) == nil {
		return fmt.Errorf("ip %q is not an IP address", r.IP)
	}
	if r.Partition < 0 || r.Partitions < 0 || r.Bytes < 0 || r.Total < 0 {
		return errors.New("partition, partitions, bytes and total must not be negative")
	}
	for _, v := range []float64{r.WireRate, r.DiskRate} {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("rate %v is not a rate", v)
		}
	}
	r.Error = cut(r.Error, MaxErrorLen)
	if len(r.Hostname) > 255 {
		return fmt.Errorf("hostname is %d bytes long", len(r.Hostname))
	}
	if r.Inventory != nil {
		if err := validateInventory(r.Inventory); err != nil {
			return fmt.Errorf("inventory: %w", err)
		}
	}
	if r.MulticastCheck != nil {
		if err := r.MulticastCheck.validate(); err != nil {
			return fmt.Errorf("mcast_check: %w", err)
		}
	}
	return nil
}

// validateInventory refuses lists longer than any machine has and cuts
// over-long strings.
func validateInventory(m *inventory.Machine) error {
	if len(m.NICs) > MaxNICs {
		return fmt.Errorf("%d NICs listed, at most %d accepted", len(m.NICs), MaxNICs)
	}
	if len(m.Disks) > MaxDisks {
		return fmt.Errorf("%d disks listed, at most %d accepted", len(m.Disks), MaxDisks)
	}
	for i := range m.NICs {
		n := &m.NICs[i]
		cutAll(&n.Name, &n.MAC, &n.Driver, &n.PCI)
	}
	for i := range m.Disks {
		d := &m.Disks[i]
		cutAll(&d.Name, &d.Path, &d.Model, &d.Serial)
		if d.SectorSize < 0 {
			return fmt.Errorf("disk %q: sector size %d", d.Name, d.SectorSize)
		}
	}
	cutAll(&m.DMI.Vendor, &m.DMI.Product, &m.DMI.Serial, &m.DMI.UUID)
	return nil
}

func (m *MulticastCheck) validate() error {
	if m.Verdict == "" {
		return errors.New("no verdict")
	}
	m.Verdict = cut(m.Verdict, MaxVerdictLen)
	if m.Querier != "" && net.ParseIP(m.Querier) == nil {
		return fmt.Errorf("querier %q is not an IP address", m.Querier)
	}
	if m.QuerierVersion < 0 || m.QuerierVersion > 3 {
		return fmt.Errorf("IGMP version %d", m.QuerierVersion)
	}
	for _, p := range []float64{m.LossPercent, m.UnicastLossPercent} {
		if !(p >= 0 && p <= 100) {
			return fmt.Errorf("loss %v%% is not a percentage", p)
		}
	}
	for _, v := range []float64{m.QueryInterval, m.FirstPacket, m.MulticastRate, m.UnicastRate} {
		if !(v >= 0) || math.IsInf(v, 0) {
			return fmt.Errorf("%v is not a duration or rate", v)
		}
	}
	return nil
}

// cut shortens s to at most n bytes (plus an ellipsis), at a character
// boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func cutAll(fields ...*string) {
	for _, f := range fields {
		*f = cut(*f, MaxFieldLen)
	}
}

// sameProgress reports whether a and b say the same thing, ignoring the
// sequence number and time, so an unchanged state is not sent again.
func sameProgress(a, b Report) bool {
	a.Seq, b.Seq = 0, 0
	a.Time, b.Time = time.Time{}, time.Time{}
	ai, bi := a.Inventory, b.Inventory
	am, bm := a.MulticastCheck, b.MulticastCheck
	a.Inventory, b.Inventory = nil, nil
	a.MulticastCheck, b.MulticastCheck = nil, nil
	return a == b && ai == bi && am == bm
}

// Client is the server's record of one machine, as GET /api/status lists
// it: the latest report plus what the server observed.
type Client struct {
	Report
	// Remote is the address the latest report came from.
	Remote    string    `json:"remote"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// Age is how many seconds ago the latest report came, when listed.
	Age float64 `json:"age_seconds"`
	// Note is the server's remark about this client, e.g. that it became
	// ready after the multicast session had started.
	Note string `json:"note,omitempty"`
	// Session is the multicast session the machine was told to join or
	// waits for, or whose udp-sender saw it connect (0: none known).
	Session int `json:"session,omitempty"`
}
