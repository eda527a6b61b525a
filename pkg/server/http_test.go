package server

import (
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/pkg/status"
)

// newHTTPServer makes a server (not running its chain) over an image
// "lab" and serves its handler.
func newHTTPServer(t *testing.T, tweak func(*Config)) (*Server, *httptest.Server, string) {
	t.Helper()
	dir := t.TempDir()
	images := filepath.Join(dir, "images")
	writeFiles(t, filepath.Join(images, "lab"), map[string][]byte{
		"d1.partitions": []byte("label: gpt\n"),
		"d1p1.img":      []byte("0123456789abcdefghijklmnopqrstuvwxyz"),
		"d1p2.img.000":  []byte("second"),
	})
	writeFiles(t, dir, map[string][]byte{"secret": []byte("not for clients"), "vmlinuz": []byte("KERNEL"), "init.cpio": []byte("INITRD"), "mods.cpio": []byte("MODULES")})
	if err := os.Symlink(filepath.Join(dir, "secret"), filepath.Join(images, "lab", "escape")); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Images: images,
		Port:   8080,
		Sender: SenderConfig{Program: "sh", Interface: "lo", PortBase: 9000, Clients: 2},
		Log:    log.New(io.Discard, "", 0),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return srv, hs, dir
}

func do(t *testing.T, method, url string, body string, header ...string) (*http.Response, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultTransport.RoundTrip(req) // no redirects followed
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestServesImagesReadOnly(t *testing.T) {
	_, hs, _ := newHTTPServer(t, nil)
	for _, tt := range []struct {
		name, method, path string
		header             []string
		code               int
		body               string
	}{
		{name: "file", method: "GET", path: "/images/lab/d1p1.img", code: 200, body: "0123456789abcdefghijklmnopqrstuvwxyz"},
		{name: "HEAD", method: "HEAD", path: "/images/lab/d1p2.img.000", code: 200, body: ""},
		{name: "range", method: "GET", path: "/images/lab/d1p1.img", header: []string{"Range", "bytes=10-15"}, code: 206, body: "abcdef"},
		{name: "missing file", method: "HEAD", path: "/images/lab/d1p3.img", code: 404},
		{name: "dot-dot is cleaned away", method: "GET", path: "/images/lab/../../secret", code: 307},
		{name: "encoded dot-dot", method: "GET", path: "/images/lab/..%2f..%2fsecret", code: 404},
		{name: "symlink out of the images", method: "GET", path: "/images/lab/escape", code: 403},
		{name: "no writes", method: "PUT", path: "/images/lab/d1p1.img", code: 405},
		{name: "no deletes", method: "DELETE", path: "/images/lab/d1p1.img", code: 405},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, tt.method, hs.URL+tt.path, "", tt.header...)
			if resp.StatusCode != tt.code {
				t.Fatalf("%s %s: %s, want %d", tt.method, tt.path, resp.Status, tt.code)
			}
			if tt.code/100 == 2 && body != tt.body {
				t.Errorf("body %q, want %q", body, tt.body)
			}
			if strings.Contains(body, "not for clients") {
				t.Error("served a file outside the images folder")
			}
			if loc := resp.Header.Get("Location"); resp.StatusCode == 307 {
				if resp, _ := do(t, "GET", hs.URL+loc, ""); resp.StatusCode != 404 {
					t.Errorf("redirected to %s, which answers %s", loc, resp.Status)
				}
			}
			if tt.method == "HEAD" && tt.code == 200 && resp.ContentLength != 6 {
				t.Errorf("HEAD Content-Length %d, want 6", resp.ContentLength)
			}
		})
	}
}

func TestBootScript(t *testing.T) {
	_, hs, _ := newHTTPServer(t, func(c *Config) {
		c.Address = "10.77.0.1"
		c.Consoles = []string{"ttyS0", "tty0"}
		c.Append = "imgcast.disk=/dev/vda"
		dir := filepath.Dir(c.Images)
		c.Kernel = filepath.Join(dir, "vmlinuz")
		c.Initrds = []string{filepath.Join(dir, "init.cpio"), filepath.Join(dir, "mods.cpio")}
	})
	_, body := do(t, "GET", hs.URL+"/boot.ipxe", "")
	want := "#!ipxe\n" +
		"echo imgcast: booting from http://10.77.0.1:8080, image lab\n" +
		"kernel http://10.77.0.1:8080/vmlinuz console=ttyS0 console=tty0 panic=-1 imgcast.server=10.77.0.1" +
		" imgcast.image=http://10.77.0.1:8080/images/lab/ imgcast.mode=multicast imgcast.portbase=9000" +
		" imgcast.report=http://10.77.0.1:8080/api/status imgcast.session=http://10.77.0.1:8080/api/session" +
		" imgcast.after=reboot imgcast.mac=${netX/mac} initrd=initramfs.img initrd=initramfs-2.img imgcast.disk=/dev/vda\n" +
		"initrd http://10.77.0.1:8080/initramfs.img\n" +
		"initrd http://10.77.0.1:8080/initramfs-2.img\n" +
		"boot\n"
	if body != want {
		t.Errorf("boot.ipxe =\n%s\nwant\n%s", body, want)
	}
	for path, content := range map[string]string{"/vmlinuz": "KERNEL", "/initramfs.img": "INITRD", "/initramfs-2.img": "MODULES"} {
		if resp, got := do(t, "GET", hs.URL+path, ""); resp.StatusCode != 200 || got != content {
			t.Errorf("%s: %s %q, want %q", path, resp.Status, got, content)
		}
	}
}

func TestBootScriptUsesTheHostTheClientAsked(t *testing.T) {
	_, hs, _ := newHTTPServer(t, func(c *Config) {
		dir := filepath.Dir(c.Images)
		c.Kernel, c.Initrds = filepath.Join(dir, "vmlinuz"), []string{filepath.Join(dir, "init.cpio")}
		c.Mode = ModeUnicast
	})
	_, body := do(t, "GET", hs.URL+"/boot.ipxe", "", "Host", "192.168.5.5:8080")
	for _, w := range []string{"kernel http://192.168.5.5:8080/vmlinuz ", "imgcast.server=192.168.5.5 ", "imgcast.mode=unicast ", "initrd http://192.168.5.5:8080/initramfs.img"} {
		if !strings.Contains(body, w) {
			t.Errorf("boot.ipxe lacks %q:\n%s", w, body)
		}
	}
}

func TestBootScriptWithoutKernel(t *testing.T) {
	_, hs, _ := newHTTPServer(t, nil)
	_, body := do(t, "GET", hs.URL+"/boot.ipxe", "")
	if !strings.HasPrefix(body, "#!ipxe\n") || !strings.Contains(body, "start it with --kernel and --initrd") || strings.Contains(body, "\nboot") {
		t.Errorf("boot.ipxe without a kernel:\n%s", body)
	}
	if resp, body := do(t, "GET", hs.URL+"/vmlinuz", ""); resp.StatusCode != 404 || !strings.Contains(body, "--kernel") {
		t.Errorf("/vmlinuz: %s %q", resp.Status, body)
	}
}

func TestStatusAPI(t *testing.T) {
	srv, hs, _ := newHTTPServer(t, nil)
	post := func(body string) *http.Response {
		resp, _ := do(t, "POST", hs.URL+"/api/status", body, "Content-Type", "application/json")
		return resp
	}
	ready := `{"mac":"52:54:00:12:34:56","ip":"10.0.0.11","state":"ready","seq":1,"inventory":{"nics":[],"disks":[{"name":"vda","path":"/dev/vda","size_bytes":100663296}],"memory_bytes":268435456,"dmi":{"vendor":"QEMU"}}}`
	if resp := post(ready); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST ready: %s", resp.Status)
	}
	if resp := post(`{"mac":"52:54:00:12:34:56","state":"receiving","partition":1,"partitions":2,"bytes":50,"total":100,"wire_rate":1e7,"disk_rate":2e7,"seq":2}`); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST receiving: %s", resp.Status)
	}
	for _, bad := range []struct{ body, want string }{
		{`{"mac":"nope","state":"ready"}`, "not an Ethernet MAC"},
		{`{"mac":"52:54:00:12:34:57","state":"sleeping"}`, "state"},
		{`{"mac":"52:54:00:12:34:57"`, "not valid JSON"},
		{`{"mac":"52:54:00:12:34:57","state":"ready"}{"mac":"52:54:00:12:34:57","state":"done"}`, "one JSON object"},
		{`{"mac":"52:54:00:12:34:57","state":"ready","error":"` + strings.Repeat("x", 2<<20) + `"}`, "too large"},
	} {
		resp, body := do(t, "POST", hs.URL+"/api/status", bad.body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, bad.want) {
			t.Errorf("POST %.60s: %s %q, want 400 mentioning %q", bad.body, resp.Status, body, bad.want)
		}
	}
	resp, body := do(t, "GET", hs.URL+"/api/status", "")
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("Content-Type %q", resp.Header.Get("Content-Type"))
	}
	var list []status.Client
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatalf("GET /api/status: %v\n%s", err, body)
	}
	if len(list) != 1 {
		t.Fatalf("clients = %+v, want one (bad reports must not be stored)", list)
	}
	c := list[0]
	if c.State != status.Receiving || c.Bytes != 50 || c.WireRate != 1e7 || c.Inventory == nil || c.Inventory.DMI.Vendor != "QEMU" || c.Remote != "127.0.0.1" {
		t.Errorf("client = %+v", c)
	}
	if got := srv.Clients(); len(got) != 1 {
		t.Errorf("Clients() = %+v", got)
	}
}

// A machine that reports ready after the session has started is marked,
// and /api/session tells it it cannot join.
func TestLateClient(t *testing.T) {
	srv, hs, _ := newHTTPServer(t, nil)
	getSession := func() status.Session {
		_, body := do(t, "GET", hs.URL+"/api/session", "")
		var s status.Session
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("/api/session: %v\n%s", err, body)
		}
		return s
	}
	if s := getSession(); !s.Joinable || s.CanJoin() != nil || s.Phase != status.Waiting {
		t.Fatalf("fresh session = %+v", s)
	}
	do(t, "POST", hs.URL+"/api/status", `{"mac":"52:54:00:00:00:01","state":"ready"}`)
	srv.sessions.list[0].started(0)
	s := getSession()
	if err := s.CanJoin(); err == nil || !strings.Contains(err.Error(), "booted too late") || !strings.Contains(err.Error(), "sending partition 1") {
		t.Errorf("CanJoin after the start = %v", err)
	}
	do(t, "POST", hs.URL+"/api/status", `{"mac":"52:54:00:00:00:02","state":"ready"}`)
	list := srv.Clients()
	if list[0].Note != "" {
		t.Errorf("client ready in time got a note: %q", list[0].Note)
	}
	if !strings.Contains(list[1].Note, "cannot join") {
		t.Errorf("late client's note = %q", list[1].Note)
	}
}

func TestStatusPage(t *testing.T) {
	_, hs, _ := newHTTPServer(t, nil)
	resp, body := do(t, "GET", hs.URL+"/", "")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("/: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	for _, w := range []string{"/api/status", "/api/session", "<table"} {
		if !strings.Contains(body, w) {
			t.Errorf("page lacks %q", w)
		}
	}
	if strings.Contains(body, "http://") || strings.Contains(body, "https://") {
		t.Error("the page refers to an external asset")
	}
	if resp, _ := do(t, "GET", hs.URL+"/nothing-here", ""); resp.StatusCode != 404 {
		t.Errorf("/nothing-here: %s", resp.Status)
	}
}

func FuzzDecodeReport(f *testing.F) {
	f.Add([]byte(`{"mac":"52:54:00:12:34:56","state":"ready","inventory":{"disks":[{"name":"vda"}]}}`))
	f.Add([]byte(`{"mac":"52:54:00:12:34:56","state":"receiving","bytes":-1}`))
	f.Add([]byte(`{"mac":"52-54-00-12-34-56","state":"failed","error":"x","wire_rate":1e308}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rep, err := decodeReport(bytes.NewReader(b))
		if err != nil {
			return
		}
		// What is accepted stays valid and survives a round trip.
		again := rep
		if err := again.Validate(); err != nil {
			t.Fatalf("accepted report fails validation: %v", err)
		}
		enc, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeReport(bytes.NewReader(enc)); err != nil {
			t.Fatalf("re-encoded report rejected: %v\n%s", err, enc)
		}
	})
}
