// Package imaging runs one imaging job on a booted client: it reads an
// image folder's metadata, waits for and chooses the disk, checks the
// image against it, reports ready, writes the partition table, then
// receives each partition image — by UDPcast multicast or over HTTP —
// straight into restore, verifies what it wrote, and reports done or
// failed. Everything the job needs comes in one Config.
//
// Nothing is written to the disk before every check that can be made up
// front has passed (the table fits the disk, sector sizes match, the
// multicast session can still be joined and sends every partition), and
// each partition image's header is checked against its partition before
// its first block is written.
package imaging

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/imgcast/imgcast/internal/bytesize"
	"github.com/imgcast/imgcast/internal/recovered"
	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/receiver"
	"github.com/imgcast/imgcast/pkg/restore"
	"github.com/imgcast/imgcast/pkg/status"
)

// Transfer is how partition images reach the client.
type Transfer string

// The transfers.
const (
	Multicast Transfer = "multicast" // UDPcast streams from udp-sender
	Unicast   Transfer = "unicast"   // the image files over HTTP
)

// Defaults for zero Config fields.
const (
	// DefaultNextStartTimeout bounds the wait for the sender of every
	// stream after the first: it starts as soon as the previous stream
	// ended, so a long wait means the session broke.
	DefaultNextStartTimeout = time.Minute
	// DefaultTTL is the TTL of the receiver's multicast packets, as FOG
	// runs udp-sender and udp-receiver (--ttl 32).
	DefaultTTL = 32
	// reportFlushTimeout bounds how long the final report may hold up the
	// end of the job when the server is unreachable.
	reportFlushTimeout = 10 * time.Second
)

// ErrNoSender is wrapped by the error of a multicast stream no sender
// answered for (within its start timeout); nothing was written.
var ErrNoSender = errors.New("no sender answered")

// DiskSource gives the disk to write for an image that needs minSize
// bytes: it waits until the disk has appeared and chooses it
// (inventory.DiskWait), or names a fixed device or image file (DiskPath).
type DiskSource interface {
	WaitDisk(ctx context.Context, minSize uint64) (inventory.Disk, error)
}

// DiskPath is a DiskSource that is always the same device or image file,
// used as it is (imgcast image -disk FILE).
type DiskPath string

// WaitDisk implements DiskSource.
func (p DiskPath) WaitDisk(context.Context, uint64) (inventory.Disk, error) {
	st, err := os.Stat(string(p))
	if err != nil {
		return inventory.Disk{}, fmt.Errorf("disk %s: %w", p, err)
	}
	return inventory.Disk{Name: filepath.Base(string(p)), Path: string(p), SizeBytes: uint64(max(st.Size(), 0))}, nil
}

// ReceiveFunc receives one UDPcast stream into w (receiver.Receive).
type ReceiveFunc func(ctx context.Context, cfg receiver.Config, w io.Writer) (receiver.Progress, error)

// Reporter takes status updates; it must never block (status.Reporter).
type Reporter interface {
	Update(status.Report)
}

// Config is one imaging job: everything from the kernel command line (the
// agent) or from flags (imgcast image). Image, Transfer and Disk are
// required; the zero value of everything else is a sensible default.
type Config struct {
	// Image is the image folder: an http(s) URL or a local directory.
	Image    string
	Transfer Transfer
	// FallbackHTTP switches to unicast when no sender answers or the
	// multicast session cannot be joined any more (imgcast.fallback=http).
	FallbackHTTP bool
	// Disk gives the disk to write.
	Disk DiskSource

	// PortBase is the first stream's UDPcast port base; the streams'
	// ports come from the server's session when it lists them, else from
	// imgcast-server's layout (package layout).
	PortBase int
	// Interface is the NIC to receive on; empty lets the receiver choose.
	Interface string
	// Rendezvous is where the UDPcast handshake goes (the server, or a
	// multicast group); invalid means the interface's broadcast address.
	Rendezvous netip.Addr
	// TTL of the receiver's multicast packets (0: DefaultTTL). Without a
	// Rendezvous it is 1: udpcast moves the handshake from the broadcast
	// address to 224.0.0.1 for any other TTL.
	TTL int
	// FirstStartTimeout bounds the wait for the first stream's sender (the
	// server waits for all its clients first); NextStartTimeout for every
	// later one (0: DefaultNextStartTimeout); ReceiveTimeout a sender's
	// silence mid-stream. 0 waits forever.
	FirstStartTimeout, NextStartTimeout, ReceiveTimeout time.Duration
	// RequireStreamHeader refuses multicast streams that do not begin with
	// a FOGMC1 header naming their file. Without it a header is checked
	// when present and streams without one are accepted.
	RequireStreamHeader bool
	// Receive receives a stream (nil: receiver.Receive).
	Receive ReceiveFunc

	// ReportURL is where status reports are POSTed; SessionURL the
	// server's session, asked before the first stream (default: derived
	// from ReportURL). Reporter, when set, takes the reports instead.
	ReportURL, SessionURL string
	Reporter              Reporter
	HTTPClient            *http.Client
	// MAC, IP and Hostname identify the machine in the reports.
	MAC, IP, Hostname string

	IgnoreChecksums bool
	// PublicKey, when set, requires the image folder's signed manifest
	// (d1.manifest and its signature, by this key): the table is written
	// only after the metadata verifies, and every 4 MiB chunk of each
	// partition image (multicast or HTTP) is checked before it is
	// decompressed. ImageID is the image id the manifest must name
	// (default: the folder's name).
	PublicKey ed25519.PublicKey
	ImageID   string
	// IGMPReportInterval is the receiver's IGMP keep-alive
	// (receiver.Config.IGMPReportInterval: 0 is its default, 5 s;
	// negative turns it off).
	IGMPReportInterval time.Duration
	// SessionWait bounds the wait for a queued rolling session (the
	// server's next session, when this machine came too late for the
	// running one); 0 waits as long as the server keeps it queued.
	SessionWait time.Duration
	// MulticastCheck, when set, is the result of the multicast check the
	// client ran before the job; it goes with the ready report.
	MulticastCheck *status.MulticastCheck
	// Console receives the operator's view: a summary, then a progress
	// line per partition. ConsoleTTY redraws progress lines in place.
	Console    io.Writer
	ConsoleTTY bool
	// Logf receives what is always worth a line on the console: decisions,
	// warnings, the receiver's messages ("Connected as #1 to …"). Debugf,
	// when set (imgcast.verbose=1), gets details too. Either may be nil.
	Logf, Debugf func(format string, args ...any)
	// ProgressInterval is how often progress is drawn and reported
	// (default 1 s).
	ProgressInterval time.Duration
	// SysRoot is the root the inventory is read from ("/" when empty).
	SysRoot string
}

// Result summarises a successful job.
type Result struct {
	Disk       inventory.Disk
	Transfer   Transfer // the transfer that delivered the data (after any fallback)
	Partitions []PartitionResult
	Elapsed    time.Duration
}

// PartitionResult is one restored partition.
type PartitionResult struct {
	Partition int
	File      string
	Received  int64 // bytes received (compressed, without a stream header)
	Written   int64 // bytes written to the disk
	Elapsed   time.Duration
	Transfer  Transfer
}

// WireRate is the partition's average receive rate in bytes/s.
func (p PartitionResult) WireRate() float64 { return rate(p.Received, p.Elapsed) }

// DiskRate is the partition's average write rate in bytes/s.
func (p PartitionResult) DiskRate() float64 { return rate(p.Written, p.Elapsed) }

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// job is one run of a Config.
type job struct {
	Config
	reporter Reporter

	mu       sync.Mutex
	cancel   context.CancelCauseFunc
	panicErr error // the first panic of a goroutine the job started
}

// Run runs the job. It reports failed (with the reason) or done before it
// returns, flushes the reports, and returns the same error it reported. A
// panic in the job, or in a goroutine it started, ends it as a failure.
func Run(ctx context.Context, cfg Config) (res *Result, err error) {
	j := &job{Config: cfg, reporter: cfg.Reporter}
	if j.reporter == nil && cfg.ReportURL != "" {
		rep := status.NewReporter(cfg.ReportURL, status.WithLogf(j.logf), status.WithOnPanic(j.onPanic))
		j.reporter = rep
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), reportFlushTimeout)
			defer cancel()
			if err := rep.Close(ctx); err != nil {
				j.logf("the final status report did not reach %s: %v", cfg.ReportURL, err)
			}
		}()
	}
	if j.SessionURL == "" && j.ReportURL != "" {
		j.SessionURL, _ = status.SessionURL(j.ReportURL)
	}
	start := time.Now()
	res, err = j.runRecovering(ctx)
	if err != nil {
		j.report(status.Report{State: status.Failed, Error: err.Error()})
		j.printf("\nIMAGING FAILED: %v\n", err)
		return nil, err
	}
	res.Elapsed = time.Since(start)
	j.report(status.Report{State: status.Done, Partitions: len(res.Partitions), Disk: &res.Disk})
	j.printf("Imaging done in %s: %s written to %s.\n", res.Elapsed.Round(100*time.Millisecond),
		bytesize.Format(res.written()), res.Disk.Path)
	return res, nil
}

// runRecovering runs the job with a panic on its own goroutine turned
// into an error, and a panic on another of its goroutines cancelling it
// and becoming its error.
func (j *job) runRecovering(ctx context.Context) (res *Result, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	j.mu.Lock()
	j.cancel = cancel
	j.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			res, err = nil, &recovered.PanicError{Where: "the imaging job", Value: r, Stack: debug.Stack()}
		}
		j.mu.Lock()
		defer j.mu.Unlock()
		if j.panicErr != nil {
			res, err = nil, j.panicErr
		}
	}()
	return j.run(ctx)
}

// onPanic takes the panic of a goroutine the job started.
func (j *job) onPanic(err error) {
	j.mu.Lock()
	if j.panicErr == nil {
		j.panicErr = err
	}
	cancel := j.cancel
	j.mu.Unlock()
	if cancel != nil {
		cancel(err)
	}
}

func (r *Result) written() int64 {
	var n int64
	for _, p := range r.Partitions {
		n += p.Written
	}
	return n
}

func (j *job) run(ctx context.Context) (*Result, error) {
	if j.Image == "" {
		return nil, errors.New("no image folder given (imgcast.image)")
	}
	if j.Disk == nil {
		return nil, errors.New("no disk source given")
	}
	transfer := j.Transfer
	switch transfer {
	case Multicast, Unicast:
	default:
		return nil, fmt.Errorf("unknown transfer %q (want multicast or unicast)", transfer)
	}

	j.printf("Reading image metadata from %s\n", j.Image)
	di, err := restore.OpenImage(ctx, j.Image, 1, restore.LoadOptions{PublicKey: j.PublicKey, ImageID: j.ImageID})
	if err != nil {
		return nil, fmt.Errorf("reading the image folder: %w", err)
	}
	if len(di.Images) == 0 {
		return nil, fmt.Errorf("%s has no partition images (d1pN.img)", di.Folder)
	}
	if di.Manifest != nil {
		j.printf("Signed manifest of image %q verified; every chunk is checked before it is written\n", di.Manifest.ImageID)
	}

	machine, invErr := inventory.Read(j.sysRoot())
	if invErr != nil {
		j.logf("inventory incomplete: %v", invErr)
	}
	need := requiredBytes(di)
	chosen, err := j.Disk.WaitDisk(ctx, need)
	if err != nil {
		return nil, err
	}
	j.logf("disk: %s", chosen)
	disk, geom, err := restore.OpenDisk(chosen.Path, int64(di.Dump.SectorSize))
	if err != nil {
		return nil, err
	}
	defer disk.Close()
	plan, err := restore.NewPlan(di, geom)
	if err != nil {
		return nil, fmt.Errorf("checking the image against %s: %w", chosen.Path, err)
	}
	images := withImages(plan)
	j.printSummary(di, images, chosen, geom.Size, geom.LogicalSectorSize)
	j.report(status.Report{State: status.Ready, Partitions: len(images), Inventory: &machine, Disk: &chosen, MulticastCheck: j.MulticastCheck})

	var streams map[int]stream
	if transfer == Multicast {
		if streams, transfer, err = j.planStreams(ctx, images); err != nil {
			return nil, err
		}
	}

	j.report(status.Report{State: status.Writing, Partitions: len(images), Disk: &chosen})
	j.printf("Writing the %s partition table to %s\n", di.Dump.Label, chosen.Path)
	res, err := j.write(ctx, plan, disk, chosen, images, streams, transfer)
	if err != nil {
		return nil, err
	}
	// The table was written through the whole disk and the kernel told to
	// re-read it; its view matters to whatever runs next without a reboot.
	if parts, isDev := kernelPartitions(j.sysRoot(), chosen.Path); isDev {

		if len(parts) == len(plan.Partitions) {
			j.printf("The kernel sees the new partitions: %s\n", strings.Join(parts, " "))
		} else {
			j.printf("Warning: the kernel sees %d partitions on %s (%s), the image has %d; they appear at the next boot\n",
				len(parts), chosen.Path, strings.Join(parts, " "), len(plan.Partitions))
		}
	}
	return res, nil
}

// write writes the table and every partition image, then reads the table
// back and syncs. When anything fails once the table was written — or
// the job panics — it wipes the table and the start of every partition
// it began to write (restore.Plan.Failed), so the disk cannot pass for an
// imaged one, and the error says what was wiped.
func (j *job) write(ctx context.Context, plan *restore.Plan, disk *os.File, chosen inventory.Disk,
	images []restore.PlannedPartition, streams map[int]stream, transfer Transfer) (res *Result, err error) {
	var written []int
	finished := false
	defer func() {
		switch {
		case err != nil:
			err = plan.Failed(disk, true, written, err)
		case !finished: // a panic is on its way up: wipe, and let it go on
			if rep, werr := plan.Wipe(disk, true, written); werr != nil {
				j.logf("wiping %s after a failure failed too: %v", chosen.Path, werr)
			} else {
				j.logf("%s was wiped after a failure (%s)", chosen.Path, rep)
			}
		}
	}()
	if err := plan.WriteTable(disk); err != nil {
		return nil, fmt.Errorf("writing the partition table to %s: %w", chosen.Path, err)
	}
	res = &Result{Disk: chosen, Transfer: transfer}
	for i, pp := range images {
		p := partition{plan: plan, disk: disk, number: pp.Number, pp: pp, index: i, count: len(images), stream: streams[pp.Number]}
		written = append(written, pp.Number)
		pr, err := j.restorePartition(ctx, p, &transfer)
		if err != nil {
			return nil, err
		}
		res.Partitions = append(res.Partitions, pr)
	}
	res.Transfer = transfer

	j.report(status.Report{State: status.Verifying, Partitions: len(images), Disk: &chosen})
	if err := plan.VerifyTable(disk); err != nil {
		return nil, fmt.Errorf("verifying %s: %w", chosen.Path, err)
	}
	if err := disk.Sync(); err != nil {
		return nil, fmt.Errorf("syncing %s: %w", chosen.Path, err)
	}
	finished = true
	return res, nil
}

// withImages lists the planned partitions that have images, in partition
// order (the order the server sends them in).
func withImages(plan *restore.Plan) []restore.PlannedPartition {
	var out []restore.PlannedPartition
	for _, pp := range plan.Partitions {
		if pp.Image != nil {
			out = append(out, pp)
		}
	}
	return out
}

func (j *job) sysRoot() string {
	if j.SysRoot == "" {
		return "/"
	}
	return j.SysRoot
}

// requiredBytes is the smallest disk the dump's partitions fit on (the
// exact check, including GPT's backup table, is restore.NewPlan's).
func requiredBytes(di *restore.DiskImage) uint64 {
	var end uint64
	for _, p := range di.Dump.Partitions {
		end = max(end, p.Start+p.Size)
	}
	return end * uint64(di.Dump.SectorSize)
}

func (j *job) report(r status.Report) {
	if j.reporter == nil {
		return
	}
	r.MAC, r.IP, r.Hostname = j.MAC, j.IP, j.Hostname
	j.reporter.Update(r)
}

func (j *job) printf(format string, args ...any) {
	if j.Console != nil {
		fmt.Fprintf(j.Console, format, args...)
	}
}

func (j *job) logf(format string, args ...any) {
	if j.Logf != nil {
		j.Logf(format, args...)
	}
}

func (j *job) debugf(format string, args ...any) {
	if j.Debugf != nil {
		j.Debugf(format, args...)
	}
}
