package server

import (
	"net/http"
	"strings"
	"testing"
)

// The endpoint's refusals; the streams themselves are tested in
// namespaces (cmds/imgcast), since they send multicast.
func TestMulticastCheckRefusals(t *testing.T) {
	_, hs, _ := newHTTPServer(t, nil)
	for _, tc := range []struct {
		method, query string
		status        int
		text          string
	}{
		{"POST", "?port=9000", http.StatusBadRequest, "in use by the imaging session"},
		{"POST", "?port=9003", http.StatusBadRequest, "in use by the imaging session"},
		{"POST", "?rate=0", http.StatusBadRequest, "rate"},
		{"POST", "?group=10.0.0.1", http.StatusBadRequest, "multicast group"},
		{"POST", "?duration=2h", http.StatusBadRequest, "duration"},
		{"GET", "", http.StatusMethodNotAllowed, ""},
	} {
		resp, body := do(t, tc.method, hs.URL+"/api/mcast-check"+tc.query, "")
		if resp.StatusCode != tc.status || !strings.Contains(body, tc.text) {
			t.Errorf("%s %s: %s %q, want %d with %q", tc.method, tc.query, resp.Status, body, tc.status, tc.text)
		}
	}
}
