// Package imaging runs one imaging job on a booted client: it reads an
// image folder's metadata, chooses and checks the disk, reports ready,
// writes the partition table, then receives each partition image — by
// UDPcast multicast or over HTTP — straight into restore, verifies what it
// wrote, and reports done or failed.
//
// Nothing is written to the disk before every check that can be made up
// front has passed (the table fits the disk, sector sizes match, the
// multicast session can still be joined), and each partition image's header
// is checked against its partition before its first block is written.
package imaging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/restore"
	"github.com/imgcast/imgcast/pkg/restore/imagedir"
	"github.com/imgcast/imgcast/pkg/restore/ptable"
	"github.com/imgcast/imgcast/pkg/status"
)

// Mode is how partition images reach the client.
type Mode string

// The transfer modes.
const (
	Multicast Mode = "multicast" // UDPcast streams from udp-sender
	Unicast   Mode = "unicast"   // the image files over HTTP
)

// ErrNoSender is wrapped by a Receiver's error when no sender answered
// within its start timeout and nothing was written.
var ErrNoSender = errors.New("no sender answered")

// Stream names one partition's multicast stream.
type Stream struct {
	Index     int    // the i-th partition that has an image, from 0
	Partition int    // its partition number
	PortBase  int    // the UDPcast port base: Job.PortBase + 2*Index
	File      string // the image's name, e.g. d1p2.img
}

// Receiver receives one multicast stream into w and returns when the
// stream has ended. An error must wrap ErrNoSender when no sender answered
// and nothing was written to w.
type Receiver interface {
	Receive(ctx context.Context, s Stream, w io.Writer) error
}

// Reporter takes status updates; it must never block (status.Reporter).
type Reporter interface {
	Update(status.Report)
}

// Job is one imaging run. Folder, Mode and (for multicast) Receiver are
// required; the zero value of everything else is a sensible default.
type Job struct {
	// Folder is the image folder (imgcast.image).
	Folder imagedir.Folder
	// Disk is the device (or image file) to write; empty: the first
	// non-removable disk large enough for the image.
	Disk string
	// SysRoot is the root the inventory is read from ("/" when empty).
	SysRoot string
	// ChooseDisk, when set and Disk is empty, picks the disk for an image
	// that needs need bytes (the agent waits for disks to appear). The
	// default picks from the inventory at once.
	ChooseDisk func(ctx context.Context, need uint64) (string, error)

	Mode Mode
	// FallbackHTTP switches to unicast when no sender answers or the
	// multicast session cannot be joined any more (imgcast.fallback=http).
	FallbackHTTP bool
	Receiver     Receiver
	// PortBase is the first stream's port base; stream i uses +2*i.
	PortBase int
	// RequireStreamHeader refuses multicast streams that do not begin with
	// a FOGMC1 header naming their file. Without it a header is checked
	// when present and streams without one are accepted.
	RequireStreamHeader bool
	// SessionURL, when set, is asked before the first stream whether the
	// server's multicast session can still be joined.
	SessionURL string
	HTTPClient *http.Client

	// Reporter gets the job's state; MAC, IP and Hostname identify the
	// machine in the reports.
	Reporter          Reporter
	MAC, IP, Hostname string

	IgnoreChecksums bool
	// Console receives the operator's view: a summary, then a progress
	// line per partition. ConsoleTTY redraws progress lines in place.
	Console    io.Writer
	ConsoleTTY bool
	// Logf receives details (warnings, decisions); may be nil.
	Logf func(format string, args ...any)

	// ProgressInterval is how often progress is drawn and reported
	// (default 1 s).
	ProgressInterval time.Duration
}

// Result summarises a successful job.
type Result struct {
	Disk       string
	Mode       Mode // the mode that delivered the data (after any fallback)
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
	Mode      Mode
}

// WireRate and DiskRate are the partition's average rates in bytes/s.
func (p PartitionResult) WireRate() float64 { return rate(p.Received, p.Elapsed) }

// DiskRate is the partition's average write rate in bytes/s.
func (p PartitionResult) DiskRate() float64 { return rate(p.Written, p.Elapsed) }

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Run runs the job. It reports failed (with the reason) or done before it
// returns, and returns the same error it reported.
func (j *Job) Run(ctx context.Context) (*Result, error) {
	start := time.Now()
	res, err := j.run(ctx)
	if err != nil {
		j.report(status.Report{State: status.Failed, Error: err.Error()})
		j.printf("\nIMAGING FAILED: %v\n", err)
		return nil, err
	}
	res.Elapsed = time.Since(start)
	j.report(status.Report{State: status.Done, Partitions: len(res.Partitions)})
	j.printf("Imaging done in %s: %s written to %s.\n", res.Elapsed.Round(100*time.Millisecond),
		inventory.HumanBytes(uint64(res.written())), res.Disk)
	return res, nil
}

func (r *Result) written() int64 {
	var n int64
	for _, p := range r.Partitions {
		n += p.Written
	}
	return n
}

func (j *Job) run(ctx context.Context) (*Result, error) {
	if j.Folder == nil {
		return nil, errors.New("no image folder given (imgcast.image)")
	}
	mode := j.Mode
	switch mode {
	case Multicast:
		if j.Receiver == nil {
			return nil, errors.New("multicast mode needs a receiver")
		}
	case Unicast:
	default:
		return nil, fmt.Errorf("unknown mode %q (want multicast or unicast)", mode)
	}

	j.printf("Reading image metadata from %s\n", j.Folder)
	di, err := restore.LoadDiskImage(ctx, j.Folder, 1)
	if err != nil {
		return nil, fmt.Errorf("reading the image folder: %w", err)
	}
	if len(di.Images) == 0 {
		return nil, fmt.Errorf("%s has no partition images (d1pN.img)", j.Folder)
	}

	machine, invErr := inventory.Read(j.sysRoot())
	if invErr != nil {
		j.logf("inventory incomplete: %v", invErr)
	}
	diskPath, err := j.chooseDisk(ctx, di, machine)
	if err != nil {
		return nil, err
	}
	disk, geom, err := openDisk(diskPath, di.Dump.SectorSize)
	if err != nil {
		return nil, err
	}
	defer disk.Close()
	plan, err := restore.NewPlan(di, geom)
	if err != nil {
		return nil, fmt.Errorf("checking the image against %s: %w", diskPath, err)
	}
	images := withImages(plan)
	j.printSummary(di, images, diskPath, geom)
	j.report(status.Report{State: status.Ready, Partitions: len(images), Inventory: &machine})

	if mode == Multicast {
		if mode, err = j.checkSession(ctx); err != nil {
			return nil, err
		}
	}

	j.report(status.Report{State: status.Writing, Partitions: len(images)})
	j.printf("Writing the %s partition table to %s\n", di.Dump.Label, diskPath)
	if err := plan.WriteTable(disk); err != nil {
		return nil, fmt.Errorf("writing the partition table to %s: %w", diskPath, err)
	}

	res := &Result{Disk: diskPath, Mode: mode}
	for i, pp := range images {
		pr, err := j.restorePartition(ctx, plan, di, disk, i, pp, &mode, len(images))
		if err != nil {
			return nil, err
		}
		res.Partitions = append(res.Partitions, pr)
	}
	res.Mode = mode

	j.report(status.Report{State: status.Verifying, Partitions: len(images)})
	if err := verifyTable(disk, plan); err != nil {
		return nil, fmt.Errorf("verifying %s: %w", diskPath, err)
	}
	if err := disk.Sync(); err != nil {
		return nil, fmt.Errorf("syncing %s: %w", diskPath, err)
	}
	// The table was written through the whole disk and the kernel told to
	// re-read it; its view matters to whatever runs next without a reboot.
	if parts, isDev := kernelPartitions(j.sysRoot(), diskPath); isDev {
		if len(parts) == len(plan.Partitions) {
			j.printf("The kernel sees the new partitions: %s\n", strings.Join(parts, " "))
		} else {
			j.printf("Warning: the kernel sees %d partitions on %s (%s), the image has %d; they appear at the next boot\n",
				len(parts), diskPath, strings.Join(parts, " "), len(plan.Partitions))
		}
	}
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

func (j *Job) sysRoot() string {
	if j.SysRoot == "" {
		return "/"
	}
	return j.SysRoot
}

// chooseDisk returns the configured disk or the first suitable one.
func (j *Job) chooseDisk(ctx context.Context, di *restore.DiskImage, m inventory.Machine) (string, error) {
	if j.Disk != "" {
		return j.Disk, nil
	}
	need := requiredBytes(di)
	if j.ChooseDisk != nil {
		return j.ChooseDisk(ctx, need)
	}
	d, err := inventory.ChooseDisk(m.Disks, need)
	if err != nil {
		return "", fmt.Errorf("no disk to write the image to (it needs %s): %w; set imgcast.disk to choose one",
			inventory.HumanBytes(need), err)
	}
	return d.Path, nil
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

// openDisk opens the target exclusively (a mounted disk is refused) and
// reads its geometry.
func openDisk(path string, sectorSize int) (*os.File, ptable.Geometry, error) {
	flags := os.O_RDWR
	if st, err := os.Stat(path); err == nil && st.Mode()&os.ModeDevice != 0 {
		flags |= os.O_EXCL
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return nil, ptable.Geometry{}, fmt.Errorf("opening disk %s (does it exist, is it in use?): %w", path, err)
	}
	g, err := ptable.ReadGeometry(f, int64(sectorSize))
	if err != nil {
		f.Close()
		return nil, ptable.Geometry{}, fmt.Errorf("reading the geometry of %s: %w", path, err)
	}
	return f, g, nil
}

// checkSession asks the server whether its multicast session can still be
// joined, and decides the mode: a session that cannot be joined is an
// error, or a switch to unicast with FallbackHTTP.
func (j *Job) checkSession(ctx context.Context) (Mode, error) {
	if j.SessionURL == "" {
		return Multicast, nil
	}
	client := j.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	s, err := status.FetchSession(ctx, client, j.SessionURL)
	if err != nil {
		// A FOG server, or an older imgcast-server, has no session
		// endpoint: go ahead; the receiver's start timeout still bounds
		// the wait.
		j.logf("session check skipped: %v", err)
		return Multicast, nil
	}
	if err := s.CanJoin(); err != nil {
		if j.FallbackHTTP {
			j.printf("Multicast session cannot be joined (%s); falling back to HTTP (imgcast.fallback=http)\n", s.Message)
			return Unicast, nil
		}
		return "", err
	}
	if s.Phase == status.Unicast {
		j.printf("The server runs no multicast session; fetching the image over HTTP\n")
		return Unicast, nil
	}
	return Multicast, nil
}

func (j *Job) report(r status.Report) {
	if j.Reporter == nil {
		return
	}
	r.MAC, r.IP, r.Hostname = j.MAC, j.IP, j.Hostname
	j.Reporter.Update(r)
}

func (j *Job) printf(format string, args ...any) {
	if j.Console != nil {
		fmt.Fprintf(j.Console, format, args...)
	}
}

func (j *Job) logf(format string, args ...any) {
	if j.Logf != nil {
		j.Logf(format, args...)
	}
}
