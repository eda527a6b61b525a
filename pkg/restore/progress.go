package restore

import (
	"sync/atomic"
	"time"
)

// Progress is a snapshot of one partition restore.
type Progress struct {
	Partition int    // as given in Options
	Phase     string // "writing", "syncing", "done"
	In        int64  // bytes read from the source (compressed, as received)
	InTotal   int64  // expected source bytes (Options.InputSize), 0 if unknown
	Written   int64  // bytes written to the target
	Total     int64  // bytes of data the image holds, 0 until known (or raw)
	Elapsed   time.Duration
	Rate      float64       // bytes written per second, averaged since the start
	ETA       time.Duration // 0 when unknown
}

// Percent is the share of the image's data written so far (0–100), or of
// the input read when the data size is unknown; -1 when neither is known.
func (p Progress) Percent() float64 {
	switch {
	case p.Total > 0:
		return 100 * float64(p.Written) / float64(p.Total)
	case p.InTotal > 0:
		return 100 * float64(p.In) / float64(p.InTotal)
	}
	return -1
}

// meter holds the counters the pipeline stages update.
type meter struct {
	start   time.Time
	part    int
	in      atomic.Int64
	inTotal int64
	total   atomic.Int64
	written func() int64
	phase   atomic.Value
}

func (m *meter) snapshot() Progress {
	p := Progress{Partition: m.part, In: m.in.Load(), InTotal: m.inTotal, Total: m.total.Load(), Elapsed: time.Since(m.start)}
	if m.written != nil {
		p.Written = m.written()
	}
	p.Phase, _ = m.phase.Load().(string)
	if s := p.Elapsed.Seconds(); s > 0 {
		p.Rate = float64(p.Written) / s
	}
	if p.Rate > 0 && p.Total > p.Written {
		p.ETA = time.Duration(float64(p.Total-p.Written) / p.Rate * float64(time.Second))
	}
	return p
}

// report calls fn every interval until stop is closed, then once more.
func (m *meter) report(fn func(Progress), interval time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			fn(m.snapshot())
		case <-stop:
			return
		}
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r interface{ Read([]byte) (int, error) }
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
