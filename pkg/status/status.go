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
	// Seq counts the reports of one client run from 1; Time is when the
	// client made this report. The Reporter fills both.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
}

// MaxErrorLen bounds Report.Error; longer texts are cut by Validate.
const MaxErrorLen = 4096

// Validate checks a report received from the network and normalises the
// MAC to lower-case colon form.
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
	if len(r.Error) > MaxErrorLen {
		r.Error = r.Error[:MaxErrorLen] + "…"
	}
	if len(r.Hostname) > 255 {
		return fmt.Errorf("hostname is %d bytes long", len(r.Hostname))
	}
	return nil
}

// sameProgress reports whether a and b say the same thing, ignoring the
// sequence number and time, so an unchanged state is not sent again.
func sameProgress(a, b Report) bool {
	a.Seq, b.Seq = 0, 0
	a.Time, b.Time = time.Time{}, time.Time{}
	ai, bi := a.Inventory, b.Inventory
	a.Inventory, b.Inventory = nil, nil
	return a == b && ai == bi
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
}
