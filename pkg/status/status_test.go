package status

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/imgcast/imgcast/pkg/inventory"
)

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		name    string
		r       Report
		wantErr string
		wantMAC string
	}{
		{name: "minimal", r: Report{MAC: "52:54:00:AB:CD:EF", State: Ready}, wantMAC: "52:54:00:ab:cd:ef"},
		{name: "dashes", r: Report{MAC: "52-54-00-ab-cd-ef", State: Done}, wantMAC: "52:54:00:ab:cd:ef"},
		{name: "full", r: Report{MAC: mac, IP: "10.0.0.9", State: Receiving, Partition: 2, Partitions: 2, Bytes: 5, Total: 10, WireRate: 1e8, DiskRate: 9e7}, wantMAC: mac},
		{name: "no mac", r: Report{State: Ready}, wantErr: "not an Ethernet MAC"},
		{name: "infiniband mac", r: Report{MAC: "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", State: Ready}, wantErr: "not an Ethernet MAC"},
		{name: "bad state", r: Report{MAC: mac, State: "exploded"}, wantErr: `state "exploded"`},
		{name: "empty state", r: Report{MAC: mac}, wantErr: `state ""`},
		{name: "bad ip", r: Report{MAC: mac, State: Ready, IP: "10.0.0"}, wantErr: "not an IP"},
		{name: "negative bytes", r: Report{MAC: mac, State: Receiving, Bytes: -1}, wantErr: "negative"},
		{name: "NaN rate", r: Report{MAC: mac, State: Receiving, WireRate: math.NaN()}, wantErr: "not a rate"},
		{name: "negative rate", r: Report{MAC: mac, State: Receiving, DiskRate: -5}, wantErr: "not a rate"},
		{name: "long hostname", r: Report{MAC: mac, State: Ready, Hostname: strings.Repeat("h", 300)}, wantErr: "hostname"},
		{name: "too many disks", r: Report{MAC: mac, State: Ready, Inventory: &inventory.Machine{Disks: make([]inventory.Disk, MaxDisks+1)}}, wantErr: "disks listed"},
		{name: "too many NICs", r: Report{MAC: mac, State: Ready, Inventory: &inventory.Machine{NICs: make([]inventory.NIC, MaxNICs+1)}}, wantErr: "NICs listed"},
		{name: "most disks", r: Report{MAC: mac, State: Ready, Inventory: &inventory.Machine{Disks: make([]inventory.Disk, MaxDisks)}}, wantMAC: mac},
		{name: "mcast check", r: Report{MAC: mac, State: Ready, MulticastCheck: &MulticastCheck{Verdict: "ok", LossPercent: 0.5, Querier: "10.0.0.1", QuerierVersion: 2, QueryInterval: 125}}, wantMAC: mac},
		{name: "mcast check without verdict", r: Report{MAC: mac, State: Ready, MulticastCheck: &MulticastCheck{}}, wantErr: "no verdict"},
		{name: "mcast check bad loss", r: Report{MAC: mac, State: Ready, MulticastCheck: &MulticastCheck{Verdict: "ok", LossPercent: 101}}, wantErr: "percentage"},
		{name: "mcast check NaN loss", r: Report{MAC: mac, State: Ready, MulticastCheck: &MulticastCheck{Verdict: "ok", LossPercent: math.NaN()}}, wantErr: "percentage"},
		{name: "mcast check bad querier", r: Report{MAC: mac, State: Ready, MulticastCheck: &MulticastCheck{Verdict: "ok", Querier: "router"}}, wantErr: "querier"},
		{name: "mcast check bad rate", r: Report{MAC: mac, State: Ready, MulticastCheck: &MulticastCheck{Verdict: "ok", MulticastRate: math.Inf(1)}}, wantErr: "rate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.r
			err := r.Validate()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Validate = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.MAC != tt.wantMAC {
				t.Errorf("MAC = %q, want %q", r.MAC, tt.wantMAC)
			}
		})
	}
}

func TestValidateCutsLongErrors(t *testing.T) {
	r := Report{MAC: mac, State: Failed, Error: strings.Repeat("e", 10000)}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(r.Error) > MaxErrorLen+4 {
		t.Errorf("error kept at %d bytes", len(r.Error))
	}
}

// Every string a client sends is cut to a bound, at a character boundary.
func TestValidateCutsLongStrings(t *testing.T) {
	long := strings.Repeat("é", 10000)
	r := Report{MAC: mac, State: Ready, Error: long,
		Inventory: &inventory.Machine{
			NICs:  []inventory.NIC{{Name: long, MAC: long, Driver: long, PCI: long}},
			Disks: []inventory.Disk{{Name: long, Path: long, Model: long, Serial: long}},
			DMI:   inventory.DMI{Vendor: long, Product: long, Serial: long, UUID: long},
		},
		MulticastCheck: &MulticastCheck{Verdict: "PROBLEM — " + long},
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	inv := r.Inventory
	for name, s := range map[string]string{
		"nic name": inv.NICs[0].Name, "nic mac": inv.NICs[0].MAC, "driver": inv.NICs[0].Driver, "pci": inv.NICs[0].PCI,
		"disk name": inv.Disks[0].Name, "path": inv.Disks[0].Path, "model": inv.Disks[0].Model, "serial": inv.Disks[0].Serial,
		"vendor": inv.DMI.Vendor, "product": inv.DMI.Product, "dmi serial": inv.DMI.Serial, "uuid": inv.DMI.UUID,
	} {
		if len(s) > MaxFieldLen+len("…") || !utf8.ValidString(s) {
			t.Errorf("%s kept at %d bytes (valid UTF-8: %v)", name, len(s), utf8.ValidString(s))
		}
	}
	if v := r.MulticastCheck.Verdict; len(v) > MaxVerdictLen+len("…") || !strings.HasPrefix(v, "PROBLEM — ") {
		t.Errorf("verdict kept at %d bytes", len(v))
	}
	if len(r.Error) > MaxErrorLen+len("…") || !utf8.ValidString(r.Error) {
		t.Errorf("error kept at %d bytes", len(r.Error))
	}
}

func TestStates(t *testing.T) {
	for _, s := range states {
		if !s.Valid() {
			t.Errorf("%s not valid", s)
		}
		if s.Terminal() != (s == Done || s == Failed) {
			t.Errorf("%s.Terminal() = %v", s, s.Terminal())
		}
	}
}

func TestReportJSON(t *testing.T) {
	// The field names are the protocol: clients and servers of different
	// versions must agree on them.
	r := Report{MAC: mac, IP: "10.0.0.9", State: Receiving, Partition: 1, Partitions: 2, Bytes: 3, Total: 4,
		WireRate: 5, DiskRate: 6, Error: "e", Seq: 7, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Inventory: &inventory.Machine{MemoryBytes: 1}, MulticastCheck: &MulticastCheck{Verdict: "ok", LossPercent: 1.5, Querier: "10.0.0.1"}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"mac":`, `"ip":`, `"state":"receiving"`, `"partition":1`, `"partitions":2`, `"bytes":3`, `"total":4`,
		`"wire_rate":5`, `"disk_rate":6`, `"error":"e"`, `"seq":7`, `"time":"2026-01-02T03:04:05Z"`, `"inventory":{`, `"memory_bytes":1`,
		`"mcast_check":{"verdict":"ok","loss_percent":1.5,"querier":"10.0.0.1"}`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("JSON %s lacks %s", b, key)
		}
	}
}

func TestCanJoin(t *testing.T) {
	for _, tt := range []struct {
		s    Session
		ok   bool
		want string
	}{
		{s: Session{Phase: Waiting, Joinable: true}, ok: true},
		{s: Session{Phase: Unicast}, ok: true},
		{s: Session{Phase: Sending, Message: "partition 1 of 2 is being sent since 10:02:03"}, want: "booted too late"},
		{s: Session{Phase: Finished}, want: "start a new session"},
		{s: Session{Phase: Aborted, Message: "udp-sender for d1p1.img failed"}, want: "udp-sender for d1p1.img failed"},
	} {
		err := tt.s.CanJoin()
		if tt.ok {
			if err != nil {
				t.Errorf("%s: CanJoin = %v", tt.s.Phase, err)
			}
			continue
		}
		if !errors.Is(err, ErrNotJoinable) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: CanJoin = %v, want ErrNotJoinable mentioning %q", tt.s.Phase, err, tt.want)
		}
	}
}

func TestSessionURL(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"http://10.0.0.1:8080/api/status", "http://10.0.0.1:8080/api/session"},
		{"https://img.example/x/y?z=1", "https://img.example/api/session"},
		{"10.0.0.1:8080/api/status", ""},
		{"ftp://h/x", ""},
	} {
		got, err := SessionURL(tt.in)
		if (err != nil) != (tt.want == "") || got != tt.want {
			t.Errorf("SessionURL(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestFetchSession(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/session", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(Session{Image: "default", Phase: Sending, Streams: []Stream{{ID: "d1p1.img", Port: 9000}}})
	})
	mux.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>")) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx := context.Background()
	s, err := FetchSession(ctx, srv.Client(), srv.URL+"/api/session")
	if err != nil || s.Phase != Sending || s.Streams[0].ID != "d1p1.img" || s.CanJoin() == nil {
		t.Fatalf("FetchSession = %+v, %v", s, err)
	}
	if _, err := FetchSession(ctx, srv.Client(), srv.URL+"/nothing"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("404: err = %v", err)
	}
	if _, err := FetchSession(ctx, srv.Client(), srv.URL+"/broken"); err == nil || !strings.Contains(err.Error(), "not a session") {
		t.Errorf("bad JSON: err = %v", err)
	}
}

// sessionScript is a session endpoint that answers each request with the
// next of its answers (the last one repeats); a nil answer is a 500.
type sessionScript struct {
	mu      sync.Mutex
	answers []*Session
	queries []url.Values
	at      []time.Time
}

func (s *sessionScript) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	n := len(s.queries)
	s.queries = append(s.queries, r.URL.Query())
	s.at = append(s.at, time.Now())
	a := s.answers[min(n, len(s.answers)-1)]
	s.mu.Unlock()
	if a == nil {
		http.Error(w, "restarting", http.StatusInternalServerError)
		return
	}
	json.NewEncoder(w).Encode(a)
}

func queuedAs(msg string) *Session {
	return &Session{ID: 2, Rolling: true, Phase: Queued, PortBase: 9004, Message: msg}
}

var joinable2 = &Session{ID: 2, Rolling: true, Phase: Waiting, Joinable: true, PortBase: 9004}

func TestWaitForSession(t *testing.T) {
	for _, tt := range []struct {
		name      string
		answers   []*Session
		timeout   time.Duration // the HTTP client's
		cancelAt  time.Duration // cancel the context then (0: never)
		want      *Session
		wantErr   string
		wantSaid  int // "waiting for" lines
		wantAsked int
		wantWait  string // the wait parameter after the first request
	}{
		{name: "joinable at once", answers: []*Session{joinable2}, want: joinable2, wantAsked: 1},
		{name: "unicast", answers: []*Session{{Phase: Unicast}}, want: &Session{Phase: Unicast}, wantAsked: 1},
		{name: "queued, then opens", answers: []*Session{queuedAs("a"), queuedAs("a"), queuedAs("b"), joinable2},
			want: joinable2, wantSaid: 2, wantAsked: 4, wantWait: "25"},
		{name: "wait fits the client's timeout", answers: []*Session{queuedAs("a"), joinable2}, timeout: 10 * time.Second,
			want: joinable2, wantSaid: 1, wantAsked: 2, wantWait: "5"},
		{name: "too late, no rolling", answers: []*Session{{ID: 1, Phase: Sending, Message: "sending"}}, wantErr: "booted too late", wantAsked: 1},
		{name: "first request fails", answers: []*Session{nil}, wantErr: "500", wantAsked: 1},
		{name: "server goes away while waiting", answers: []*Session{queuedAs("a"), nil},
			wantErr: "waiting for multicast session 2: ", wantSaid: 1, wantAsked: 13, wantWait: "25"},
		{name: "server back after a failure", answers: []*Session{queuedAs("a"), nil, joinable2},
			want: joinable2, wantSaid: 1, wantAsked: 3, wantWait: "25"},
		{name: "cancelled while waiting", answers: []*Session{queuedAs("a")}, cancelAt: 9500 * time.Millisecond,
			wantErr: "waiting for multicast session 2: context canceled", wantSaid: 1, wantAsked: 10, wantWait: "25"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := &sessionScript{answers: tt.answers}
				client := inMemory(srv)
				client.Timeout = tt.timeout
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				if tt.cancelAt > 0 {
					time.AfterFunc(tt.cancelAt, cancel)
				}
				l := &logs{}
				got, err := WaitForSession(ctx, client, "http://server.invalid/api/session", mac, l.logf)
				if tt.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
						t.Errorf("err = %v, want %q", err, tt.wantErr)
					}
				} else if err != nil || got.ID != tt.want.ID || got.Phase != tt.want.Phase || got.PortBase != tt.want.PortBase {
					t.Errorf("WaitForSession = %+v, %v; want %+v", got, err, tt.want)
				}
				if n := strings.Count(l.String(), "waiting for session 2 (port base 9004): "); n != tt.wantSaid {
					t.Errorf("said %d times what it waits for, want %d:\n%s", n, tt.wantSaid, l)
				}
				if strings.Count(l.String(), "cannot ask") > 1 {
					t.Errorf("an unreachable server was logged more than once:\n%s", l)
				}
				if len(srv.queries) != tt.wantAsked {
					t.Errorf("asked %d times, want %d", len(srv.queries), tt.wantAsked)
				}
				for i, q := range srv.queries {
					if q.Get("mac") != mac {
						t.Errorf("request %d: mac %q", i, q.Get("mac"))
					}
					want := tt.wantWait
					if i == 0 {
						want = "" // the first answer comes at once
					}
					if q.Get("wait") != want {
						t.Errorf("request %d: wait %q, want %q", i, q.Get("wait"), want)
					}
					// This server answers at once: requests are paced.
					if i > 0 && srv.at[i].Sub(srv.at[i-1]) < time.Second {
						t.Errorf("requests %d and %d %v apart", i-1, i, srv.at[i].Sub(srv.at[i-1]))
					}
				}
			})
		})
	}
}
