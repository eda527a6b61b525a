package mcastcheck

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/imgcast/imgcast/pkg/igmp"
)

func TestPacketRoundTrip(t *testing.T) {
	p := Packet{Kind: KindUnicast, Stream: 0xdeadbeef01, Seq: 12345, Sent: time.Unix(1700000000, 123456789), Rate: 250, End: 99999}
	b := p.Append(nil, DefaultSize)
	if len(b) != DefaultSize {
		t.Fatalf("%d bytes, want %d", len(b), DefaultSize)
	}
	got, err := ParsePacket(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Sent.Equal(p.Sent) {
		t.Errorf("sent %v, want %v", got.Sent, p.Sent)
	}
	got.Sent = p.Sent
	if got != p {
		t.Errorf("got %+v, want %+v", got, p)
	}
	for name, b := range map[string][]byte{
		"short":        b[:headerLen-1],
		"other magic":  append([]byte("XMCK"), b[4:]...),
		"version 2":    append(append([]byte("IMCK"), 2), b[5:]...),
		"unknown kind": append(append([]byte("IMCK"), 1, 9), b[6:]...),
	} {
		if _, err := ParsePacket(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func FuzzParsePacket(f *testing.F) {
	f.Add(Packet{Kind: KindMulticast, Seq: 3, Rate: 100}.Append(nil, MinSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePacket(b)
		if err != nil {
			return
		}
		if p.Kind != KindMulticast && p.Kind != KindUnicast {
			t.Fatalf("kind %d", p.Kind)
		}
		// Whatever the packet says, counting it stays in bounds.
		tl := newOpenTally()
		tl.add(p, len(b), time.Now())
		tl.stats(time.Now(), time.Now().Add(time.Second))
		w := newTally(p.Seq/2, p.End, int(p.Rate%MaxRate)+1, time.Now())
		w.add(p, len(b), time.Now())
	})
}

// feed counts the sequence numbers seqs, arriving 10 ms apart from at.
func feed(tl *tally, at time.Time, kind Kind, seqs ...uint64) time.Time {
	for _, s := range seqs {
		tl.add(Packet{Kind: kind, Stream: 1, Seq: s, Rate: 100}, 1000, at)
		at = at.Add(10 * time.Millisecond)
	}
	return at
}

func seqRangeOf(from, to uint64, skip ...uint64) []uint64 {
	var out []uint64
next:
	for s := from; s < to; s++ {
		for _, k := range skip {
			if s == k {
				continue next
			}
		}
		out = append(out, s)
	}
	return out
}

func TestTally(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name string
		// window: first, count (count 0: an open tally)
		first, count uint64
		seqs         []uint64
		listenFor    time.Duration
		want         Stats
	}{
		{"all arrive", 0, 100, seqRangeOf(0, 100), 1500 * time.Millisecond,
			Stats{Packets: 100, Expected: 100}},
		{"five lost", 0, 100, seqRangeOf(0, 100, 3, 20, 50, 51, 98), 1500 * time.Millisecond,
			Stats{Packets: 95, Expected: 100, LossPercent: 5}},
		{"duplicates and reordering", 0, 10, []uint64{0, 1, 1, 3, 2, 4, 5, 6, 7, 8, 9, 9}, 1500 * time.Millisecond,
			Stats{Packets: 10, Expected: 10, Duplicates: 2, Reordered: 1}},
		{"outside the window is ignored", 10, 10, append(seqRangeOf(0, 30), 1<<40), 1500 * time.Millisecond,
			Stats{Packets: 10, Expected: 10}},
		{"stopped half way", 0, 300, seqRangeOf(0, 150), 3500 * time.Millisecond,
			Stats{Packets: 150, Expected: 300, LossPercent: 50, StoppedAfter: 1.49}},
		{"open: from the first seen on", 0, 0, seqRangeOf(500, 600), 1100 * time.Millisecond,
			Stats{Packets: 100, Expected: 100}},
		{"open: stopped, then counted by the schedule", 0, 0, seqRangeOf(500, 550), 3 * time.Second,
			Stats{Packets: 50, Expected: 200, LossPercent: 75, StoppedAfter: 0.49}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tl := newOpenTally()
			if tc.count > 0 {
				tl = newTally(tc.first, tc.count, 100, t0)
			}
			feed(tl, t0, KindMulticast, tc.seqs...)
			got := tl.stats(t0, t0.Add(tc.listenFor))
			got.Rate, got.FirstPacket = 0, 0
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestTallySeconds(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tl := newTally(0, 250, 100, t0)
	sec := func(k int) time.Time { return t0.Add(time.Duration(k) * time.Second) }
	feed(tl, t0, KindMulticast, seqRangeOf(0, 100)...)
	if s := tl.second(sec(0), sec(1)); s.Packets != 100 || s.Expected != 100 || s.Loss() != 0 || s.Bytes != 100*1000 {
		t.Errorf("first second: %+v", s)
	}
	feed(tl, sec(1), KindMulticast, seqRangeOf(100, 140)...)
	if s := tl.second(sec(1), sec(2)); s.Packets != 40 || s.Expected != 100 || s.Loss() != 60 {
		t.Errorf("second second: %+v", s)
	}
	if s := tl.second(sec(2), sec(3)); s.Packets != 0 || s.Expected != 50 || s.Loss() != 100 {
		t.Errorf("the window ends at 250 packets: %+v", s)
	}
	if s := tl.second(sec(3), sec(4)); s.Expected != 0 || s.Loss() != 0 {
		t.Errorf("after the window: %+v", s)
	}
}

func TestJudge(t *testing.T) {
	fine := Stats{Packets: 500, Expected: 500}
	q := Querier{Checked: true, Seen: true, Address: "10.0.0.1", Version: 2}
	for _, tc := range []struct {
		name      string
		m         Stats
		u         *Stats
		q         Querier
		want      []string // in the verdict, in this order
		wantOK    bool
		forbidden string
	}{
		{"ok", fine, &fine, q, []string{"ok"}, true, ""},
		{"ok without root", fine, &fine, Querier{Note: "needs root"}, []string{"ok"}, true, ""},
		{"no querier", fine, &fine, Querier{Checked: true}, []string{"PROBLEM — ", "no IGMP querier", "mcast_querier 1"}, false, "blocked"},
		{"blocked", Stats{Expected: 500}, &fine, q, []string{"multicast is blocked", "firewall"}, false, "querier"},
		{"blocked and no querier", Stats{Expected: 500}, &fine, Querier{Checked: true},
			[]string{"multicast is blocked", "; no IGMP querier"}, false, ""},
		{"nothing at all", Stats{Expected: 500}, &Stats{Expected: 500}, q, []string{"no test packets arrived at all", "UDP port 9998"}, false, "blocked"},
		{"nothing, no unicast copy", Stats{}, nil, q, []string{"no multicast test packets arrived on 234.0.0.1:9998"}, false, ""},
		{"stopped", Stats{Packets: 300, Expected: 500, LossPercent: 40, StoppedAfter: 3}, &fine, q,
			[]string{"multicast stopped after 3.0 s while unicast went on", "IGMP snooping without a querier"}, false, "lost"},
		{"both stopped", Stats{Packets: 300, Expected: 500, StoppedAfter: 3}, &Stats{Packets: 300, Expected: 500, StoppedAfter: 3}, q,
			[]string{"the test stream stopped after 3.0 s"}, false, ""},
		{"link loss", Stats{Packets: 475, Expected: 500, LossPercent: 5}, &Stats{Packets: 475, Expected: 500, LossPercent: 5}, q,
			[]string{"5.0% of multicast and 5.0% of unicast", "the link itself"}, false, ""},
		{"multicast-only loss", Stats{Packets: 475, Expected: 500, LossPercent: 5}, &fine, q,
			[]string{"5.0% of multicast packets were lost but 0.0% of unicast", "storm control"}, false, ""},
		{"loss under the limit", Stats{Packets: 498, Expected: 500, LossPercent: 0.4}, &fine, q, []string{"ok"}, true, ""},
		{"duplicates", Stats{Packets: 500, Expected: 500, Duplicates: 7}, &fine, q, []string{"7 multicast packets arrived twice"}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Result{Group: "234.0.0.1", Port: 9998, Multicast: tc.m, Unicast: tc.u, Querier: tc.q}
			judge(&r, 1, "eth0")
			if r.OK != tc.wantOK {
				t.Errorf("OK = %v: %s", r.OK, r.Verdict)
			}
			rest := r.Verdict
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("verdict %q lacks %q (in order)", r.Verdict, w)
				}
				rest = rest[i+len(w):]
			}
			if tc.forbidden != "" && strings.Contains(r.Verdict, tc.forbidden) {
				t.Errorf("verdict %q mentions %q", r.Verdict, tc.forbidden)
			}
			if err := r.Validate(); err != nil {
				t.Errorf("our own result does not validate: %v", err)
			}
		})
	}
}

func TestResultValidate(t *testing.T) {
	good := Result{OK: true, Verdict: "ok", Group: "234.0.0.1", Port: 9998, Multicast: Stats{Packets: 1, Expected: 1, Rate: 1e6}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*Result){
		"ok with a problem":   func(r *Result) { r.Verdict = "PROBLEM — x" },
		"problem said ok":     func(r *Result) { r.OK = false },
		"long verdict":        func(r *Result) { r.OK, r.Verdict = false, strings.Repeat("x", 5000) },
		"bad group":           func(r *Result) { r.Group = "<script>" },
		"negative packets":    func(r *Result) { r.Multicast.Packets = -1 },
		"loss above 100":      func(r *Result) { r.Multicast.LossPercent = 101 },
		"NaN rate":            func(r *Result) { r.Unicast = &Stats{Rate: nanValue()} },
		"IGMP version 7":      func(r *Result) { r.Querier.Version = 7 },
		"bad querier address": func(r *Result) { r.Querier.Address = "x" },
	} {
		r := good
		mutate(&r)
		if err := r.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func nanValue() float64 { var z float64; return z / z }

func TestQuerierInterval(t *testing.T) {
	w := &querierWatch{general: map[netip.Addr]time.Time{}}
	src := netip.MustParseAddr("10.0.0.1")
	t0 := time.Unix(100, 0)
	w.saw(igmp.Query{Version: igmp.V2, Group: netip.MustParseAddr("234.0.0.1")}, src, t0)
	if w.q.Interval != 0 || !w.q.Seen || w.q.Version != 2 {
		t.Fatalf("after a group query: %+v", w.q)
	}
	w.saw(igmp.Query{Version: igmp.V2, Group: netip.IPv4Unspecified()}, src, t0.Add(time.Second))
	w.saw(igmp.Query{Version: igmp.V2, Group: netip.IPv4Unspecified()}, src, t0.Add(1200*time.Millisecond)) // a burst
	if w.q.Interval != 0 {
		t.Fatalf("interval from a burst: %+v", w.q)
	}
	w.saw(igmp.Query{Version: igmp.V2, Group: netip.IPv4Unspecified()}, src, t0.Add(126*time.Second))
	if w.q.Interval != 124.8 {
		t.Errorf("measured interval %v, want 124.8", w.q.Interval)
	}
	w.saw(igmp.Query{Version: igmp.V3, Group: netip.IPv4Unspecified(), Interval: 60 * time.Second}, src, t0.Add(127*time.Second))
	if w.q.Interval != 60 || w.q.Version != 3 {
		t.Errorf("IGMPv3's own interval: %+v", w.q)
	}
}

func TestParseOfferRequest(t *testing.T) {
	r, err := ParseOfferRequest(url.Values{})
	if err != nil || r != (OfferRequest{Port: DefaultPort, Duration: DefaultDuration, Rate: DefaultRate}) {
		t.Fatalf("defaults: %+v %v", r, err)
	}
	r, err = ParseOfferRequest(OfferRequest{Group: netip.MustParseAddr("239.1.2.3"), Port: 5000, Duration: 20 * time.Second, Rate: 500}.Values())
	if err != nil || r.Group.String() != "239.1.2.3" || r.Port != 5000 || r.Duration != 20*time.Second || r.Rate != 500 {
		t.Fatalf("round trip: %+v %v", r, err)
	}
	if r, err := ParseOfferRequest(url.Values{"duration": {"12"}}); err != nil || r.Duration != 12*time.Second {
		t.Errorf("duration in seconds: %+v %v", r, err)
	}
	for _, v := range []url.Values{
		{"group": {"10.0.0.1"}}, {"group": {"224.0.0.1"}}, {"group": {"x"}},
		{"port": {"80"}}, {"port": {"70000"}},
		{"duration": {"1h"}}, {"duration": {"10ms"}}, {"duration": {"soon"}},
		{"rate": {"0"}}, {"rate": {"100000"}},
	} {
		if _, err := ParseOfferRequest(v); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%v: got %v, want ErrBadRequest", v, err)
		}
	}
}

func TestDefaultGroupIsUdpSenders(t *testing.T) {
	for ip, want := range map[string]string{"10.99.0.1": "234.99.0.1", "192.168.1.5": "232.168.1.5", "127.0.0.1": "239.0.0.1"} {
		if got := DefaultGroup(netip.MustParseAddr(ip)).String(); got != want {
			t.Errorf("%s: %s, want %s", ip, got, want)
		}
	}
}

// offerer returns an Offerer whose streams send nothing, on a clock the
// test moves.
func offerer(now *time.Time) (*Offerer, *[]*Stream) {
	var started []*Stream
	o := &Offerer{now: func() time.Time { return *now }, start: func(cfg StreamConfig) (*Stream, error) {
		cfg, err := cfg.withDefaults()
		if err != nil {
			return nil, err
		}
		s := newStream(cfg)
		go func() { <-s.stop; close(s.done) }()
		started = append(started, s)
		return s, nil
	}}
	return o, &started
}

func TestOffererSharesAndBounds(t *testing.T) {
	now := time.Unix(1000, 0)
	o, started := offerer(&now)
	defer o.Stop()
	server := netip.MustParseAddr("10.0.0.1")
	asker := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, 1, byte(i)}) }

	first, err := o.Offer(OfferRequest{Rate: 1000, Duration: 10 * time.Second}, asker(1), server)
	if err != nil {
		t.Fatal(err)
	}
	if first.Group != "234.0.0.1" || first.Port != DefaultPort || first.First != 0 || first.Count != 10000 || !first.Unicast {
		t.Errorf("first offer %+v", first)
	}
	if _, err := o.Offer(OfferRequest{}, asker(1), server); !errors.Is(err, ErrBusy) {
		t.Errorf("asking again at once: %v, want ErrBusy", err)
	}
	(*started)[0].mu.Lock()
	(*started)[0].next = 500
	(*started)[0].mu.Unlock()
	second, err := o.Offer(OfferRequest{Rate: 100, Duration: 20 * time.Second}, asker(2), server)
	if err != nil {
		t.Fatal(err)
	}
	if len(*started) != 1 || second.Stream != first.Stream || second.Rate != 1000 || second.First != 501 || second.Count != 20000 || second.Note == "" {
		t.Errorf("second asker did not share the stream: %+v", second)
	}
	if end := (*started)[0].end; end != 20501 {
		t.Errorf("stream not extended for the second asker: ends at %d", end)
	}
	// Unicast copies stop at the budget; the multicast is still shared.
	var last Offer
	for i := 3; i < 10; i++ {
		if last, err = o.Offer(OfferRequest{}, asker(i), server); err != nil {
			t.Fatal(err)
		}
	}
	if last.Unicast || !strings.Contains(last.Note, "no unicast copy") {
		t.Errorf("beyond the budget: %+v", last)
	}
	// Another stream would exceed the budget.
	if _, err := o.Offer(OfferRequest{Port: 9000}, asker(20), server); !errors.Is(err, ErrBusy) {
		t.Errorf("a second stream beyond the budget: %v", err)
	}
	now = now.Add(AskInterval)
	if _, err := o.Offer(OfferRequest{}, asker(1), server); err != nil {
		t.Errorf("asking again after the interval: %v", err)
	}
	o.Reserved = func(p int) bool { return p == 9000 }
	if _, err := o.Offer(OfferRequest{Port: 9000}, asker(30), server); !errors.Is(err, ErrBadRequest) {
		t.Errorf("a session port: %v, want ErrBadRequest", err)
	}
	if _, err := o.Offer(OfferRequest{}, netip.MustParseAddr("fe80::1"), server); !errors.Is(err, ErrBadRequest) {
		t.Errorf("IPv6 asker: %v", err)
	}
}

func TestOffererForgetsAskers(t *testing.T) {
	now := time.Unix(1000, 0)
	o, _ := offerer(&now)
	defer o.Stop()
	for i := range 3 * maxAskers {
		o.mu.Lock()
		if o.asked == nil {
			o.asked = map[netip.Addr]time.Time{}
		}
		o.asked[netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})] = now
		o.forgetAskers(now)
		if len(o.asked) > maxAskers {
			t.Fatalf("%d askers remembered", len(o.asked))
		}
		o.mu.Unlock()
	}
}

func TestRequestOffer(t *testing.T) {
	want := Offer{Stream: 1<<63 + 5, Group: "234.0.0.1", Port: 9998, Source: "10.0.0.1", Rate: 100, Size: 1472, TTL: 1, Count: 500, Unicast: true}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+OfferPath, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("port") {
		case "1":
			http.Error(w, "slow down", http.StatusTooManyRequests)
		case "2":
			http.Error(w, "no", http.StatusBadRequest)
		default:
			json.NewEncoder(w).Encode(want)
		}
	})
	srv := httptest.NewServer(mux) // loopback only
	defer srv.Close()
	ctx := context.Background()
	got, err := RequestOffer(ctx, nil, srv.URL, OfferRequest{})
	if err != nil || got != want {
		t.Fatalf("got %+v %v, want %+v", got, err, want)
	}
	if _, err := RequestOffer(ctx, nil, srv.URL, OfferRequest{Port: 1}); !errors.Is(err, ErrBusy) {
		t.Errorf("429: %v", err)
	}
	if _, err := RequestOffer(ctx, nil, srv.URL, OfferRequest{Port: 2}); err == nil || errors.Is(err, ErrNoServer) || !strings.Contains(err.Error(), "no") {
		t.Errorf("400: %v", err)
	}
	if _, err := RequestOffer(ctx, nil, srv.URL+"/elsewhere", OfferRequest{}); !errors.Is(err, ErrNoServer) {
		t.Errorf("404: %v", err)
	}
	closed := httptest.NewServer(mux)
	closed.Close()
	if _, err := RequestOffer(ctx, nil, closed.URL, OfferRequest{}); !errors.Is(err, ErrNoServer) {
		t.Errorf("nothing listening: %v", err)
	}
}
