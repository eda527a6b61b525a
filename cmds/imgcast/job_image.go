package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/term"

	"github.com/imgcast/imgcast/pkg/imaging"
	"github.com/imgcast/imgcast/pkg/receiver"
	"github.com/imgcast/imgcast/pkg/restore"
	"github.com/imgcast/imgcast/pkg/restore/imagedir"
	"github.com/imgcast/imgcast/pkg/status"
)

// The imaging jobs: the image folder's metadata over HTTP, the disk chosen
// and checked, the ready report, then every partition received (multicast)
// or fetched (unicast) straight into restore, then done or failed.

func multicastJob(ctx context.Context, env *Env) error { return imageJob(ctx, env, imaging.Multicast) }

func unicastJob(ctx context.Context, env *Env) error { return imageJob(ctx, env, imaging.Unicast) }

// reportFlushTimeout bounds how long the final report may hold up the
// after-action when the server is unreachable.
const reportFlushTimeout = 10 * time.Second

func imageJob(ctx context.Context, env *Env, mode imaging.Mode) error {
	s := env.Settings
	c := imageConfig{
		image: s.Image, disk: s.Disk, mode: mode, fallbackHTTP: s.Fallback == "http",
		portBase: s.PortBase, iface: env.Network.NIC.Name, rdv: rendezvous(s),
		startTimeout: s.StartTimeout, receiveTimeout: s.ReceiveTimeout,
		reportURL: s.Report, sessionURL: s.Session,
		mac:     env.Network.NIC.MAC.String(),
		console: env.Stdout, logf: env.Logf,
		chooseDisk: func(ctx context.Context, need uint64) (string, error) {
			d, err := env.Disk(ctx, need)
			return d.Path, err
		},
	}
	if l := env.Network.Lease(); l != nil && l.Address != nil {
		c.ip = l.Address.IP.String()
	}
	if c.reportURL == "" && s.Server != nil {
		c.reportURL = fmt.Sprintf("http://%s/api/status", net.JoinHostPort(s.Server.String(), "8080"))
	}
	return runImaging(ctx, c)
}

// imageConfig is what an imaging run needs, from the kernel command line
// (the agent) or from flags (imgcast image).
type imageConfig struct {
	image, disk  string
	mode         imaging.Mode
	fallbackHTTP bool
	portBase     int
	iface        string
	rdv          netip.Addr
	startTimeout time.Duration
	// receiveTimeout bounds a sender's silence mid-stream.
	receiveTimeout        time.Duration
	reportURL, sessionURL string
	mac, ip               string
	console               io.Writer
	logf                  func(string, ...any)
	chooseDisk            func(ctx context.Context, need uint64) (string, error)
}

// runImaging runs one imaging job and flushes its final report.
func runImaging(ctx context.Context, c imageConfig) error {
	if c.image == "" {
		return hintError{errors.New("no image folder given"),
			"set imgcast.image=http://SERVER:PORT/images/NAME/ in the boot script (imgcast-server's boot.ipxe does)"}
	}
	folder, err := imagedir.Open(c.image)
	if err != nil {
		return hintError{fmt.Errorf("image folder %q: %w", c.image, err), "the image must be the URL (or path) of an image folder"}
	}
	job := &imaging.Job{
		Folder:       folder,
		Disk:         c.disk,
		Mode:         c.mode,
		FallbackHTTP: c.fallbackHTTP,
		PortBase:     c.portBase,
		// Our server always sends the FOGMC1 header; other servers may
		// not, so a stream without one is accepted (one with a wrong id
		// never is).
		MAC: c.mac, IP: c.ip,
		Console:    c.console,
		ConsoleTTY: isTerminal(c.console),
		Logf:       c.logf,
		ChooseDisk: c.chooseDisk,
	}
	if c.mode == imaging.Multicast {
		job.Receiver = &imaging.UDPCast{
			Interface:         c.iface,
			Rendezvous:        c.rdv,
			FirstStartTimeout: c.startTimeout,
			StartTimeout:      c.startTimeout,
			ReceiveTimeout:    c.receiveTimeout,
		}
	}
	if c.reportURL != "" {
		rep := status.NewReporter(c.reportURL, status.WithLogf(c.logf))
		job.Reporter = rep
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), reportFlushTimeout)
			defer cancel()
			if err := rep.Close(ctx); err != nil {
				c.logf("the final status report did not reach %s: %v", c.reportURL, err)
			}
		}()
		job.SessionURL = c.sessionURL
		if job.SessionURL == "" {
			job.SessionURL, _ = status.SessionURL(c.reportURL)
		}
	}

	res, err := job.Run(ctx)
	if err != nil {
		return withHint(err)
	}
	for _, p := range res.Partitions {
		c.logf("partition %d (%s, %s): %d bytes received in %s, wire %.1f MB/s, disk %.1f MB/s",
			p.Partition, p.File, p.Mode, p.Received, p.Elapsed.Round(time.Millisecond), p.WireRate()/1e6, p.DiskRate()/1e6)
	}
	c.logf("image written to %s in %s (%s)", res.Disk, res.Elapsed.Round(time.Millisecond), res.Mode)
	return nil
}

// rendezvous is where the udpcast handshake goes: imgcast.rdv, else the
// server (a unicast rendezvous works across routers and in both start
// orders, because udp-sender also listens for it on its own address).
func rendezvous(s *Settings) netip.Addr {
	ip := s.Rendezvous
	if ip == nil {
		ip = s.Server
	}
	if a, ok := netip.AddrFromSlice(ip.To4()); ok {
		return a
	}
	return netip.Addr{}
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// hintError is an error with what the operator should check.
type hintError struct {
	err  error
	hint string
}

func (e hintError) Error() string { return e.err.Error() }
func (e hintError) Unwrap() error { return e.err }
func (e hintError) Hint() string  { return e.hint }

// withHint adds what to check to an imaging error, by its kind.
func withHint(err error) error {
	var hint string
	switch {
	case errors.Is(err, imaging.ErrNoSender):
		hint = "is imgcast-server (udp-sender) running for this image, on this network? imgcast.portbase must match its --portbase; imgcast.fallback=http or imgcast.mode=unicast fetch the image over HTTP instead"
	case errors.Is(err, status.ErrNotJoinable):
		hint = "the server's status page (/) shows the session; every machine must boot before the first partition starts"
	case errors.Is(err, receiver.ErrReceiveTimeout):
		hint = "the sender stopped in the middle of a stream: see the server's log (was udp-sender stopped, or did it drop this machine?)"
	case errors.Is(err, receiver.ErrDropped):
		hint = "this machine fell behind the others: check its link speed and duplex; the server can limit the rate (--max-bitrate) or drop slow clients sooner"
	case errors.Is(err, restore.ErrDigest), errors.Is(err, restore.ErrChecksum), errors.Is(err, restore.ErrCorrupt):
		hint = "the image does not match its checksums: the image files on the server are damaged or were changed after capture (d1.sha256)"
	case errors.Is(err, restore.ErrDoesNotFit), errors.Is(err, restore.ErrSectorSize):
		hint = "this disk cannot hold the image's partitions: choose another disk with imgcast.disk, or use an image made for this disk"
	case errors.Is(err, restore.ErrTruncated):
		hint = "the stream ended early: see the server's log; the disk is only partly written and will not boot"
	default:
		hint = "the server's log and status page (/) show its side; imgcast.mode=debug gives a shell to investigate"
	}
	return hintError{err, hint}
}
