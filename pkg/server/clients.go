package server

import (
	"errors"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/imgcast/imgcast/pkg/status"
)

// maxClients bounds how many machines the server keeps records of, so a
// flood of made-up MACs cannot exhaust its memory.
const maxClients = 10000

// errTooManyClients is returned for a new MAC when maxClients are known.
var errTooManyClients = errors.New("the server already keeps the status of too many machines")

// clients keeps the latest report of every machine, by MAC.
type clients struct {
	mu  sync.Mutex
	m   map[string]*status.Client
	now func() time.Time
}

func newClients() *clients {
	return &clients{m: map[string]*status.Client{}, now: time.Now}
}

// update merges a validated report that came from remote (host:port). The
// newest report wins; the inventory, sent only with "ready", is kept until
// a new one comes. note, if not empty, replaces the server's remark about
// the client; a new ready report clears an old remark.
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
		if len(c.m) >= maxClients {
			return status.Client{}, errTooManyClients
		}
		cl = &status.Client{FirstSeen: now}
		c.m[rep.MAC] = cl
	}
	inv := cl.Inventory
	if rep.State == status.Ready {
		cl.Note = ""
	}
	cl.Report = rep
	if cl.Inventory == nil {
		cl.Inventory = inv
	}
	if cl.IP == "" {
		cl.IP = host
	}
	cl.Remote = host
	cl.LastSeen = now
	if note != "" {
		cl.Note = note
	}
	return *cl, nil
}

// list returns every client, sorted by MAC, with Age filled in.
func (c *clients) list() []status.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	out := make([]status.Client, 0, len(c.m))
	for _, cl := range c.m {
		x := *cl
		x.Age = now.Sub(cl.LastSeen).Seconds()
		out = append(out, x)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MAC < out[j].MAC })
	return out
}

// get returns a copy of the client's record, or nil.
func (c *clients) get(mac string) *status.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.m[mac]
	if !ok {
		return nil
	}
	x := *cl
	return &x
}
