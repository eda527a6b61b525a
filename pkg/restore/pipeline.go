package restore

import (
	"errors"
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
		n, err := io.ReadFull(r, buf[:cap(buf)])
		if n > 0 {
			select {
			case ra.full <- buf[:n]:
			case <-ra.stop:
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF
			}
			ra.err = err
			return
		}
	}
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
