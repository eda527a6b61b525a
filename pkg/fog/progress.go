package fog

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Status is the progress of the partition being written.
type Status struct {
	// Elapsed is the time since this partition started.
	Elapsed time.Duration
	// Written and Total are bytes of the partition's data: Total what the
	// image holds for it, Written what is on the disk so far.
	Written, Total uint64
	// Done marks the partition finished (100 %, nothing remaining).
	Done bool
}

// Line formats the status as FOS's patched partclone writes its status
// file, which FOG's progress.php splits on '@' into the task page's rate,
// elapsed and remaining time, copied and total size, and percent:
//
//	"  6.54GB@00:02:11@00:05:20@14.283 GiB@48.990 GiB@ 29.15@52601966592.000000"
//
// The rate is per minute in decimal units (GB, MB, KB, byte), the times
// are HH:MM:SS, sizes binary with as many decimals as the unit's rank, the
// percent that of this partition, and the last field its total in bytes.
// As partclone does, time counts in whole seconds (at least one), the
// percent stays between 1 and 99.99 until Done, and the remaining time is
// extrapolated from it.
func (s Status) Line() string {
	elapsed := int64(s.Elapsed / time.Second)
	if elapsed <= 0 {
		elapsed = 1
	}
	perMinute := float64(s.Written/uint64(elapsed)) * 60
	rate, unit := perMinute, "byte"
	switch {
	case perMinute >= 1e9:
		rate, unit = perMinute/1e9, "GB"
	case perMinute >= 1e6:
		rate, unit = perMinute/1e6, "MB"
	case perMinute >= 1e3:
		rate, unit = perMinute/1e3, "KB"
	}
	percent := 100.0
	remaining := int64(0)
	if !s.Done {
		percent = 1
		if s.Total > 0 {
			percent = float64(s.Written) / float64(s.Total) * 100
		}
		percent = max(1, min(percent, 99.99))
		remaining = int64(float64(elapsed)/percent*100) - elapsed
	}
	return fmt.Sprintf("%6.2f%s@%s@%s@%s@%s@%6.2f@%f", rate, unit,
		clock(elapsed), clock(remaining), binarySize(float64(s.Written)), binarySize(float64(s.Total)),
		percent, float64(s.Total))
}

// clock formats seconds as HH:MM:SS (hours are not wrapped at 24).
func clock(sec int64) string {
	return fmt.Sprintf("%02d:%02d:%02d", sec/3600, sec/60%60, sec%60)
}

// binarySize is partclone's size format in the status file: divided by
// 1024 while above 1024, printed with as many decimals as divisions.
func binarySize(size float64) string {
	units := []string{"iB", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	i := 0
	for size > 1024 && i < len(units)-1 {
		size /= 1024
		i++
	}
	return fmt.Sprintf("%.*f %s", i, size, units[i])
}

// DefaultProgressInterval is how often FOS posts its status.
const DefaultProgressInterval = 3 * time.Second

// Reporter posts the latest Status to progress.php every interval while it
// changes, on its own goroutine: Set never blocks on the network, so a slow
// or dead server never slows the data path.
type Reporter struct {
	client   *Client
	interval time.Duration

	mu      sync.Mutex
	latest  string
	posted  string
	posts   int
	lastErr error

	stop chan struct{}
	done chan struct{}
}

// StartProgress starts a Reporter (interval 0 means every 3 s). Stop it
// when the task ends.
func (c *Client) StartProgress(ctx context.Context, interval time.Duration) *Reporter {
	r := &Reporter{client: c, interval: or(interval, DefaultProgressInterval), stop: make(chan struct{}), done: make(chan struct{})}
	go r.run(ctx)
	return r
}

// Set records the current status; the next tick posts it.
func (r *Reporter) Set(s Status) {
	line := s.Line()
	r.mu.Lock()
	r.latest = line
	r.mu.Unlock()
}

func (r *Reporter) run(ctx context.Context) {
	defer close(r.done)
	tick := time.NewTicker(r.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.stop:
			return
		case <-tick.C:
		}
		r.mu.Lock()
		line := r.latest
		changed := line != "" && line != r.posted
		r.mu.Unlock()
		if !changed {
			continue
		}
		// A post may take up to one interval; the next one waits for it,
		// never the data path.
		pctx, cancel := context.WithTimeout(ctx, r.interval)
		err := r.client.Progress(pctx, line)
		cancel()
		r.mu.Lock()
		r.posts++
		if err == nil {
			r.posted = line
		}
		r.lastErr = err
		r.mu.Unlock()
	}
}

// Stop ends the reporter and waits for a post in flight.
func (r *Reporter) Stop() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	<-r.done
}

// Posts counts the posts tried so far; Err is the last one's error.
func (r *Reporter) Posts() (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.posts, r.lastErr
}
