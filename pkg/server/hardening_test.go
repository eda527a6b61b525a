package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/status"
)

// Only the files of the image being sent are served, without listings,
// unless every image is asked for.
func TestOnlyTheImageBeingSentIsServed(t *testing.T) {
	for _, all := range []bool{false, true} {
		t.Run(fmt.Sprintf("ServeAllImages=%v", all), func(t *testing.T) {
			_, hs, _ := newHTTPServer(t, func(c *Config) {
				c.Image, c.ServeAllImages = "lab", all
				writeFiles(t, filepath.Join(c.Images, "other"), map[string][]byte{"d1p1.img": []byte("other image")})
				writeFiles(t, filepath.Join(c.Images, "lab", "sub"), map[string][]byte{"x": []byte("nested")})
			})
			for _, tt := range []struct {
				path          string
				code, codeAll int
			}{
				{"/images/lab/d1p1.img", 200, 200},
				{"/images/lab/d1.partitions", 200, 200},
				{"/images/lab/", 404, 200}, // a listing
				{"/images/", 404, 200},     // a listing of every image
				{"/images/other/d1p1.img", 404, 200},
				{"/images/lab/sub/x", 404, 200},
				{"/images/lab/escape", 403, 403}, // the symlink out of the images
			} {
				want := tt.code
				if all {
					want = tt.codeAll
				}
				if resp, body := do(t, "GET", hs.URL+tt.path, ""); resp.StatusCode != want {
					t.Errorf("GET %s: %s, want %d\n%.200s", tt.path, resp.Status, want, body)
				}
			}
		})
	}
}

// captureLog returns a logger that writes into a buffer.
func captureLog() (*log.Logger, *lockedBuffer) {
	b := &lockedBuffer{}
	return log.New(b, "imgcast-server: ", 0), b
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Text a client chose reaches the log quoted: it cannot forge a log line
// or send escape sequences to the admin's terminal.
func TestLogQuotesWhatClientsSend(t *testing.T) {
	logger, buf := captureLog()
	_, hs, _ := newHTTPServer(t, func(c *Config) { c.Log = logger })
	forged := "\n2026/11/22 10:00:00 imgcast-server: client 52:54:00:00:00:99 (10.0.0.99): done\x1b[2J\x1b]0;pwned\a"
	rep := status.Report{
		MAC: "52:54:00:00:00:01", State: status.Ready, Hostname: "pc\x1b[31m1",
		Inventory: &inventory.Machine{
			DMI:   inventory.DMI{Vendor: "ACME" + forged, Product: "Box\r\x1b[1A"},
			Disks: []inventory.Disk{{Name: "sda" + forged, SizeBytes: 1 << 30}},
		},
		MulticastCheck: &status.MulticastCheck{Verdict: "PROBLEM — " + forged},
	}
	b, _ := json.Marshal(rep)
	if resp, body := do(t, "POST", hs.URL+"/api/status", string(b)); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST: %s %s", resp.Status, body)
	}
	b, _ = json.Marshal(status.Report{MAC: "52:54:00:00:00:01", State: status.Failed, Error: "disk died" + forged})
	if resp, body := do(t, "POST", hs.URL+"/api/status", string(b)); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST: %s %s", resp.Status, body)
	}
	out := buf.String()
	if strings.ContainsAny(out, "\x1b\r\a") {
		t.Errorf("control characters reached the log:\n%q", out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Errorf("two reports gave %d log lines (forged ones among them):\n%s", len(lines), out)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "imgcast-server: client 52:54:00:00:00:01 ") {
			t.Errorf("log line not about the client that sent it: %q", l)
		}
	}
}

// A refused image path is logged quoted.
func TestRefusedImagePathIsLoggedQuoted(t *testing.T) {
	logger, buf := captureLog()
	_, hs, _ := newHTTPServer(t, func(c *Config) { c.Log = logger })
	if resp, _ := do(t, "GET", hs.URL+"/images/lab/escape", ""); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("symlink out of the images: %s", resp.Status)
	}
	if !strings.Contains(buf.String(), `images: refused "lab/escape": `) {
		t.Errorf("log:\n%s", buf)
	}
}

// GET /api/status returns one page at a time, with the total and a link
// to the next page; following the links lists every client once.
func TestStatusListIsPaged(t *testing.T) {
	srv, hs, _ := newHTTPServer(t, func(c *Config) { c.Limits.PageSize = 2 })
	for i := 5; i >= 1; i-- {
		b := fmt.Sprintf(`{"mac":"52:54:00:00:00:0%d","state":"ready"}`, i)
		if resp, _ := do(t, "POST", hs.URL+"/api/status", b); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("POST: %s", resp.Status)
		}
	}
	var macs []string
	next := "/api/status"
	pages := 0
	linkRE := regexp.MustCompile(`^<(/api/status\?[^>]+)>; rel="next"$`)
	for next != "" {
		resp, body := do(t, "GET", hs.URL+next, "")
		var page []status.Client
		if err := json.Unmarshal([]byte(body), &page); err != nil {
			t.Fatalf("GET %s: %v\n%s", next, err, body)
		}
		if len(page) > 2 {
			t.Errorf("GET %s gave %d clients, more than the page size 2", next, len(page))
		}
		if got := resp.Header.Get("X-Total-Count"); got != "5" {
			t.Errorf("X-Total-Count %q, want 5", got)
		}
		for _, c := range page {
			macs = append(macs, c.MAC)
		}
		next = ""
		if m := linkRE.FindStringSubmatch(resp.Header.Get("Link")); m != nil {
			next = m[1]
		}
		if pages++; pages > 5 {
			t.Fatal("the pages do not end")
		}
	}
	want := "52:54:00:00:00:01 52:54:00:00:00:02 52:54:00:00:00:03 52:54:00:00:00:04 52:54:00:00:00:05"
	if strings.Join(macs, " ") != want || pages != 3 {
		t.Errorf("listed %v in %d pages, want %s in 3", macs, pages, want)
	}
	if resp, _ := do(t, "GET", hs.URL+"/api/status?limit=0", ""); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("limit=0: %s", resp.Status)
	}
	if _, body := do(t, "GET", hs.URL+"/api/status?limit=1", ""); strings.Count(body, `"mac"`) != 1 {
		t.Errorf("limit=1 gave %s", body)
	}
	if got := srv.Clients(); len(got) != 5 {
		t.Errorf("Clients() lists %d, want all 5", len(got))
	}
}

// bigInventory is an inventory of about n bytes in JSON.
func bigInventory(n int) *inventory.Machine {
	m := &inventory.Machine{MemoryBytes: 1 << 30}
	for len(m.Disks)*220 < n && len(m.Disks) < status.MaxDisks {
		m.Disks = append(m.Disks, inventory.Disk{Name: fmt.Sprintf("sd%03d", len(m.Disks)), Path: "/dev/sdx",
			Model: strings.Repeat("M", 60), Serial: strings.Repeat("S", 60), SizeBytes: 1 << 40})
	}
	return m
}

func postReport(t *testing.T, url string, rep status.Report) (*http.Response, string) {
	t.Helper()
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, "POST", url+"/api/status", string(b))
}

// The inventories the server keeps stay within their budget; beyond it a
// machine's inventory is not kept, and the page says so.
func TestInventoriesStayWithinTheirBudget(t *testing.T) {
	srv, hs, _ := newHTTPServer(t, func(c *Config) { c.Limits.InventoryBudget = 50 << 10 })
	inv := bigInventory(20 << 10)
	cost := inventoryCost(inv)
	for i := range 4 {
		rep := status.Report{MAC: fmt.Sprintf("52:54:00:00:00:%02x", i), State: status.Ready, Inventory: inv}
		if resp, body := postReport(t, hs.URL, rep); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("POST: %s %s", resp.Status, body)
		}
	}
	list := srv.Clients()
	kept := 0
	for _, c := range list {
		if c.Inventory != nil {
			kept++
		} else if !strings.Contains(c.Note, "inventory not kept") {
			t.Errorf("client %s lost its inventory without a note: %q", c.MAC, c.Note)
		}
	}
	if want := int((50 << 10) / cost); kept != want {
		t.Errorf("%d inventories kept, want %d (budget 50 KiB, %d bytes each)", kept, want, cost)
	}
	if srv.clients.used > 50<<10 {
		t.Errorf("inventories take %d bytes, over the budget", srv.clients.used)
	}
	// A machine that sends a new inventory gives back the old one's share.
	small := &inventory.Machine{MemoryBytes: 1}
	postReport(t, hs.URL, status.Report{MAC: "52:54:00:00:00:00", State: status.Ready, Inventory: small})
	if want := cost*int64(kept-1) + inventoryCost(small); srv.clients.used != want {
		t.Errorf("after a smaller inventory: %d bytes counted, want %d", srv.clients.used, want)
	}
}

// Reports bigger than any machine's are refused before they are kept.
func TestOversizedReportsAreRefused(t *testing.T) {
	srv, hs, _ := newHTTPServer(t, nil)
	for _, tt := range []struct {
		name string
		rep  status.Report
		want string
	}{
		{"too many disks", status.Report{MAC: "52:54:00:00:00:01", State: status.Ready,
			Inventory: &inventory.Machine{Disks: make([]inventory.Disk, status.MaxDisks+1)}}, "disks listed"},
		{"too many NICs", status.Report{MAC: "52:54:00:00:00:01", State: status.Ready,
			Inventory: &inventory.Machine{NICs: make([]inventory.NIC, status.MaxNICs+1)}}, "NICs listed"},
		{"body too large", status.Report{MAC: "52:54:00:00:00:01", State: status.Ready,
			Inventory: &inventory.Machine{DMI: inventory.DMI{Vendor: strings.Repeat("v", maxReportSize)}}}, "too large"},
	} {
		resp, body := postReport(t, hs.URL, tt.rep)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, tt.want) {
			t.Errorf("%s: %s %q, want 400 mentioning %q", tt.name, resp.Status, body, tt.want)
		}
	}
	// Long strings are cut, not refused.
	long := status.Report{MAC: "52:54:00:00:00:02", State: status.Ready,
		Inventory: &inventory.Machine{DMI: inventory.DMI{Vendor: strings.Repeat("v", 10000)}}}
	if resp, body := postReport(t, hs.URL, long); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("long vendor: %s %s", resp.Status, body)
	}
	if c := srv.clients.get("52:54:00:00:00:02"); c == nil || len(c.Inventory.DMI.Vendor) > status.MaxFieldLen+3 {
		t.Errorf("vendor kept at %d bytes", len(c.Inventory.DMI.Vendor))
	}
}

// The server keeps at most MaxClients machines; to make room it drops the
// one seen longest ago among those that finished or fell silent, never
// one that is still imaging.
func TestMachinesAreBounded(t *testing.T) {
	c := newClients(3, 1<<20)
	now := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return now }
	mac := func(i int) string { return fmt.Sprintf("52:54:00:00:00:%02x", i) }
	for i := range 3 {
		must(t)(c.update(status.Report{MAC: mac(i), State: status.Receiving}, "10.0.0.1:1", ""))
		now = now.Add(time.Second)
	}
	if _, err := c.update(status.Report{MAC: mac(3), State: status.Ready}, "10.0.0.1:1", ""); err == nil {
		t.Fatal("a fourth machine was kept while three are imaging")
	}
	must(t)(c.update(status.Report{MAC: mac(1), State: status.Done}, "10.0.0.1:1", ""))
	must(t)(c.update(status.Report{MAC: mac(3), State: status.Ready}, "10.0.0.1:1", ""))
	if c.get(mac(1)) != nil || c.get(mac(0)) == nil {
		t.Error("the finished machine was not the one dropped")
	}
	now = now.Add(silentAfter)
	must(t)(c.update(status.Report{MAC: mac(2), State: status.Receiving}, "10.0.0.1:1", ""))
	must(t)(c.update(status.Report{MAC: mac(4), State: status.Ready}, "10.0.0.1:1", ""))
	if c.get(mac(0)) != nil {
		t.Error("the machine silent for longest was not dropped")
	}
}

// startUnicast runs a unicast server (no senders) with limits until the
// test ends and returns its address.
func startUnicast(t *testing.T, limits Limits) (*fixture, string) {
	t.Helper()
	f := start(t, map[string][]byte{"d1p1.img": []byte("x")}, "", func(c *Config) {
		c.Mode, c.Limits = ModeUnicast, limits
	})
	return f, f.addr
}

// A request whose body trickles in for longer than the read timeout is cut
// off and not taken.
func TestSlowRequestBodyIsCutOff(t *testing.T) {
	f, addr := startUnicast(t, Limits{ReadTimeout: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"mac":"52:54:00:00:00:01","state":"ready"}`
	fmt.Fprintf(conn, "POST /api/status HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	// One byte every 100 ms: 4.4 s in all, far beyond the timeout.
	for i := range len(body) {
		if _, err := conn.Write([]byte{body[i]}); err != nil {
			break // the server closed the connection: good
		}
		time.Sleep(100 * time.Millisecond)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	answer, _ := io.ReadAll(conn)
	if bytes.HasPrefix(answer, []byte("HTTP/1.1 204")) || len(f.srv.Clients()) != 0 {
		t.Errorf("a body trickled in over 4 s was accepted (answer %q)", answer)
	}
}

// A kept-alive connection is closed after the idle timeout.
func TestIdleConnectionsAreClosed(t *testing.T) {
	_, addr := startUnicast(t, Limits{IdleTimeout: 200 * time.Millisecond})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /api/session HTTP/1.1\r\nHost: x\r\n\r\n")
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.ReadByte(); err != io.EOF {
		t.Errorf("idle connection: read gave %v, want the server to close it (EOF)", err)
	}
}

// Beyond MaxConns, a connection waits to be served until another closes.
func TestConnectionsAreBounded(t *testing.T) {
	_, addr := startUnicast(t, Limits{MaxConns: 2, ReadTimeout: time.Minute})
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	third, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	fmt.Fprintf(third, "GET /api/session HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	third.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, _ := third.Read(make([]byte, 1)); n > 0 {
		t.Fatal("a third connection was served while two were open (MaxConns 2)")
	}
	held[0].Close()
	third.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(third), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after one closed: %v %v", resp, err)
	}
}

func TestOversizedHeaderIsRefused(t *testing.T) {
	_, addr := startUnicast(t, Limits{})
	req, _ := http.NewRequest("GET", "http://"+addr+"/api/session", nil)
	req.Header.Set("X-Junk", strings.Repeat("j", 2*maxHeaderBytes))
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a %d KiB header: %s, want 431", 2*maxHeaderBytes>>10, resp.Status)
	}
}

// The senders open image files through the images root, as HTTP does: a
// symlink that leads out of --images is refused, one that stays inside is
// followed.
func TestMulticastOpensImagesThroughTheRoot(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	writeFiles(t, filepath.Dir(secret), map[string][]byte{"secret": []byte("SECRET: not for clients")})

	t.Run("refused at start", func(t *testing.T) {
		images := t.TempDir()
		writeFiles(t, filepath.Join(images, "img"), map[string][]byte{"d1p1.img": []byte("one")})
		if err := os.Symlink(secret, filepath.Join(images, "img", "d1p2.img")); err != nil {
			t.Fatal(err)
		}
		_, err := New(Config{Images: images, Sender: SenderConfig{Program: "sh", Interface: "lo", PortBase: 9000, Clients: 1}, Log: testLog(t)})
		if err == nil || !strings.Contains(err.Error(), "d1p2.img") || !strings.Contains(err.Error(), "inside --images") {
			t.Fatalf("New = %v, want d1p2.img refused", err)
		}
	})

	t.Run("swapped in while sending", func(t *testing.T) {
		out := t.TempDir()
		// The first sender turns the second image into a symlink to the
		// secret before the second sender opens it.
		f := start(t, map[string][]byte{"d1p1.img": []byte("one"), "d1p2.img": []byte("two")}, fmt.Sprintf(`
if [ $port = 9000 ]; then rm @IMAGE@/d1p2.img; ln -s %s @IMAGE@/d1p2.img; fi
echo Starting transfer >&2
cat > %s/$port`, secret, out))
		s := f.waitChain(t)
		if got, _ := os.ReadFile(filepath.Join(out, "9002")); bytes.Contains(got, []byte("SECRET")) {
			t.Fatal("the sender was fed a file from outside the images folder")
		}
		if s.Phase != status.Aborted || s.Streams[1].State != status.StreamFailed || !strings.Contains(s.Message, "reading image") {
			t.Errorf("session %s: %s", s.Phase, s.Message)
		}
	})

	t.Run("symlink inside the images", func(t *testing.T) {
		out := t.TempDir()
		images := t.TempDir()
		writeFiles(t, filepath.Join(images, "shared"), map[string][]byte{"p1": []byte("shared piece")})
		writeFiles(t, filepath.Join(images, "img"), nil)
		if err := os.Symlink("../shared/p1", filepath.Join(images, "img", "d1p1.img")); err != nil {
			t.Fatal(err)
		}
		g := start(t, nil, fmt.Sprintf(`echo Starting transfer >&2; cat > %s/$port`, out), func(c *Config) { c.Images = images; c.Image = "img" })
		if s := g.waitChain(t); s.Phase != status.Finished {
			t.Fatalf("session %s: %s", s.Phase, s.Message)
		}
		if got, _ := os.ReadFile(filepath.Join(out, "9000")); !bytes.Equal(got, withHeader(t, "d1p1.img", []byte("shared piece"))) {
			t.Errorf("sent %q", got)
		}
	})
}
