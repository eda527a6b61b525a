package status

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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
		Inventory: &inventory.Machine{MemoryBytes: 1}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"mac":`, `"ip":`, `"state":"receiving"`, `"partition":1`, `"partitions":2`, `"bytes":3`, `"total":4`,
		`"wire_rate":5`, `"disk_rate":6`, `"error":"e"`, `"seq":7`, `"time":"2026-01-02T03:04:05Z"`, `"inventory":{`, `"memory_bytes":1`} {
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
