package manifest

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
)

// ErrChunk: a chunk of a partition image does not match the manifest.
var ErrChunk = errors.New("chunk does not match the signed manifest")

// ChunkError names the chunk that failed. errors.Is matches ErrChunk and
// ErrManifest.
type ChunkError struct {
	Stream string
	Index  int   // chunk number, from 0
	Offset int64 // its first byte in the stream
	Detail string
}

func (e *ChunkError) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("%s: chunk %d (byte %d): %s", e.Stream, e.Index, e.Offset, e.Detail)
	}
	return fmt.Sprintf("%s: chunk %d (bytes %d–%d) does not match the signed manifest: altered or injected data; nothing of it was used",
		e.Stream, e.Index, e.Offset, e.Offset+ChunkSize-1)
}

// Is makes errors.Is(err, ErrChunk) and errors.Is(err, ErrManifest) true.
func (e *ChunkError) Is(target error) bool { return target == ErrChunk || target == ErrManifest }

// Verifier hands out the stream a whole chunk at a time, each only after
// its SHA-256 matched. A goroutine reads and hashes the next chunk while
// the consumer takes the current one: two chunk buffers (8 MiB) in all.
type Verifier struct {
	s     *Stream
	full  chan []byte
	free  chan []byte
	stop  chan struct{}
	exit  chan struct{} // closed when the producer no longer reads src
	once  sync.Once
	cur   []byte
	owner []byte
	err   error // set by the producer before it closes full
	mu    sync.Mutex
	bad   error // the verification failure, for Err
}

// NewReader returns a reader of src that yields only verified chunks of
// stream s, and fails (ChunkError) at the first chunk that does not match,
// at a stream shorter than s.Size (wrapping io.ErrUnexpectedEOF) and at one
// longer. Close stops its goroutine; it does not close src.
func (s *Stream) NewReader(src io.Reader) *Verifier {
	v := &Verifier{s: s, full: make(chan []byte, 1), free: make(chan []byte, 2), stop: make(chan struct{}), exit: make(chan struct{})}
	for range 2 {
		v.free <- make([]byte, ChunkSize)
	}
	go v.produce(src)
	return v
}

// errClosed is what Read returns once Close stopped the producer.
var errClosed = errors.New("manifest verifier closed")

func (v *Verifier) produce(src io.Reader) {
	defer close(v.exit)
	defer close(v.full)
	defer func() {
		if v.err != nil && v.err != io.EOF {
			v.mu.Lock()
			v.bad = v.err
			v.mu.Unlock()
		}
	}()
	var off int64
	h := sha256.New()
	for i, want := range v.s.Chunks {
		var buf []byte
		select {
		case buf = <-v.free:
		case <-v.stop:
			v.err = errClosed
			return
		}
		n := int(min(ChunkSize, v.s.Size-off))
		buf = buf[:n]
		h.Reset()
		for got := 0; got < n; {
			if v.stopped() {
				return
			}
			k, err := src.Read(buf[got:])
			h.Write(buf[got : got+k])
			got += k
			if err == io.EOF && got < n {
				err = io.ErrUnexpectedEOF
			}
			if err != nil && got < n {
				if errors.Is(err, io.ErrUnexpectedEOF) {
					v.err = fmt.Errorf("%s: the stream ended after %d of the %d bytes the signed manifest lists: %w",
						v.s.Name, off+int64(got), v.s.Size, io.ErrUnexpectedEOF)
				} else {
					v.err = fmt.Errorf("reading %s at byte %d: %w", v.s.Name, off+int64(got), err)
				}
				return
			}
		}
		var d Digest
		h.Sum(d[:0])
		if d != want {
			v.err = &ChunkError{Stream: v.s.Name, Index: i, Offset: off}
			return
		}
		off += int64(n)
		select {
		case v.full <- buf:
		case <-v.stop:
			v.err = errClosed
			return
		}
	}
	// The stream must end here: bytes beyond what was signed are injected.
	var one [1]byte
	for {
		if v.stopped() {
			return
		}
		k, err := src.Read(one[:])
		if k > 0 {
			v.err = &ChunkError{Stream: v.s.Name, Index: len(v.s.Chunks), Offset: off,
				Detail: fmt.Sprintf("the stream goes on past the %d bytes the signed manifest covers", v.s.Size)}
			return
		}
		if err == io.EOF {
			v.err = io.EOF
			return
		}
		if err != nil {
			v.err = fmt.Errorf("reading %s at byte %d: %w", v.s.Name, off, err)
			return
		}
	}
}

func (v *Verifier) Read(p []byte) (int, error) {
	for len(v.cur) == 0 {
		if v.owner != nil {
			v.free <- v.owner[:cap(v.owner)]
			v.owner = nil
		}
		buf, ok := <-v.full
		if !ok {
			return 0, v.err
		}
		v.cur, v.owner = buf, buf
	}
	n := copy(p, v.cur)
	v.cur = v.cur[n:]
	return n, nil
}

// stopped reports (and records) a Close.
func (v *Verifier) stopped() bool {
	select {
	case <-v.stop:
		v.err = errClosed
		return true
	default:
		return false
	}
}

// Close stops the goroutine and waits until it no longer reads src: at
// most until a Read of src already under way returns. The caller may then
// close src. Reads after Close fail.
func (v *Verifier) Close() error {
	v.once.Do(func() { close(v.stop) })
	<-v.exit
	return nil
}

// Err is the verification (or read) failure once one happened, else nil.
// It lets a caller tell the cause from what a decoder downstream made of
// the cut-off stream.
func (v *Verifier) Err() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.bad
}
