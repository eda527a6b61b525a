package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"sort"
	"sync"
	"time"
	"unsafe"

	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/status"
)

// errTooManyClients is returned for a new MAC when the server keeps the
// records of as many machines as it may and none of them can be dropped.
var errTooManyClients = errors.New("the server already keeps the status of too many machines")

// silentAfter is how long a machine that has not finished may stay
// silent before its record may be dropped to make room (clients repeat
// their state every 15 s).
const silentAfter = 10 * time.Minute

// clients keeps the latest report of every machine, by MAC, within two
// bounds: the number of machines, and the bytes their inventories take
// (the only part of a report that can be large).
type clients struct {
	mu  sync.Mutex
	m   map[string]*record
	now func() time.Time
	// max is how many machines are kept; budget how many bytes of
	// inventories, used the bytes they take now.
	max          int
	budget, used int64
}

type record struct {
	status.Client
	invCost int64 // what Inventory counts against the budget
}

func newClients(max int, budget int64) *clients {
	return &clients{m: map[string]*record{}, now: time.Now, max: max, budget: budget}
}

// update merges a validated report that came from remote (host:port). The
// newest report wins; the inventory and the multicast check, sent only
// with some reports, are kept until new ones come. note, if not empty,
// replaces the server's remark about the client; a new ready report clears
// an old remark.
func (c *clients) update(rep status.Report, remote, note string) (status.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	cl, ok := c.m[rep.MAC]
	if !ok {
		if len(c.m) >= c.max && !c.dropOne(now) {
			return status.Client{}, errTooManyClients
		}
		cl = &record{Client: status.Client{FirstSeen: now}}
		c.m[rep.MAC] = cl
	}
	inv, check := cl.Inventory, cl.MulticastCheck
	if rep.State == status.Ready {
		cl.Note = ""
	}
	if rep.Inventory != nil {
		cost := inventoryCost(rep.Inventory)
		if c.used-cl.invCost+cost > c.budget {
			rep.Inventory = nil
			note = joinNote(note, fmt.Sprintf("inventory not kept: the server keeps at most %s of inventories", inventory.HumanBytes(uint64(c.budget))))
		} else {
			c.used += cost - cl.invCost
			cl.invCost = cost
		}
	}
	cl.Report = rep
	if cl.Inventory == nil {
		cl.Inventory = inv
	}
	if cl.MulticastCheck == nil {
		cl.MulticastCheck = check
	}
	if cl.IP == "" {
		cl.IP = host
	}
	cl.Remote = host
	cl.LastSeen = now
	if note != "" {
		cl.Note = note
	}
	return cl.Client, nil
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// dropOne makes room for a new machine by dropping the record of the one
// seen longest ago among those that finished or fell silent. c.mu is held.
func (c *clients) dropOne(now time.Time) bool {
	var oldest *record
	var key string
	for mac, r := range c.m {
		if !r.State.Terminal() && now.Sub(r.LastSeen) < silentAfter {
			continue
		}
		if oldest == nil || r.LastSeen.Before(oldest.LastSeen) {
			oldest, key = r, mac
		}
	}
	if oldest == nil {
		return false
	}
	c.used -= oldest.invCost
	delete(c.m, key)
	return true
}

// inventoryCost is about what an inventory takes in memory: its JSON size
// (its strings) plus its structs.
func inventoryCost(m *inventory.Machine) int64 {
	b, err := json.Marshal(m)
	if err != nil {
		return 1 << 30 // cannot happen; never kept
	}
	return int64(len(b)) + int64(unsafe.Sizeof(*m)) +
		int64(len(m.NICs))*int64(unsafe.Sizeof(inventory.NIC{})) +
		int64(len(m.Disks))*int64(unsafe.Sizeof(inventory.Disk{}))
}

// page returns up to limit clients, sorted by MAC, that come after the
// MAC after (all from the start if empty), with Age filled in; how many
// clients there are in all; and whether more come after the page.
func (c *clients) page(after string, limit int) (page []status.Client, total int, more bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	macs := make([]string, 0, len(c.m))
	for mac := range c.m {
		if mac > after {
			macs = append(macs, mac)
		}
	}
	sort.Strings(macs)
	out := make([]status.Client, 0, min(limit, len(macs)))
	for _, mac := range macs[:min(limit, len(macs))] {
		x := c.m[mac].Client
		x.Age = now.Sub(x.LastSeen).Seconds()
		out = append(out, x)
	}
	return out, len(c.m), len(macs) > limit
}

// list returns every client, sorted by MAC, with Age filled in.
func (c *clients) list() []status.Client {
	all, _, _ := c.page("", math.MaxInt)
	return all
}

// get returns a copy of the client's record, or nil.
func (c *clients) get(mac string) *status.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.m[mac]
	if !ok {
		return nil
	}
	x := cl.Client
	return &x
}
