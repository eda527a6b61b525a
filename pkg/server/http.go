package server

import (
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

	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/status"
)

//go:embed page.html
var statusPage []byte

// maxReportSize bounds a status POST (a ready report with a big inventory
// is a few KiB).
const maxReportSize = 1 << 20

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	// GET patterns also answer HEAD; other methods get 405.
	mux.Handle("GET /images/", http.StripPrefix("/images", http.FileServerFS(imagesFS{s.root.FS(), s.cfg.Log})))
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
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(statusPage)
	})
	return mux
}

// imagesFS is the images folder as clients see it. os.Root already refuses
// names and symlinks that lead outside it; imagesFS turns that refusal
// (and any error other than "not found") into "permission denied", which
// the file server answers with 403 instead of 500, and logs it.
type imagesFS struct {
	fsys fs.FS
	log  *log.Logger
}

func (i imagesFS) Open(name string) (fs.File, error) {
	f, err := i.fsys.Open(name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrPermission) {
		i.log.Printf("images: refused %s: %v", name, err)
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
	}
	return f, err
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

func (s *Server) listClients(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, s.clients.list())
}

func (s *Server) serveSession(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, s.session.snapshot())
}

// Session returns the session as /api/session shows it.
func (s *Server) Session() status.Session { return s.session.snapshot() }

// Clients returns the clients as /api/status lists them.
func (s *Server) Clients() []status.Client { return s.clients.list() }

func (s *Server) receiveReport(w http.ResponseWriter, r *http.Request) {
	rep, err := decodeReport(http.MaxBytesReader(w, r.Body, maxReportSize))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var note string
	if rep.State == status.Ready && s.cfg.Mode == ModeMulticast {
		if sess := s.session.snapshot(); !sess.Joinable {
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

// describeClient is the log line for a client's change of state.
func describeClient(c status.Client) string {
	var b strings.Builder
	fmt.Fprintf(&b, "client %s (%s): %s", c.MAC, c.IP, c.State)
	if c.Partition > 0 {
		fmt.Fprintf(&b, " partition %d", c.Partition)
		if c.Partitions > 0 {
			fmt.Fprintf(&b, "/%d", c.Partitions)
		}
	}
	if c.State == status.Ready && c.Inventory != nil {
		inv := c.Inventory
		fmt.Fprintf(&b, ": %s %s, %s RAM", inv.DMI.Vendor, inv.DMI.Product, inventory.HumanBytes(inv.MemoryBytes))
		for _, d := range inv.Disks {
			if d.Skip(1) == "" {
				fmt.Fprintf(&b, ", disk %s %s", d.Name, inventory.HumanBytes(d.SizeBytes))
			}
		}
	}
	if c.Error != "" {
		fmt.Fprintf(&b, ": %s", c.Error)
	}
	if c.Note != "" {
		fmt.Fprintf(&b, " [%s]", c.Note)
	}
	return b.String()
}
