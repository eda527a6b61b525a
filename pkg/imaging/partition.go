package imaging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/imgcast/imgcast/pkg/fogmc"
	"github.com/imgcast/imgcast/pkg/restore"
	"github.com/imgcast/imgcast/pkg/restore/partclone"
	"github.com/imgcast/imgcast/pkg/status"
)

// restorePartition receives the i-th image and restores it. *mode may
// change from multicast to unicast when FallbackHTTP allows it.
func (j *Job) restorePartition(ctx context.Context, plan *restore.Plan, di *restore.DiskImage, disk *os.File,
	i int, pp restore.PlannedPartition, mode *Mode, count int) (PartitionResult, error) {
	target, err := plan.Target(disk, pp.Number)
	if err != nil {
		return PartitionResult{}, err
	}
	if *mode == Multicast {
		pr, err := j.receive(ctx, plan, di, target, i, pp, count)
		if err == nil || !errors.Is(err, ErrNoSender) || !j.FallbackHTTP {
			return pr, err
		}
		j.printf("\n%v\nFalling back to HTTP for this and the remaining partitions (imgcast.fallback=http)\n", err)
		*mode = Unicast
	}
	return j.fetch(ctx, plan, di, target, i, pp, count)
}

// receive restores partition pp from its multicast stream: the receiver
// writes into a pipe that restore reads, so nothing is buffered beyond the
// two pipelines' own buffers.
func (j *Job) receive(ctx context.Context, plan *restore.Plan, di *restore.DiskImage, target *restore.Target,
	i int, pp restore.PlannedPartition, count int) (PartitionResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := Stream{Index: i, Partition: pp.Number, PortBase: j.PortBase + 2*i, File: pp.Image.Name}
	j.printf("Partition %d: waiting for %s on UDPcast port %d\n", pp.Number, s.File, s.PortBase)
	j.report(status.Report{State: status.Ready, Partition: pp.Number, Partitions: count, Total: pp.Image.Size()})

	pr, pw := io.Pipe()
	recvDone := make(chan error, 1)
	go func() {
		err := j.Receiver.Receive(ctx, s, pw)
		if err != nil {
			pw.CloseWithError(fmt.Errorf("receiving %s: %w", s.File, err))
		} else {
			pw.Close()
		}
		recvDone <- err
	}()
	// stop ends the receiver after a failure on our side and returns the
	// cause: the receiver's own error when it failed first (a truncated
	// stream is only the symptom of a silent sender), else err.
	stop := func(err error) error {
		cancel()
		pr.CloseWithError(errStopped)
		if rerr := <-recvDone; rerr != nil && !errors.Is(rerr, errStopped) && !errors.Is(rerr, context.Canceled) {
			return partitionError(pp.Number, rerr)
		}
		return partitionError(pp.Number, err)
	}

	src, found, err := fogmc.Strip(pr, fogmc.IDForFile(s.File))
	if err != nil {
		return PartitionResult{Partition: pp.Number, File: s.File}, stop(err)
	}
	if !found && j.RequireStreamHeader {
		return PartitionResult{Partition: pp.Number, File: s.File}, stop(fmt.Errorf(
			"the stream on port %d has no FOGMC1 header naming %s; refusing it (nothing was written)", s.PortBase, s.File))
	}
	res, err := j.restoreStream(ctx, plan, di, target, pp, count, src, Multicast)
	if err != nil {
		return res, stop(err)
	}
	if rerr := <-recvDone; rerr != nil {
		return res, partitionError(pp.Number, rerr)
	}
	return res, nil
}

// errStopped is what the receiver sees when the restore side gave up.
var errStopped = errors.New("restore stopped reading")

// fetch restores partition pp from the image files over HTTP (or a local
// folder).
func (j *Job) fetch(ctx context.Context, plan *restore.Plan, di *restore.DiskImage, target *restore.Target,
	i int, pp restore.PlannedPartition, count int) (PartitionResult, error) {
	j.printf("Partition %d: fetching %s from %s\n", pp.Number, pp.Image.Name, j.Folder)
	r := pp.Image.Open(ctx, j.Folder)
	defer r.Close()
	res, err := j.restoreStream(ctx, plan, di, target, pp, count, r, Unicast)
	if err != nil {
		return res, partitionError(pp.Number, err)
	}
	return res, nil
}

// restoreStream runs restore on src, drawing and reporting progress.
func (j *Job) restoreStream(ctx context.Context, plan *restore.Plan, di *restore.DiskImage, target *restore.Target,
	pp restore.PlannedPartition, count int, src io.Reader, mode Mode) (PartitionResult, error) {
	n := pp.Number
	bar := newProgressBar(j.Console, j.ConsoleTTY, fmt.Sprintf("d1p%d", n))
	// Restore counts the bytes it reads (the image as sent, without a
	// stream header) and its clock starts with the stream's first bytes
	// (multicast: the header strip waited for them), so its figures are
	// the wire's.
	var state status.State = status.Receiving
	if mode == Unicast {
		state = status.Writing
	}
	onProgress := func(p restore.Progress) {
		w := rate(p.In, p.Elapsed)
		d := rate(p.Written, p.Elapsed)
		total := p.Total
		bar.draw(p.Written, total, w, d, p.ETA)
		j.report(status.Report{State: state, Partition: n, Partitions: count,
			Bytes: p.Written, Total: total, WireRate: w, DiskRate: d})
	}
	res, err := restore.RestorePartition(ctx, src, target, restore.Options{
		Partition:        n,
		IgnoreChecksums:  j.IgnoreChecksums,
		Verify:           di.Segments(pp.Image),
		InputSize:        pp.Image.Size(),
		Check:            func(h *partclone.Header) error { return plan.CheckHeader(n, h) },
		Progress:         onProgress,
		ProgressInterval: j.progressInterval(),
		Logf:             j.Logf,
	})
	bar.finish()
	out := PartitionResult{Partition: n, File: pp.Image.Name, Mode: mode}
	if res != nil {
		out.Received, out.Written, out.Elapsed = res.In, res.Written, res.Elapsed
	}
	if err != nil {
		return out, err
	}
	j.printf("Partition %d: %s received, %s written in %s (wire %s/s, disk %s/s)\n", n,
		human(out.Received), human(out.Written), out.Elapsed.Round(100*time.Millisecond),
		human(int64(out.WireRate())), human(int64(out.DiskRate())))
	return out, nil
}

func (j *Job) progressInterval() time.Duration {
	if j.ProgressInterval > 0 {
		return j.ProgressInterval
	}
	return time.Second
}

// partitionError names the partition unless err already does.
func partitionError(n int, err error) error {
	var pe *restore.PartitionError
	if errors.As(err, &pe) {
		return err
	}
	return fmt.Errorf("partition %d: %w", n, err)
}
