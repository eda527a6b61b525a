package restore

import (
	"fmt"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// extent is a stretch of a batch buffer and where it goes in the partition.
type extent struct {
	off int64 // byte offset in the partition
	n   int
}

// batch is a buffer of decoded data with the extents it holds, back to
// back.
type batch struct {
	buf     []byte
	extents []extent
}

// blockWriter writes batches in its own goroutine: WriteAt at each
// extent's offset, writeback started every flushEvery bytes and waited for
// one window later, so dirty data stays bounded and the final fsync is
// short.
type blockWriter struct {
	t          *Target
	in         chan *batch
	free       chan *batch
	done       chan struct{}
	err        error
	written    atomic.Int64
	flushEvery int64

	since      int64
	lo, hi     int64 // byte range of the disk file written since the last flush
	prevLo     int64
	prevHi     int64
	rangeFlush bool
}

func newBlockWriter(t *Target, batchSize, batches int, flushEvery int64) *blockWriter {
	w := &blockWriter{
		t: t, in: make(chan *batch, batches), free: make(chan *batch, batches),
		done: make(chan struct{}), flushEvery: flushEvery, rangeFlush: true,
		lo: -1,
	}
	for range batches {
		w.free <- &batch{buf: make([]byte, batchSize)}
	}
	go w.run()
	return w
}

// get returns an empty batch, or nil once the writer has failed.
func (w *blockWriter) get() *batch {
	select {
	case b := <-w.free:
		b.extents = b.extents[:0]
		return b
	case <-w.done:
		return nil
	}
}

// put hands a filled batch to the writer; false once the writer has failed.
func (w *blockWriter) put(b *batch) bool {
	select {
	case w.in <- b:
		return true
	case <-w.done:
		return false
	}
}

// finish waits for every batch to be written, then fsyncs. It returns the
// first write error.
func (w *blockWriter) finish() error {
	close(w.in)
	<-w.done
	if w.err != nil {
		return w.err
	}
	if err := w.t.f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", w.t.name, err)
	}
	return nil
}

// abort stops the writer after the batches already handed over.
func (w *blockWriter) abort() {
	close(w.in)
	<-w.done
}

func (w *blockWriter) run() {
	defer close(w.done)
	for b := range w.in {
		if w.err != nil {
			continue
		}
		pos := 0
		for _, e := range b.extents {
			off := w.t.offset + e.off
			if _, err := w.t.f.WriteAt(b.buf[pos:pos+e.n], off); err != nil {
				w.err = fmt.Errorf("writing %d bytes at byte %d of %s: %w", e.n, off, w.t.name, err)
				break
			}
			pos += e.n
			w.written.Add(int64(e.n))
			w.since += int64(e.n)
			if w.lo < 0 || off < w.lo {
				w.lo = off
			}
			w.hi = max(w.hi, off+int64(e.n))
		}
		if w.err == nil && w.since >= w.flushEvery {
			w.err = w.flush()
		}
		w.free <- b
	}
}

// flush starts writeback of what was written since the last flush and
// waits for the window before it.
func (w *blockWriter) flush() error {
	w.since = 0
	if w.rangeFlush {
		fd := int(w.t.f.Fd())
		err := unix.SyncFileRange(fd, w.lo, w.hi-w.lo, unix.SYNC_FILE_RANGE_WRITE)
		if err == nil && w.prevHi > w.prevLo {
			err = unix.SyncFileRange(fd, w.prevLo, w.prevHi-w.prevLo,
				unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
		}
		if err == nil {
			w.prevLo, w.prevHi, w.lo, w.hi = w.lo, w.hi, -1, 0
			return nil
		}
		w.rangeFlush = false // not supported here: fall back to fdatasync
	}
	w.lo, w.hi = -1, 0
	if err := unix.Fdatasync(int(w.t.f.Fd())); err != nil && err != unix.EINVAL {
		return fmt.Errorf("flushing %s: %w", w.t.name, os.NewSyscallError("fdatasync", err))
	}
	return nil
}
