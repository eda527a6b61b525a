package igmp

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

var (
	g1 = netip.MustParseAddr("234.1.2.3")
	g2 = netip.MustParseAddr("239.9.9.9")
)

func TestReportsAndLeaves(t *testing.T) {
	for _, tc := range []struct {
		name     string
		packets  []Packet
		wantDst  []netip.Addr
		wantType byte
		// wantRecord is the IGMPv3 group record type, 0 for v1/v2.
		wantRecord byte
	}{
		{"v1 report", Reports(V1, []netip.Addr{g1, g2}), []netip.Addr{g1, g2}, TypeV1Report, 0},
		{"v2 report", Reports(V2, []netip.Addr{g1, g2}), []netip.Addr{g1, g2}, TypeV2Report, 0},
		{"v3 report", Reports(V3, []netip.Addr{g1, g2}), []netip.Addr{V3Routers}, TypeV3Report, ModeIsExclude},
		{"v2 leave", Leaves(V2, []netip.Addr{g1, g2}), []netip.Addr{AllRouters, AllRouters}, TypeLeave, 0},
		{"v3 leave", Leaves(V3, []netip.Addr{g1, g2}), []netip.Addr{V3Routers}, TypeV3Report, ChangeToInclude},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var dsts, groups []netip.Addr
			for _, p := range tc.packets {
				dsts = append(dsts, p.Dst)
				m, err := Parse(p.Payload)
				if err != nil {
					t.Fatalf("our own message does not parse: %v (% x)", err, p.Payload)
				}
				if m.Type != tc.wantType {
					t.Errorf("type %#x, want %#x", m.Type, tc.wantType)
				}
				groups = append(groups, m.Groups...)
				if tc.wantRecord != 0 {
					for i := range m.Groups {
						if rt := p.Payload[8+8*i]; rt != tc.wantRecord {
							t.Errorf("record %d has type %d, want %d", i, rt, tc.wantRecord)
						}
					}
				} else if len(p.Payload) != 8 {
					t.Errorf("IGMPv1/v2 message of %d bytes", len(p.Payload))
				}
			}
			if !slices.Equal(dsts, tc.wantDst) {
				t.Errorf("sent to %v, want %v", dsts, tc.wantDst)
			}
			if !slices.Equal(groups, []netip.Addr{g1, g2}) {
				t.Errorf("groups %v", groups)
			}
		})
	}
	if ps := Leaves(V1, []netip.Addr{g1}); ps != nil {
		t.Errorf("IGMPv1 has no leave, got %v", ps)
	}
}

// An IGMPv2 report for 239.1.1.1 with its checksum worked out by hand:
// 0x1600 + 0xef01 + 0x0101 = 0x10602, folded 0x0603, complemented 0xf9fc.
// (The lab test compares our messages with the kernel's own.)
func TestV2ReportLayout(t *testing.T) {
	want := []byte{0x16, 0x00, 0xf9, 0xfc, 0xef, 0x01, 0x01, 0x01}
	got := Reports(V2, []netip.Addr{netip.MustParseAddr("239.1.1.1")})[0].Payload
	if !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
}

func TestManyGroupsSplitIntoFrames(t *testing.T) {
	var groups []netip.Addr
	for i := range 400 {
		groups = append(groups, netip.AddrFrom4([4]byte{239, 1, byte(i >> 8), byte(i)}))
	}
	ps := Reports(V3, groups)
	if len(ps) != 3 {
		t.Fatalf("%d reports for 400 groups, want 3", len(ps))
	}
	n := 0
	for _, p := range ps {
		if len(p.Payload)+24 > 1500 {
			t.Errorf("report of %d bytes does not fit a frame", len(p.Payload))
		}
		m, err := Parse(p.Payload)
		if err != nil {
			t.Fatal(err)
		}
		n += len(m.Groups)
	}
	if n != 400 {
		t.Errorf("%d groups reported, want 400", n)
	}
}

func TestQueries(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want Query
	}{
		{"v1 general", []byte{0x11, 0, 0xee, 0xff, 0, 0, 0, 0},
			Query{Version: V1, Group: netip.IPv4Unspecified()}},
		{"v2 general, 10 s", []byte{0x11, 100, 0xee, 0x9b, 0, 0, 0, 0},
			Query{Version: V2, Group: netip.IPv4Unspecified(), MaxResponse: 10 * time.Second}},
		{"v3 group-specific, interval 125 s, QRV 2", AppendQuery(nil, Query{Version: V3, Group: g1, MaxResponse: time.Second, Interval: 125 * time.Second, Robustness: 2}),
			Query{Version: V3, Group: g1, MaxResponse: time.Second, Interval: 125 * time.Second, Robustness: 2}},
		{"v3 interval in the float form", AppendQuery(nil, Query{Version: V3, Interval: 1000 * time.Second}),
			Query{Version: V3, Group: netip.IPv4Unspecified(), Interval: 992 * time.Second}},
		{"v2 by AppendQuery", AppendQuery(nil, Query{Version: V2, Group: g2, MaxResponse: time.Second}),
			Query{Version: V2, Group: g2, MaxResponse: time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if m.Type != TypeQuery || m.Query != tc.want {
				t.Errorf("got %+v, want %+v", m.Query, tc.want)
			}
			if m.Query.General() != (tc.want.Group == netip.IPv4Unspecified()) {
				t.Errorf("General() = %v", m.Query.General())
			}
		})
	}
}

func TestCodes(t *testing.T) {
	for _, v := range []int{0, 1, 127, 128, 136, 1000, 31744} {
		got := decodeCode(encodeCode(v))
		if got > v || (v < 128 && got != v) || float64(got) < float64(v)*0.93 {
			t.Errorf("%d encodes as %#x, which means %d", v, encodeCode(v), got)
		}
	}
	if got := decodeCode(0xff); got != 31744 {
		t.Errorf("0xff means %d, want 31744", got)
	}
}

func TestMalformed(t *testing.T) {
	bad := func(b []byte) []byte { c := slices.Clone(b); c[2] ^= 1; return c }
	v3 := AppendQuery(nil, Query{Version: V3, Group: g1})
	lying := slices.Clone(v3)
	lying[11] = 5 // claims 5 sources, carries none
	lying[2], lying[3] = 0, 0
	c := checksum(lying)
	lying[2], lying[3] = byte(c>>8), byte(c)
	report := Reports(V3, []netip.Addr{g1})[0].Payload
	cut := slices.Clone(report[:12])
	cut[2], cut[3] = 0, 0
	c = checksum(cut)
	cut[2], cut[3] = byte(c>>8), byte(c)
	for name, b := range map[string][]byte{
		"short":            {0x11, 0, 0},
		"bad checksum":     bad(report),
		"query of 10":      append(AppendQuery(nil, Query{Version: V2}), 0, 0),
		"sources overflow": lying,
		"record cut short": cut,
	} {
		if _, err := Parse(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
}

const procSample = `Idx	Device    : Count Querier	Group    Users Timer	Reporter
1	lo        :     1      V3
				010000E0     1 0:00000000		0
2	eth0      :     2      V2
				03020100     1 0:00000000		1
				010000E0     1 0:00000000		0
5	br-lab0   :     1      V1
				010000E0     1 0:00000000		0
`

func TestParseProcNetIGMP(t *testing.T) {
	got := ParseProcNetIGMP([]byte(procSample))
	want := map[string]Version{"lo": V3, "eth0": V2, "br-lab0": V1}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %v, want %v", k, got[k], v)
		}
	}
}

func TestReporterSendsEveryInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var sent [][]netip.Addr
		var logs []string
		fail := false
		closed := false
		r := NewReporter(5*time.Second, func(g []netip.Addr) error {
			mu.Lock()
			defer mu.Unlock()
			sent = append(sent, g)
			if fail {
				return errors.New("no route")
			}
			return nil
		}, func(f string, a ...any) { logs = append(logs, f) }, func() { closed = true })

		time.Sleep(6 * time.Second) // no groups yet: nothing sent
		r.Add(g1)
		r.Add(g1)
		time.Sleep(5 * time.Second)
		r.Add(g2)
		time.Sleep(5 * time.Second)
		r.Remove(g1)
		mu.Lock()
		fail = true
		mu.Unlock()
		time.Sleep(10 * time.Second) // two failures, one log line
		mu.Lock()
		fail = false
		mu.Unlock()
		time.Sleep(5 * time.Second)
		r.Close()
		synctest.Wait()

		want := [][]netip.Addr{{g1}, {g1, g2}, {g2}, {g2}, {g2}}
		if len(sent) != len(want) {
			t.Fatalf("sent %v, want %v", sent, want)
		}
		for i := range want {
			if !slices.Equal(sent[i], want[i]) {
				t.Errorf("report %d: %v, want %v", i, sent[i], want[i])
			}
		}
		if len(logs) != 2 {
			t.Errorf("logged %q, want the first failure and the recovery", logs)
		}
		if !closed {
			t.Error("onClose was not called")
		}
	})
}

func FuzzParse(f *testing.F) {
	f.Add(AppendQuery(nil, Query{Version: V3, Group: g1, Interval: 125 * time.Second}))
	f.Add(Reports(V3, []netip.Addr{g1, g2})[0].Payload)
	f.Add(Reports(V2, []netip.Addr{g1})[0].Payload)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		if len(m.Groups) > maxV3Records {
			t.Fatalf("%d groups", len(m.Groups))
		}
		if m.Type == TypeQuery && (m.Query.Version < V1 || m.Query.Version > V3) {
			t.Fatalf("query version %d", m.Query.Version)
		}
	})
}

func FuzzParseProcNetIGMP(f *testing.F) {
	f.Add([]byte(procSample))
	f.Fuzz(func(t *testing.T, b []byte) {
		for name, v := range ParseProcNetIGMP(b) {
			if name == "" || v < V1 || v > V3 {
				t.Fatalf("%q: %v", name, v)
			}
		}
	})
}
