package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/imgcast/imgcast/pkg/imaging"
	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/manifest"
	"github.com/imgcast/imgcast/pkg/mcastcheck"
	"github.com/imgcast/imgcast/pkg/receiver"
	"github.com/imgcast/imgcast/pkg/restore"
	"github.com/imgcast/imgcast/pkg/status"
)

// The agent's job, once the network is up, is the imaging job of
// pkg/imaging (imgcast.mode=multicast or unicast) or the debug shell
// (imgcast.mode=debug). The imaging job gets everything through one
// imaging.Config, built here from the settings.

// imagingConfig is the imaging job the settings describe, on the network
// the agent brought up.
func (a *agent) imagingConfig() imaging.Config {
	s := a.settings
	cfg := imaging.Config{
		Image:              s.Image,
		Transfer:           imaging.Transfer(s.Mode),
		FallbackHTTP:       s.Fallback == "http",
		Disk:               a.diskSource(a.diskWait()),
		PortBase:           s.PortBase,
		Interface:          a.network.NIC.Name,
		Rendezvous:         rendezvous(s),
		TTL:                s.TTL,
		FirstStartTimeout:  s.StartTimeout,
		NextStartTimeout:   s.NextStartTimeout,
		ReceiveTimeout:     s.ReceiveTimeout,
		IGMPReportInterval: igmpReportInterval(s.IGMPInterval),
		SessionWait:        s.SessionWait,
		Receive:            a.receive,
		ReportURL:          s.Report,
		SessionURL:         s.Session,
		MAC:                a.network.NIC.MAC.String(),
		Console:            a.console,
		ConsoleTTY:         isTerminal(a.stdout),
		Logf:               a.logf,
		Debugf:             a.debugf(),
		SysRoot:            a.root,
	}
	if l := a.network.Lease(); l != nil && l.Address != nil {
		cfg.IP = l.Address.IP.String()
	}
	if cfg.ReportURL == "" && s.Server != nil {
		cfg.ReportURL = fmt.Sprintf("http://%s/api/status", net.JoinHostPort(s.Server.String(), "8080"))
	}
	return cfg
}

// diskWait is how the agent waits for its disk: imgcast.disk or the
// choice rule, woken by the device events of driver loading, up to
// imgcast.disktimeout.
func (a *agent) diskWait() inventory.DiskWait {
	w := inventory.DiskWait{Root: a.root, Named: a.settings.Disk, Timeout: a.settings.DiskTimeout}
	if a.drivers != nil {
		w.Changed = a.drivers.Changed
		w.Loaded = a.drivers.Settled()
		w.LastChange = a.drivers.LastChange
	}
	return w
}

// imageJob runs the imaging job of imgcast.mode.
func (a *agent) imageJob(ctx context.Context) error {
	if a.settings.Image == "" {
		return hintError{errors.New("no image folder given"),
			"set imgcast.image=http://SERVER:PORT/images/NAME/ in the boot script (imgcast-server's boot.ipxe does)"}
	}
	cfg := a.imagingConfig()
	key, err := manifest.LoadBuiltinKey(a.root)
	if err != nil {
		return hintError{fmt.Errorf("the boot image's public key: %w", err),
			"rebuild the boot image with a key written by imgcast keygen (make initramfs PUBKEY=NAME.pub)"}
	}
	if key != nil {
		cfg.PublicKey = key
		a.logf("this boot image has a public key (%s): only an image with a manifest signed by it is written", manifest.BuiltinKeyPath)
	}
	if a.settings.MulticastCheck {
		cfg.MulticastCheck = a.checkMulticast(ctx, cfg.ReportURL)
	}
	err = runImaging(ctx, cfg)
	if a.settings.Verbose {
		a.logf("memory: %s", peakMemory())
	}
	return err
}

// peakMemory is the agent's peak resident memory (VmHWM) and the memory
// the kernel has available, to check the 256 MiB budget.
func peakMemory() string {
	field := func(path, name string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			return "?"
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, name+":"); ok {
				return strings.TrimSpace(v)
			}
		}
		return "?"
	}
	return fmt.Sprintf("peak resident %s (VmHWM), %s available of %s", field("/proc/self/status", "VmHWM"),
		field("/proc/meminfo", "MemAvailable"), field("/proc/meminfo", "MemTotal"))
}

// checkMulticast runs the multicast check against the imaging server
// (imgcast.mcastcheck=1) and returns what the status reports carry. A
// problem, or a check that cannot run, is shown and reported; imaging goes
// on either way (it may still work, and the server shows why it may not).
func (a *agent) checkMulticast(ctx context.Context, reportURL string) *status.MulticastCheck {
	opt := mcastcheck.Options{Interface: a.network.NIC.Name}
	if u, err := url.Parse(reportURL); err == nil && reportURL != "" {
		opt.Server = u.Host // imgcast-server's HTTP address offers the test stream
	} else if s := a.settings.serverAddr(); s != nil {
		opt.Server = s.String()
	}
	a.logf("multicast check against %s on %s", opt.Server, opt.Interface)
	res, err := a.mcastCheck(ctx, opt, func(line string) { fmt.Fprintln(a.console, line) })
	var m *status.MulticastCheck
	switch {
	case ctx.Err() != nil:
		return nil
	case err != nil:
		m = &status.MulticastCheck{Verdict: fmt.Sprintf("PROBLEM — the multicast check could not run: %v", err)}
	default:
		m = res.StatusReport()
	}
	if !m.OK() {
		fmt.Fprintf(a.stdout, "\n*** MULTICAST CHECK: %s ***\nImaging goes on; the verdict is reported to the server.\n\n", m.Verdict)
	}
	return m
}

// igmpReportInterval maps imgcast.igmpinterval (0: off) to the receiver's
// IGMPReportInterval (0: its default, negative: off).
func igmpReportInterval(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// runImaging runs one imaging job and says what it did.
func runImaging(ctx context.Context, cfg imaging.Config) error {
	res, err := imaging.Run(ctx, cfg)
	if err != nil {
		return withHint(err)
	}
	for _, p := range res.Partitions {
		cfg.Logf("partition %d (%s, %s): %d bytes received in %s, wire %.1f MB/s, disk %.1f MB/s",
			p.Partition, p.File, p.Transfer, p.Received, p.Elapsed.Round(time.Millisecond), p.WireRate()/1e6, p.DiskRate()/1e6)
	}
	cfg.Logf("image written to %s in %s (%s)", res.Disk.Path, res.Elapsed.Round(time.Millisecond), res.Transfer)
	return nil
}

// debugJob prints the banner and gives the shell. When the shell exits
// the agent does imgcast.after (reboot unless it says poweroff).
func (a *agent) debugJob() {
	a.printBanner()
	a.startShell("imgcast.mode=debug")
	if a.settings.After == AfterShell {
		a.settings.After = AfterReboot // the shell has been had
	}
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
	var hinter Hinter
	if errors.As(err, &hinter) {
		return err
	}
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
	case errors.Is(err, manifest.ErrManifest):
		hint = "a public key is set (built into the boot image, or -pubkey) and the image folder does not verify against it: sign the folder (imgcast sign -key NAME.key DIR, again after every change, or imgcast-server --sign-key); a chunk that does not match means the files changed after signing or someone on the network injected data"
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
