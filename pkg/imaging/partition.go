package imaging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/imgcast/imgcast/internal/bytesize"
	"github.com/imgcast/imgcast/pkg/receiver"
	"github.com/imgcast/imgcast/pkg/restore"
	"github.com/imgcast/imgcast/pkg/status"
)

// partition is one partition to restore.
type partition struct {
	plan   *restore.Plan
	disk   *os.File
	number int
	pp     restore.PlannedPartition
	index  int // among the partitions with images, from 0
	count  int // partitions with images
	stream stream
}

// restorePartition receives or fetches partition p and restores it.
// *transfer may change from multicast to unicast when FallbackHTTP allows
// it.
func (j *job) restorePartition(ctx context.Context, p partition, transfer *Transfer) (PartitionResult, error) {
	if *transfer == Multicast {
		pr, err := j.receive(ctx, p)
		if err == nil || !errors.Is(err, ErrNoSender) || !j.FallbackHTTP {
			return pr, err
		}
		j.printf("\n%v\nFalling back to HTTP for this and the remaining partitions (imgcast.fallback=http)\n", err)
		*transfer = Unicast
	}
	return j.fetch(ctx, p)
}

// receive restores partition p from its multicast stream: the receiver
// writes into a pipe that restore reads, so nothing is buffered beyond the
// two pipelines' own buffers.
func (j *job) receive(ctx context.Context, p partition) (PartitionResult, error) {
	file := p.pp.Image.Name
	j.printf("Partition %d: waiting for %s on UDPcast port %d\n", p.number, file, p.stream.port)
	j.report(status.Report{State: status.Ready, Partition: p.number, Partitions: p.count, Total: p.pp.Image.Size()})

	cfg := j.receiverConfig(p, func(pr receiver.Progress) {
		if pr.Phase != receiver.PhaseReceiving || pr.Received == 0 {
			j.debugf("d1p%d: %s (sender %s, client #%d, %s)", p.number, pr.Phase, pr.Sender, pr.Client, pr.Path)
		}
	})
	var res PartitionResult
	err := ReceiveStream(ctx, Stream{Receiver: cfg, Receive: j.Receive, Name: file, ID: p.stream.id, RequireHeader: j.RequireStreamHeader},
		func(src io.Reader) error {
			var err error
			res, err = j.restoreStream(ctx, p, src, Multicast)
			return err
		})
	if err != nil {
		if res.Partition == 0 {
			res = PartitionResult{Partition: p.number, File: file}
		}
		return res, partitionError(p.number, err)
	}
	return res, nil
}

// fetch restores partition p from the image files over HTTP (or a local
// folder).
func (j *job) fetch(ctx context.Context, p partition) (PartitionResult, error) {
	folder := p.plan.Image.Folder
	j.printf("Partition %d: fetching %s from %s\n", p.number, p.pp.Image.Name, folder)
	r := p.pp.Image.Open(ctx, folder)
	defer r.Close()
	res, err := j.restoreStream(ctx, p, r, Unicast)
	if err != nil {
		return res, partitionError(p.number, err)
	}
	return res, nil
}

// restoreStream runs restore on src, drawing and reporting progress.
func (j *job) restoreStream(ctx context.Context, p partition, src io.Reader, transfer Transfer) (PartitionResult, error) {
	n := p.number
	bar := newProgressBar(j.Console, j.ConsoleTTY, fmt.Sprintf("d1p%d", n))
	// Restore counts the bytes it reads (the image as sent, without a
	// stream header) and its clock starts with the stream's first bytes
	// (multicast: the header strip waited for them), so its figures are
	// the wire's.
	state := status.Receiving
	if transfer == Unicast {
		state = status.Writing
	}
	onProgress := func(pg restore.Progress) {
		w := rate(pg.In, pg.Elapsed)
		d := rate(pg.Written, pg.Elapsed)
		bar.draw(pg.Written, pg.Total, w, d, pg.ETA)
		j.report(status.Report{State: state, Partition: n, Partitions: p.count,
			Bytes: pg.Written, Total: pg.Total, WireRate: w, DiskRate: d})
	}
	res, err := p.plan.RestorePartition(ctx, p.disk, n, src, restore.PartitionOptions{
		IgnoreChecksums:  j.IgnoreChecksums,
		Progress:         onProgress,
		ProgressInterval: j.progressInterval(),
		Logf:             j.Logf,
	})
	bar.finish()
	out := PartitionResult{Partition: n, File: p.pp.Image.Name, Transfer: transfer}
	if res != nil {
		out.Received, out.Written, out.Elapsed = res.In, res.Written, res.Elapsed
	}
	if err != nil {
		return out, err
	}
	j.printf("Partition %d: %s received, %s written in %s (wire %s/s, disk %s/s)\n", n,
		bytesize.Format(out.Received), bytesize.Format(out.Written), out.Elapsed.Round(100*time.Millisecond),
		bytesize.Format(int64(out.WireRate())), bytesize.Format(int64(out.DiskRate())))
	return out, nil
}

func (j *job) progressInterval() time.Duration {
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
