package restore

import (
	"io"
	"sync"
)

// readahead runs a reader (the decompressor) in its own goroutine, a chunk
// ahead of the consumer, so decompression overlaps decoding.
type readahead struct {
	full  chan []byte
	free  chan []byte
	stop  chan struct{}
	once  sync.Once
	exit  chan struct{} // closed when the producer has returned
	cur   []byte
	err   error // set by the producer before it closes full
	owner []byte
}

func newReadahead(r io.Reader, chunk, count int) *readahead {
	ra := &readahead{
		full: make(chan []byte, count),
		free: make(chan []byte, count),
		stop: make(chan struct{}),
		exit: make(chan struct{}),
	}
	for range count {
		ra.free <- make([]byte, chunk)
	}
	go ra.produce(r)
	return ra
}

func (ra *readahead) produce(r io.Reader) {
	defer close(ra.exit)
	defer close(ra.full)
	for {
		var buf []byte
		select {
		case buf = <-ra.free:
		case <-ra.stop:
			return
		}
		n, err := fill(r, buf[:cap(buf)])
		if n > 0 {
			select {
			case ra.full <- buf[:n]:
			case <-ra.stop:
				return
			}
		}
		if err != nil {
			ra.err = err
			return
		}
	}
}

// fill reads until buf is full or r fails. Unlike io.ReadFull it passes
// errors on as they are: io.EOF only for a clean end, so a decompressor's
// io.ErrUnexpectedEOF (a cut stream) stays an error.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (ra *readahead) Read(p []byte) (int, error) {
	for len(ra.cur) == 0 {
		if ra.owner != nil {
			ra.free <- ra.owner[:cap(ra.owner)]
			ra.owner = nil
		}
		buf, ok := <-ra.full
		if !ok {
			return 0, ra.err
		}
		ra.cur, ra.owner = buf, buf
	}
	n := copy(p, ra.cur)
	ra.cur = ra.cur[n:]
	return n, nil
}

// Close stops the producer and then calls release (e.g. to close the
// decompressor it reads). A producer blocked reading its source ends when
// that read returns, so release may run later, in another goroutine.
func (ra *readahead) Close(release func()) {
	ra.once.Do(func() {
		close(ra.stop)
		go func() {
			<-ra.exit
			release()
		}()
	})
}
