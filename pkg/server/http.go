package server

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/status"
)

//go:embed page.html
var statusPage []byte

// maxReportSize bounds a status POST: a ready report with the inventory
// of a machine with dozens of disks is a few KiB.
const maxReportSize = 64 << 10

// maxHeaderBytes bounds a request's header (iPXE's and the clients' are a
// few hundred bytes).
const maxHeaderBytes = 64 << 10

// apiWriteTimeout bounds writing an answer of the API and the small files;
// images and boot files, which are large, are bounded by the connection
// limit instead.
const apiWriteTimeout = 30 * time.Second

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	// GET patterns also answer HEAD; other methods get 405.
	images := imagesFS{fsys: s.root.FS(), log: s.cfg.Log, image: s.cfg.Image, all: s.cfg.ServeAllImages}
	mux.Handle("GET /images/", http.StripPrefix("/images", http.FileServerFS(images)))
	mux.HandleFunc("GET /boot.ipxe", s.serveBootScript)
	mux.HandleFunc("GET /vmlinuz", s.serveFile(s.cfg.Kernel, "--kernel"))
	for i, f := range s.cfg.Initrds {
		mux.HandleFunc("GET "+initrdPath(i), s.serveFile(f, "--initrd"))
	}
	if len(s.cfg.Initrds) == 0 {
		mux.HandleFunc("GET "+initrdPath(0), s.serveFile("", "--initrd"))
	}
	mux.HandleFunc("GET /api/status", s.listClients)
	mux.HandleFunc("POST /api/status", s.receiveReport)
	mux.HandleFunc("GET /api/session", s.serveSession)
	mux.HandleFunc("POST /api/mcast-check", s.offerMulticastCheck())
	mux.HandleFunc("GET /api/sessions", s.serveSessions)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(statusPage)
	})
	return mux
}

// imagesFS is the images folder as clients see it: by default only the
// regular files of the image being sent, otherwise (all) every folder with
// listings. os.Root already refuses names and symlinks that lead outside
// it; imagesFS turns that refusal (and any error other than "not found")
// into "permission denied", which the file server answers with 403
// instead of 500, and logs it.
type imagesFS struct {
	fsys  fs.FS
	log   *log.Logger
	image string
	all   bool
}

func (i imagesFS) Open(name string) (fs.File, error) {
	notFound := &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	dir, file, _ := strings.Cut(name, "/")
	if !i.all && (dir != i.image || file == "" || strings.Contains(file, "/")) {
		return nil, notFound
	}
	f, err := i.fsys.Open(name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrPermission) {
		i.log.Printf("images: refused %q: %v", name, err)
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
	}
	if err == nil && !i.all {
		if info, serr := f.Stat(); serr != nil || !info.Mode().IsRegular() {
			f.Close()
			return nil, notFound
		}
	}
	return f, err
}

// limitWrite bounds the time to write the answer to r.
func limitWrite(w http.ResponseWriter, d time.Duration) {
	// Not every ResponseWriter can (httptest's cannot); then there is
	// nothing to bound.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d))
}

func initrdPath(i int) string {
	if i == 0 {
		return "/initramfs.img"
	}
	return "/initramfs-" + strconv.Itoa(i+1) + ".img"
}

func (s *Server) serveFile(path, flag string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if path == "" {
			http.Error(w, "imgcast-server was started without "+flag, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeFile(w, r, path)
	}
}

// baseURL is how clients reach this server: the configured address, or
// the host the request was sent to.
func (s *Server) baseURL(r *http.Request) (*url.URL, string) {
	host := r.Host
	if s.cfg.Address != "" {
		host = net.JoinHostPort(s.cfg.Address, strconv.Itoa(s.cfg.Port))
	}
	ip := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		ip = h
	}
	return &url.URL{Scheme: "http", Host: host}, ip
}

func (s *Server) serveBootScript(w http.ResponseWriter, r *http.Request) {
	limitWrite(w, apiWriteTimeout)
	base, ip := s.baseURL(r)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, s.bootScript(base, ip))
}

// bootScript is the iPXE script that boots a client into imgcast, pointed
// at this server.
func (s *Server) bootScript(base *url.URL, ip string) string {
	at := func(path string) string { u := *base; u.Path = path; return u.String() }
	var b strings.Builder
	b.WriteString("#!ipxe\n")
	if s.cfg.Kernel == "" || len(s.cfg.Initrds) == 0 {
		b.WriteString("echo imgcast-server has no kernel or initramfs to boot (start it with --kernel and --initrd)\n")
		b.WriteString("sleep 30\nexit 1\n")
		return b.String()
	}
	args := []string{}
	for _, c := range s.cfg.Consoles {
		args = append(args, "console="+c)
	}
	args = append(args,
		"panic=-1",
		"imgcast.server="+ip,
		"imgcast.image="+at("/images/"+s.cfg.Image+"/"),
		"imgcast.mode="+s.cfg.Mode,
		"imgcast.portbase="+strconv.Itoa(s.cfg.Sender.PortBase),
		"imgcast.report="+at("/api/status"),
		"imgcast.session="+at("/api/session"),
		"imgcast.after="+s.cfg.After,
		// iPXE fills in the MAC of the NIC it booted from, so a machine
		// with several NICs knows which one reaches the server.
		"imgcast.mac=${netX/mac}",
	)
	for i := range s.cfg.Initrds {
		// For UEFI kernels, which load initrds by name.
		args = append(args, "initrd="+strings.TrimPrefix(initrdPath(i), "/"))
	}
	if s.cfg.Append != "" {
		args = append(args, s.cfg.Append)
	}
	fmt.Fprintf(&b, "echo imgcast: booting from %s, image %s\n", base, s.cfg.Image)
	fmt.Fprintf(&b, "kernel %s %s\n", at("/vmlinuz"), strings.Join(args, " "))
	for i := range s.cfg.Initrds {
		fmt.Fprintf(&b, "initrd %s\n", at(initrdPath(i)))
	}
	b.WriteString("boot\n")
	return b.String()
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// listClients answers GET /api/status: a JSON array of clients sorted by
// MAC, one page at a time (?limit=N, at most the page size, and ?after=MAC
// for the page after MAC). The total is in X-Total-Count and the next
// page, if any, in a Link header. Each client is encoded and written on
// its own, so an answer never takes more memory than its largest client.
func (s *Server) listClients(w http.ResponseWriter, r *http.Request) {
	limitWrite(w, apiWriteTimeout)
	q := r.URL.Query()
	limit := s.cfg.Limits.PageSize
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			http.Error(w, "limit must be a positive number", http.StatusBadRequest)
			return
		}
		limit = min(n, limit)
	}
	page, total, more := s.clients.page(q.Get("after"), limit)
	s.sessions.fillIn(page)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Total-Count", strconv.Itoa(total))
	if more {
		next := url.Values{"after": {page[len(page)-1].MAC}, "limit": {strconv.Itoa(limit)}}
		h.Set("Link", `</api/status?`+next.Encode()+`>; rel="next"`)
	}
	bw := bufio.NewWriter(w)
	bw.WriteString("[")
	for i, c := range page {
		b, err := json.MarshalIndent(c, "  ", "  ")
		if err != nil {
			s.cfg.Log.Printf("encoding client %s: %v", c.MAC, err)
			return
		}
		if i > 0 {
			bw.WriteString(",")
		}
		bw.WriteString("\n  ")
		bw.Write(b)
	}
	bw.WriteString("\n]\n")
	bw.Flush()
}

// maxSessionWait bounds ?wait= of GET /api/session.
const maxSessionWait = 60 * time.Second

// serveSession answers GET /api/session: the newest session, or, asked
// with ?mac=, the session that machine is to join — with rolling sessions
// the queued one when the newest has started, which queues the machine for
// it. With ?wait=SECONDS the answer to a queued machine is held until its
// session opens or the time is up, so a waiting machine need not poll.
func (s *Server) serveSession(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("mac") == "" {
		limitWrite(w, apiWriteTimeout)
		writeJSON(w, s.sessions.current())
		return
	}
	hw, err := net.ParseMAC(q.Get("mac"))
	if err != nil || len(hw) != 6 {
		http.Error(w, fmt.Sprintf("mac %q is not an Ethernet MAC address", q.Get("mac")), http.StatusBadRequest)
		return
	}
	mac := hw.String()
	var wait time.Duration
	if v := q.Get("wait"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			http.Error(w, "wait must be a number of seconds", http.StatusBadRequest)
			return
		}
		wait = min(time.Duration(n)*time.Second, maxSessionWait)
	}
	limitWrite(w, wait+apiWriteTimeout)
	sess, ok := s.sessions.forClient(mac)
	if !ok {
		http.Error(w, "too many machines are waiting for the next session", http.StatusServiceUnavailable)
		return
	}
	if wait > 0 && sess.Phase == status.Queued {
		sess = s.waitForChange(r.Context(), mac, sess, wait)
	}
	writeJSON(w, sess)
}

// waitForChange waits until the session mac is to join differs from was
// (another session, or its phase changed), for at most wait.
func (s *Server) waitForChange(ctx context.Context, mac string, was status.Session, wait time.Duration) status.Session {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		changes := s.sessions.watch()
		now, ok := s.sessions.forClient(mac)
		if !ok || now.ID != was.ID || now.Phase != was.Phase {
			return now
		}
		select {
		case <-changes:
		case <-timer.C:
			return now
		case <-ctx.Done():
			return now
		}
	}
}

// serveSessions answers GET /api/sessions: every session the server
// remembers, oldest first, and the queued one.
func (s *Server) serveSessions(w http.ResponseWriter, r *http.Request) {
	limitWrite(w, apiWriteTimeout)
	writeJSON(w, s.sessions.all())
}

// Session returns the newest session as /api/session shows it.
func (s *Server) Session() status.Session { return s.sessions.current() }

// Sessions returns the sessions as /api/sessions lists them.
func (s *Server) Sessions() []status.Session { return s.sessions.all() }

// Clients returns every client, as /api/status lists them.
func (s *Server) Clients() []status.Client {
	list := s.clients.list()
	s.sessions.fillIn(list)
	return list
}

func (s *Server) receiveReport(w http.ResponseWriter, r *http.Request) {
	limitWrite(w, apiWriteTimeout)
	// Bound the reports decoded at once; a client that cannot get a turn
	// within the read timeout retries later.
	select {
	case s.decoding <- struct{}{}:
		defer func() { <-s.decoding }()
	case <-r.Context().Done():
		return
	}
	rep, err := decodeReport(http.MaxBytesReader(w, r.Body, maxReportSize))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var note string
	if rep.State == status.Ready && s.cfg.Mode == ModeMulticast && !s.cfg.Rolling {
		if sess := s.sessions.current(); !sess.Joinable {
			note = "ready after the multicast session had started, so it cannot join: " + sess.Message
		}
	}
	prev := s.clients.get(rep.MAC)
	cl, err := s.clients.update(rep, r.RemoteAddr, note)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if prev == nil || prev.State != cl.State || prev.Partition != cl.Partition || cl.Note != prev.Note {
		s.cfg.Log.Print(describeClient(cl))
	}
	w.WriteHeader(http.StatusNoContent)
}

// decodeReport reads and checks one JSON report.
func decodeReport(r io.Reader) (status.Report, error) {
	var rep status.Report
	dec := json.NewDecoder(r)
	if err := dec.Decode(&rep); err != nil {
		return rep, fmt.Errorf("status report is not valid JSON: %w", err)
	}
	if dec.More() {
		return rep, fmt.Errorf("status report: one JSON object expected, found more")
	}
	if err := rep.Validate(); err != nil {
		return rep, fmt.Errorf("status report: %w", err)
	}
	return rep, nil
}

// describeClient is the log line for a client's change of state. Every
// text the client chose is quoted, so it cannot forge log lines or send
// escape sequences to the admin's terminal; MAC, IP and state were
// checked by Validate.
func describeClient(c status.Client) string {
	var b strings.Builder
	fmt.Fprintf(&b, "client %s (%s): %s", c.MAC, c.IP, c.State)
	if c.Partition > 0 {
		fmt.Fprintf(&b, " partition %d", c.Partition)
		if c.Partitions > 0 {
			fmt.Fprintf(&b, "/%d", c.Partitions)
		}
	}
	if c.Hostname != "" {
		fmt.Fprintf(&b, " hostname %q", c.Hostname)
	}
	if c.State == status.Ready && c.Inventory != nil {
		inv := c.Inventory
		fmt.Fprintf(&b, ": %q %q, %s RAM", inv.DMI.Vendor, inv.DMI.Product, inventory.HumanBytes(inv.MemoryBytes))
		for _, d := range inv.Disks {
			if d.Skip(1) == "" {
				fmt.Fprintf(&b, ", disk %q %s", d.Name, inventory.HumanBytes(d.SizeBytes))
			}
		}
	}
	if m := c.MulticastCheck; m != nil && c.State == status.Ready {
		fmt.Fprintf(&b, ", multicast check %q", m.Verdict)
	}
	if c.Error != "" {
		fmt.Fprintf(&b, ": %q", c.Error)
	}
	if c.Note != "" {
		fmt.Fprintf(&b, " [%q]", c.Note)
	}
	return b.String()
}
