// Package server is the serving side of imgcast: it serves FOG-style image
// folders, the iPXE boot script, kernel and initramfs over HTTP, collects
// the clients' status reports, and sends each partition image by multicast
// by driving udpcast's own udp-sender, one run per partition.
package server

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"time"

	"golang.org/x/net/netutil"
)

// Modes of a session.
const (
	ModeMulticast = "multicast"
	ModeUnicast   = "unicast"
)

// Config is what a server serves and how it sends.
type Config struct {
	// Images is the folder of image folders, served read-only at /images/.
	Images string
	// Image is the name of the image folder inside Images that is sent
	// and that boot.ipxe points clients at.
	Image string
	// Address is the IP clients reach the server at, used in boot.ipxe.
	// Empty: the host the client used to fetch boot.ipxe.
	Address string
	// Port is the HTTP port clients reach the server at (for boot.ipxe).
	Port int

	// Kernel and Initrds are served at /vmlinuz and /initramfs.img
	// (further initrds at /initramfs-2.img, …) for boot.ipxe.
	Kernel  string
	Initrds []string
	// Mode is multicast (run the sender chain) or unicast (HTTP only).
	Mode string
	// After is imgcast.after for the clients: reboot, poweroff or shell.
	After string
	// Consoles become console= arguments in this order; the last one is
	// /dev/console, where the client's own output goes.
	Consoles []string
	// Append is added to the kernel command line as it is.
	Append string

	// ServeAllImages serves every image folder under Images, with
	// directory listings; by default only the files of Image are served.
	ServeAllImages bool
	// Rolling starts a new session, on its own port base, for the
	// machines that came too late for the running one (see sessions).
	Rolling bool

	Sender SenderConfig
	// Command runs programs (default exec.CommandContext).
	Command CommandFunc
	Log     *log.Logger
	Limits  Limits
}

// Limits bound what clients can make the server hold. Zero fields take
// the defaults.
type Limits struct {
	// ReadTimeout bounds reading a whole request, body included (default
	// 30 s); IdleTimeout a kept-alive connection between requests
	// (default 120 s).
	ReadTimeout, IdleTimeout time.Duration
	// MaxConns bounds the open connections (default 1024); more wait to
	// be accepted.
	MaxConns int
	// MaxClients bounds the machines whose status is kept (default 4096);
	// when full, the one seen longest ago that finished or fell silent is
	// dropped for a new one.
	MaxClients int
	// InventoryBudget bounds the bytes the machines' inventories take
	// (default 32 MiB); an inventory beyond it is not kept.
	InventoryBudget int64
	// PageSize is the most clients one GET /api/status returns (default
	// 500).
	PageSize int
}

func (l *Limits) setDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxConns, 1024)
	def(&l.MaxClients, 4096)
	def(&l.PageSize, 500)
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = 30 * time.Second
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = 120 * time.Second
	}
	if l.InventoryBudget <= 0 {
		l.InventoryBudget = 32 << 20
	}
}

// Server serves one image.
type Server struct {
	cfg      Config
	streams  []ImageStream
	root     *os.Root
	sessions *sessions
	clients  *clients
	handler  http.Handler
	// stopGrace is how long a sender may take to exit after SIGTERM
	// before it is killed.
	stopGrace time.Duration
	// httpGrace is how long requests under way may take to finish once
	// Run stops; connections still open then are closed.
	httpGrace time.Duration
	// chainDone is closed when no sender runs any more and none will be
	// started (at once in unicast mode).
	chainDone chan struct{}
	// decoding bounds the status reports decoded at once.
	decoding chan struct{}
}

// New checks cfg and scans the image folder; it starts nothing.
func New(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = log.New(os.Stderr, "", log.LstdFlags)
	}
	if cfg.Command == nil {
		cfg.Command = exec.CommandContext
	}
	if cfg.Sender.Program == "" {
		cfg.Sender.Program = "udp-sender"
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeMulticast
	}
	if cfg.After == "" {
		cfg.After = "reboot"
	}
	cfg.Limits.setDefaults()
	switch cfg.Mode {
	case ModeMulticast:
		if err := cfg.Sender.validate(); err != nil {
			return nil, err
		}
		if _, err := exec.LookPath(cfg.Sender.Program); err != nil {
			return nil, fmt.Errorf("%s not found (Debian package udpcast): %w", cfg.Sender.Program, err)
		}
	case ModeUnicast:
		if cfg.Rolling {
			return nil, fmt.Errorf("rolling sessions are multicast sessions; unicast clients need none")
		}
	default:
		return nil, fmt.Errorf("mode %q is neither %s nor %s", cfg.Mode, ModeMulticast, ModeUnicast)
	}
	switch cfg.After {
	case "reboot", "poweroff", "shell":
	default:
		return nil, fmt.Errorf("after %q is not reboot, poweroff or shell", cfg.After)
	}
	if cfg.Address != "" && net.ParseIP(cfg.Address) == nil {
		return nil, fmt.Errorf("address %q is not an IP address", cfg.Address)
	}
	for _, f := range append([]string{cfg.Kernel}, cfg.Initrds...) {
		if f == "" {
			continue
		}
		if info, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("boot file: %w", err)
		} else if !info.Mode().IsRegular() {
			return nil, fmt.Errorf("boot file %s is not a regular file", f)
		}
	}
	root, err := os.OpenRoot(cfg.Images)
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	image, err := FindImage(cfg.Images, cfg.Image)
	if err != nil {
		root.Close()
		return nil, err
	}
	cfg.Image = image
	streams, err := ScanImage(filepath.Join(cfg.Images, image))
	if err == nil {
		err = checkStreams(root, image, streams)
	}
	if err == nil && cfg.Rolling && portSlots(cfg.Sender, len(streams)) < 2 {
		err = fmt.Errorf("--portbase %d leaves no room for a second session's %d ports below 65536", cfg.Sender.PortBase, 2*len(streams))
	}
	if err != nil {
		root.Close()
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		streams:   streams,
		root:      root,
		clients:   newClients(cfg.Limits.MaxClients, cfg.Limits.InventoryBudget),
		stopGrace: 5 * time.Second,
		httpGrace: 3 * time.Second,
		chainDone: make(chan struct{}),
		decoding:  make(chan struct{}, 32),
	}
	s.sessions = newSessions(image, cfg.Mode, cfg.Sender, streams, cfg.Rolling, cfg.Limits.MaxClients)
	s.sessions.run = s.runSession
	s.handler = s.routes()
	return s, nil
}

// checkStreams opens every file of the streams through root, as the
// senders will: a symlink that leads out of the images folder is refused
// now rather than when its partition's turn comes.
func checkStreams(root *os.Root, image string, streams []ImageStream) error {
	for _, st := range streams {
		for _, name := range st.Files {
			info, err := root.Stat(path.Join(image, name))
			if err != nil {
				return fmt.Errorf("image %s: %w (a partition image must be inside --images)", image, err)
			}
			if !info.Mode().IsRegular() {
				return fmt.Errorf("image %s: %s is not a regular file", image, name)
			}
		}
	}
	return nil
}

// runSession sends one session's partitions with its own chain of
// udp-senders.
func (s *Server) runSession(ctx context.Context, st *session) {
	c := &chain{
		cfg:       st.config,
		root:      s.root,
		image:     s.cfg.Image,
		streams:   s.streams,
		session:   st,
		command:   s.cfg.Command,
		log:       s.cfg.Log,
		stopGrace: s.stopGrace,
	}
	if s.cfg.Rolling {
		s.cfg.Log.Printf("session %d: port base %d, %d receiver(s)", st.s.ID, st.config.PortBase, st.config.Clients)
	}
	if err := c.run(ctx); err != nil && ctx.Err() == nil {
		s.cfg.Log.Printf("multicast session %d aborted: %v", st.s.ID, err)
	}
}

// Image returns the name of the image being served and its streams.
func (s *Server) Image() (string, []ImageStream) { return s.cfg.Image, s.streams }

// Handler serves the HTTP side.
func (s *Server) Handler() http.Handler { return s.handler }

// Run serves HTTP on ln and runs the sender chain until ctx is cancelled;
// then it stops the running udp-sender, waits for it, and shuts the HTTP
// server down. A failed sender does not end Run: the status page and
// /api/session say what happened.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	defer s.root.Close()
	lim := s.cfg.Limits
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: min(10*time.Second, lim.ReadTimeout),
		ReadTimeout:       lim.ReadTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          s.cfg.Log,
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(netutil.LimitListener(ln, lim.MaxConns)) }()

	chainCtx, stopChain := context.WithCancel(ctx)
	defer stopChain()
	go func() {
		defer close(s.chainDone)
		if s.cfg.Mode != ModeMulticast {
			return
		}
		s.sessions.loop(chainCtx)
	}()

	var err error
	select {
	case <-ctx.Done():
	case err = <-served:
		err = fmt.Errorf("http: %w", err)
	}
	s.sessions.setStopping()
	stopChain()
	<-s.chainDone
	shutdown, cancel := context.WithTimeout(context.Background(), s.httpGrace)
	defer cancel()
	serr := hs.Shutdown(shutdown)
	if errors.Is(serr, context.DeadlineExceeded) {
		// A connection that is still open is not a failure to stop: a
		// client's transport may have dialled a spare connection it never
		// sent a request on, which net/http waits 5 s for. Close it.
		s.cfg.Log.Printf("http: closing the connections still open %s after stopping", s.httpGrace)
		hs.Close() // the listener is already closed; its second close's error says nothing
		serr = nil
	}
	if serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// ChainDone is closed once no sender runs any more and none will be
// started: when session 1 has ended, or with rolling sessions when Run
// stops.
func (s *Server) ChainDone() <-chan struct{} { return s.chainDone }
