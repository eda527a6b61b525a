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
	"path/filepath"
	"time"
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

	Sender SenderConfig
	// Command runs programs (default exec.CommandContext).
	Command CommandFunc
	Log     *log.Logger
}

// Server serves one image.
type Server struct {
	cfg     Config
	dir     string // the image folder being sent
	streams []ImageStream
	root    *os.Root
	session *session
	clients *clients
	chain   *chain
	handler http.Handler
	// chainDone is closed when the sender chain has ended (or at once
	// in unicast mode).
	chainDone chan struct{}
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
	switch cfg.Mode {
	case ModeMulticast:
		if err := cfg.Sender.validate(); err != nil {
			return nil, err
		}
		if _, err := exec.LookPath(cfg.Sender.Program); err != nil {
			return nil, fmt.Errorf("%s not found (Debian package udpcast): %w", cfg.Sender.Program, err)
		}
	case ModeUnicast:
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
	dir := filepath.Join(cfg.Images, image)
	streams, err := ScanImage(dir)
	if err != nil {
		root.Close()
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		dir:       dir,
		streams:   streams,
		root:      root,
		session:   newSession(image, cfg.Mode, cfg.Sender, streams),
		clients:   newClients(),
		chainDone: make(chan struct{}),
	}
	s.chain = &chain{
		cfg:       cfg.Sender,
		dir:       dir,
		streams:   streams,
		session:   s.session,
		command:   cfg.Command,
		log:       cfg.Log,
		stopGrace: 5 * time.Second,
	}
	s.handler = s.routes()
	return s, nil
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
	hs := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: s.cfg.Log}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()

	chainCtx, stopChain := context.WithCancel(ctx)
	defer stopChain()
	go func() {
		defer close(s.chainDone)
		if s.cfg.Mode != ModeMulticast {
			return
		}
		if err := s.chain.run(chainCtx); err != nil && chainCtx.Err() == nil {
			s.cfg.Log.Printf("multicast session aborted: %v", err)
		}
	}()

	var err error
	select {
	case <-ctx.Done():
	case err = <-served:
		err = fmt.Errorf("http: %w", err)
	}
	s.session.setStopping()
	stopChain()
	<-s.chainDone
	shutdown, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if serr := hs.Shutdown(shutdown); serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// ChainDone is closed once the sender chain has ended.
func (s *Server) ChainDone() <-chan struct{} { return s.chainDone }
