package mcastcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// OfferPath is where imgcast-server offers the test stream:
// POST /api/mcast-check?group=G&port=P&duration=D&rate=R, every
// parameter optional.
const OfferPath = "/api/mcast-check"

// Defaults and bounds of an offered stream. Anyone on the network can
// ask, so what one asker gets is bounded, and all streams together never
// exceed MaxTotalRate packets per second (about 60 Mbit/s).
const (
	DefaultPort     = 9998
	DefaultRate     = 100
	DefaultDuration = 5 * time.Second
	MinDuration     = time.Second
	MaxDuration     = 10 * time.Minute
	MaxTotalRate    = 5000
	// AskInterval is how often one address may ask.
	AskInterval = 2 * time.Second
	// maxStreams bounds the distinct (group, port) streams at once.
	maxStreams = 8
	// maxAskers bounds the addresses remembered for AskInterval.
	maxAskers = 4096
)

// Errors of Offer, for the HTTP status.
var (
	// ErrBadRequest: the request is outside the bounds (400).
	ErrBadRequest = errors.New("bad test stream request")
	// ErrBusy: the asker asked too recently, or the server sends as much
	// test traffic as it will (429).
	ErrBusy = errors.New("busy")
	// ErrNoServer: nothing at the address offers test streams (nothing
	// answers HTTP there, or a server without the endpoint).
	ErrNoServer = errors.New("no imgcast-server offers a test stream there")
)

// OfferRequest is what a client asks the server for; zero fields take
// the defaults.
type OfferRequest struct {
	// Group is the multicast group; invalid means the server's default,
	// the group udp-sender uses by default (see DefaultGroup).
	Group    netip.Addr
	Port     int
	Duration time.Duration
	Rate     int
}

// withDefaults fills in the zero fields but the group (which depends on
// the server's address).
func (r OfferRequest) withDefaults() OfferRequest {
	if r.Port == 0 {
		r.Port = DefaultPort
	}
	if r.Rate == 0 {
		r.Rate = DefaultRate
	}
	if r.Duration == 0 {
		r.Duration = DefaultDuration
	}
	return r
}

// Values encodes r as the query of a POST to OfferPath.
func (r OfferRequest) Values() url.Values {
	v := url.Values{}
	if r.Group.IsValid() {
		v.Set("group", r.Group.String())
	}
	if r.Port != 0 {
		v.Set("port", strconv.Itoa(r.Port))
	}
	if r.Duration != 0 {
		v.Set("duration", r.Duration.String())
	}
	if r.Rate != 0 {
		v.Set("rate", strconv.Itoa(r.Rate))
	}
	return v
}

// ParseOfferRequest decodes and checks a request's query parameters, and
// fills in the defaults (except the group, which depends on the server's
// address).
func ParseOfferRequest(v url.Values) (OfferRequest, error) {
	r := OfferRequest{}.withDefaults()
	bad := func(format string, args ...any) (OfferRequest, error) {
		return OfferRequest{}, fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, args...))
	}
	if s := v.Get("group"); s != "" {
		g, err := netip.ParseAddr(s)
		if err != nil || !validGroup(g) {
			return bad("group %q is not an IPv4 multicast group outside 224.0.0.0/24", s)
		}
		r.Group = g
	}
	if s := v.Get("port"); s != "" {
		p, err := strconv.Atoi(s)
		if err != nil || p < 1024 || p > 65535 {
			return bad("port %q is not a number in 1024..65535", s)
		}
		r.Port = p
	}
	if s := v.Get("duration"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			if n, nerr := strconv.ParseFloat(s, 64); nerr == nil {
				d, err = time.Duration(n*float64(time.Second)), nil
			}
		}
		if err != nil || d < MinDuration || d > MaxDuration {
			return bad("duration %q is not between %s and %s", s, MinDuration, MaxDuration)
		}
		r.Duration = d
	}
	if s := v.Get("rate"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxRate {
			return bad("rate %q is not a number of packets per second in 1..%d", s, MaxRate)
		}
		r.Rate = n
	}
	return r, nil
}

// validGroup accepts IPv4 multicast outside the link-local control block
// 224.0.0.0/24 (queries, reports, routing protocols).
func validGroup(g netip.Addr) bool {
	if !g.Is4() || !g.IsMulticast() {
		return false
	}
	a := g.As4()
	return a[0] != 224 || a[1] != 0 || a[2] != 0
}

// DefaultGroup is the group udp-sender sends to by default from ip: its
// low 27 bits under the prefix 232.0.0.0/5 (10.0.0.1 → 234.0.0.1).
func DefaultGroup(ip netip.Addr) netip.Addr {
	a := ip.As4()
	a[0] = a[0]&0x07 | 0xe8
	return netip.AddrFrom4(a)
}

// Offer is the server's answer: the stream the asker will receive.
type Offer struct {
	Stream uint64 `json:"stream,string"`
	Group  string `json:"group"`
	Port   int    `json:"port"`
	// Source is the address the stream is sent from.
	Source string `json:"source"`
	Rate   int    `json:"rate"`
	Size   int    `json:"size"`
	TTL    int    `json:"ttl"`
	// First is the first sequence number meant for the asker, Count how
	// many follow (the stream may be shared with other askers and run
	// longer).
	First uint64 `json:"first"`
	Count uint64 `json:"count"`
	// Unicast says whether the asker also gets a unicast copy.
	Unicast bool `json:"unicast"`
	// Note explains a missing unicast copy, or a rate other than asked.
	Note string `json:"note,omitempty"`
}

// Offerer runs the test streams imgcast-server offers. One stream per
// group and port runs at a time; later askers share it and get their own
// window of it, plus a unicast copy for comparison while the budget
// allows.
type Offerer struct {
	// TTL of the multicast (0: 1).
	TTL int
	// Reserved, if set, reports ports that must not be used (the ports of
	// an imaging session in progress).
	Reserved func(port int) bool
	Logf     func(format string, args ...any)

	mu      sync.Mutex
	streams map[streamKey]*Stream
	asked   map[netip.Addr]time.Time
	// now and start are replaced by tests.
	now   func() time.Time
	start func(StreamConfig) (*Stream, error)
}

type streamKey struct {
	group netip.Addr
	port  int
}

// Offer starts (or joins) the stream req asks for, for asker, sent from
// local (the server address the asker reached, whose interface carries
// the multicast). Errors wrap ErrBadRequest or ErrBusy.
func (o *Offerer) Offer(req OfferRequest, asker, local netip.Addr) (Offer, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.streams == nil {
		o.streams, o.asked = map[streamKey]*Stream{}, map[netip.Addr]time.Time{}
	}
	now := time.Now
	if o.now != nil {
		now = o.now
	}
	t := now()
	asker, local = asker.Unmap(), local.Unmap()
	if !asker.Is4() || !local.Is4() {
		return Offer{}, fmt.Errorf("%w: the test stream is IPv4 only (asked from %s to %s)", ErrBadRequest, asker, local)
	}
	req = req.withDefaults()
	if !req.Group.IsValid() {
		req.Group = DefaultGroup(local)
	}
	if !validGroup(req.Group) || req.Rate < 1 || req.Rate > MaxRate || req.Duration < MinDuration || req.Duration > MaxDuration {
		return Offer{}, fmt.Errorf("%w: %+v", ErrBadRequest, req)
	}
	if o.Reserved != nil && o.Reserved(req.Port) {
		return Offer{}, fmt.Errorf("%w: port %d is in use by the imaging session; ask for another port", ErrBadRequest, req.Port)
	}
	if last, ok := o.asked[asker]; ok && t.Sub(last) < AskInterval {
		return Offer{}, fmt.Errorf("%w: %s asked %s ago; ask at most every %s", ErrBusy, asker, t.Sub(last).Round(time.Millisecond), AskInterval)
	}
	o.forgetAskers(t)

	load := 0
	for k, s := range o.streams {
		select {
		case <-s.Done():
			delete(o.streams, k)
			continue
		default:
		}
		load += s.cfg.Rate * (1 + s.Copies())
	}
	key := streamKey{req.Group, req.Port}
	s := o.streams[key]
	if s != nil && !s.running() {
		delete(o.streams, key)
		s = nil
	}
	offer := Offer{Group: req.Group.String(), Port: req.Port}
	fresh := s == nil
	if fresh {
		if len(o.streams) >= maxStreams || load+2*req.Rate > MaxTotalRate {
			return Offer{}, fmt.Errorf("%w: the server already sends %d test packets/s (at most %d); try again in a few seconds", ErrBusy, load, MaxTotalRate)
		}
		start := StartStream
		if o.start != nil {
			start = o.start
		}
		// The asker's copy is there from the first packet on.
		cfg := StreamConfig{Group: req.Group, Port: req.Port, Source: local, TTL: o.TTL, Rate: req.Rate,
			Packets: packets(req.Rate, req.Duration), Interface: interfaceWith(local), Logf: o.Logf,
			Unicast: []netip.Addr{asker}}
		var err error
		if s, err = start(cfg); err != nil {
			return Offer{}, err
		}
		o.streams[key] = s
		load += req.Rate
		if o.Logf != nil {
			o.Logf("multicast check: %s asked for %s at %d packets/s to %s:%d", asker, req.Duration, req.Rate, req.Group, req.Port)
		}
	}
	rate := s.cfg.Rate
	if rate != req.Rate {
		offer.Note = fmt.Sprintf("a stream to this group and port already runs at %d packets/s", rate)
	}
	// The asker joined the group before asking, so it sees a new stream
	// from its start, and a running one from the packet after the one
	// being sent now.
	first := uint64(0)
	if !fresh {
		first = s.Next() + 1
	}
	count := packets(rate, req.Duration)
	s.Extend(first + count)
	if load+rate <= MaxTotalRate {
		s.AddCopy(asker, first, first+count)
		offer.Unicast = true
	} else {
		offer.Note = strings.TrimPrefix(offer.Note+"; no unicast copy: the server sends as much test traffic as it will", "; ")
	}
	o.asked[asker] = t
	offer.Stream, offer.Source = s.ID(), s.Source().Addr().String()
	offer.Rate, offer.Size, offer.TTL = rate, s.cfg.Size, s.cfg.TTL
	offer.First, offer.Count = first, count
	return offer, nil
}

// forgetAskers drops askers whose interval has passed, so the table stays
// small whoever asks.
func (o *Offerer) forgetAskers(now time.Time) {
	if len(o.asked) < maxAskers/2 {
		return
	}
	for a, at := range o.asked {
		if now.Sub(at) >= AskInterval || len(o.asked) >= maxAskers {
			delete(o.asked, a)
		}
	}
}

// Stop stops every stream.
func (o *Offerer) Stop() {
	o.mu.Lock()
	streams := o.streams
	o.streams = nil
	o.mu.Unlock()
	for _, s := range streams {
		s.Stop()
	}
}

func packets(rate int, d time.Duration) uint64 {
	return uint64(max(1, int64(rate)*d.Milliseconds()/1000))
}

// interfaceWith is the interface that has address a, or nil.
func interfaceWith(a netip.Addr) *net.Interface {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	for i := range ifs {
		addrs, err := ifs[i].Addrs()
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			if n, ok := ad.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a {
					return &ifs[i]
				}
			}
		}
	}
	return nil
}

// RequestOffer asks the imgcast-server at base (http://IP:PORT) for a test
// stream. An address where nothing listens, or a server without the
// endpoint, gives an error that matches ErrNoServer.
func RequestOffer(ctx context.Context, client *http.Client, base string, req OfferRequest) (Offer, error) {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	u := strings.TrimSuffix(base, "/") + OfferPath + "?" + req.Values().Encode()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return Offer{}, err
	}
	resp, err := client.Do(hr)
	if err != nil {
		if ctx.Err() != nil {
			return Offer{}, fmt.Errorf("ask %s for a test stream: %w", base, err)
		}
		// Nothing answers HTTP there (refused, or silently dropped): it
		// may be a machine that sends the stream by hand.
		return Offer{}, fmt.Errorf("%w: %s: %v", ErrNoServer, base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return Offer{}, fmt.Errorf("ask %s for a test stream: %w", base, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed:
		return Offer{}, fmt.Errorf("%w: %s answers %s", ErrNoServer, base, resp.Status)
	case resp.StatusCode == http.StatusTooManyRequests:
		return Offer{}, fmt.Errorf("%w: %s: %s", ErrBusy, base, strings.TrimSpace(string(body)))
	case resp.StatusCode != http.StatusOK:
		return Offer{}, fmt.Errorf("%s refused the test stream: %s: %s", base, resp.Status, strings.TrimSpace(string(body)))
	}
	var o Offer
	if err := json.Unmarshal(body, &o); err != nil {
		return Offer{}, fmt.Errorf("%s: bad answer to the test stream request: %w", base, err)
	}
	if o.Rate < 1 || o.Rate > MaxRate || o.Count == 0 || o.Count > uint64(MaxRate)*uint64(MaxDuration/time.Second) {
		return Offer{}, fmt.Errorf("%s: test stream offer out of bounds: rate %d, %d packets", base, o.Rate, o.Count)
	}
	return o, nil
}
