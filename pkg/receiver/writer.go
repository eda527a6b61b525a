package receiver

import (
	"io"
	"sync"
	"sync/atomic"
)

// output is the writer goroutine's side: complete slices queue up here,
// are FEC-decoded and written, and come back for reuse. The socket loop
// never waits for a write, so a slow disk costs memory (bounded by the
// pool) and acknowledgements, not lost packets.
type output struct {
	mu        sync.Mutex
	cond      sync.Cond
	queue     []*slice
	freed     []*slice
	closed    bool // no more slices will come
	abandoned bool // stop without writing the rest
	err       error

	written  atomic.Int64
	fecFixed atomic.Int64

	// freedSignal is poked (never blocks) each time a slice comes back.
	freedSignal chan struct{}
	// wantWake asks the writer to interrupt the socket read after
	// freeing a slice (the loop holds back OKs until memory frees up).
	wantWake atomic.Bool
	wake     func()
	done     chan struct{}
}

func newOutput(wake func()) *output {
	o := &output{freedSignal: make(chan struct{}, 1), wake: wake, done: make(chan struct{})}
	o.cond.L = &o.mu
	return o
}

func (o *output) push(s *slice) {
	o.mu.Lock()
	o.queue = append(o.queue, s)
	o.mu.Unlock()
	o.cond.Signal()
}

// close says no more slices will come; abandon also drops those queued.
func (o *output) close(abandon bool) {
	o.mu.Lock()
	o.closed = true
	o.abandoned = o.abandoned || abandon
	o.mu.Unlock()
	o.cond.Signal()
}

// takeFreed returns the slices the writer is done with.
func (o *output) takeFreed(dst []*slice) []*slice {
	o.mu.Lock()
	dst = append(dst, o.freed...)
	clear(o.freed)
	o.freed = o.freed[:0]
	o.mu.Unlock()
	return dst
}

func (o *output) failure() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

func (o *output) run(w io.Writer, codec *fecCodec) {
	defer func() {
		close(o.done)
		if o.wantWake.Load() {
			o.wake()
		}
	}()
	defer func() {
		// A bug here (or a panicking writer) must end the reception with
		// an error, not the process.
		if r := recover(); r != nil {
			o.mu.Lock()
			if o.err == nil {
				o.err = newInternalError("writer", r)
			}
			o.mu.Unlock()
			o.wake()
		}
	}()
	for {
		o.mu.Lock()
		for len(o.queue) == 0 && !o.closed {
			o.cond.Wait()
		}
		if len(o.queue) == 0 || o.abandoned {
			o.mu.Unlock()
			return
		}
		s := o.queue[0]
		o.queue[0] = nil
		o.queue = o.queue[1:]
		o.mu.Unlock()

		err := o.writeSlice(w, codec, s)

		o.mu.Lock()
		o.freed = append(o.freed, s)
		if err != nil && o.err == nil {
			o.err = err
		}
		o.mu.Unlock()
		select {
		case o.freedSignal <- struct{}{}:
		default:
		}
		if err != nil || o.wantWake.Load() {
			o.wake()
		}
		if err != nil {
			return
		}
	}
}

func (o *output) writeSlice(w io.Writer, codec *fecCodec, s *slice) error {
	if s.nFEC > 0 || s.forced {
		fixed, err := s.decode(codec)
		o.fecFixed.Add(int64(fixed))
		if err != nil {
			return err
		}
	}
	data := s.buf[:s.bytes]
	for len(data) > 0 {
		n, err := w.Write(data)
		o.written.Add(int64(n))
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		data = data[n:]
	}
	return nil
}

// pool hands out slice buffers and keeps every byte of them (in the
// receive window, queued for the writer, being written, or kept for reuse)
// under a hard limit. Only the socket loop uses it.
type pool struct {
	limit     int
	held      int // bytes of buffers out of the free list
	queued    int // of which delivered and not back from the writer yet
	maxBuf    int // largest buffer asked for: new buffers are this big
	free      [][]byte
	freeBytes int
	scratch   []*slice
}

// reclaim takes back what the writer has finished.
func (p *pool) reclaim(o *output) {
	p.scratch = o.takeFreed(p.scratch[:0])
	for _, s := range p.scratch {
		p.queued -= cap(s.buf)
		p.put(s.buf)
		s.buf = nil
	}
	clear(p.scratch)
}

// put returns a buffer. It is kept for reuse only if it is as large as the
// buffers now asked for (slices grow during a transfer, rarely shrink).
func (p *pool) put(b []byte) {
	if b == nil {
		return
	}
	p.held -= cap(b)
	if cap(b) >= p.maxBuf {
		p.free = append(p.free, b[:0])
		p.freeBytes += cap(b)
	}
}

// take returns a buffer of n bytes, or nil if the limit does not allow it.
func (p *pool) take(n int) []byte {
	p.maxBuf = max(p.maxBuf, n)
	for i := len(p.free) - 1; i >= 0; i-- {
		if b := p.free[i]; cap(b) >= n {
			p.dropFree(i)
			p.held += cap(b)
			return b[:n]
		}
	}
	// None fits: the free buffers are too small to be of use now.
	size := p.maxBuf
	for len(p.free) > 0 && p.held+p.freeBytes+size > p.limit {
		p.dropFree(0)
	}
	if p.held+p.freeBytes+size > p.limit {
		size = n
		if p.held+p.freeBytes+size > p.limit {
			return nil
		}
	}
	p.held += size
	return make([]byte, n, size)
}

func (p *pool) dropFree(i int) {
	p.freeBytes -= cap(p.free[i])
	p.free[i] = p.free[len(p.free)-1]
	p.free[len(p.free)-1] = nil
	p.free = p.free[:len(p.free)-1]
}

// canAck reports whether, with the writer's backlog as it is, there is
// room for one more slice beyond those held.
func (p *pool) canAck() bool {
	return p.queued == 0 || p.held+p.maxBuf <= p.limit
}
