package receiver

import "fmt"

// transferEnv is what the transfer state machine needs from its
// surroundings; the socket loop implements it, and tests fake it.
type transferEnv interface {
	// send transmits a message to the sender.
	send(msg []byte)
	// newSlice returns an empty slice for num of the given size. It may
	// wait for the writer to free memory.
	newSlice(num int32, bytes int) (*slice, error)
	// deliver hands a complete slice to the writer, in order.
	deliver(s *slice)
	// discard returns a slice that will not be delivered.
	discard(s *slice)
	// canAck reports whether there is memory for the slice an OK would
	// let the sender start; if not, OKs wait (flow control towards the
	// sender when the output is slow).
	canAck() bool
	logf(format string, args ...any)
}

// maxGuessedSlices bounds how far --ignore-lost-data skips ahead.
const maxGuessedSlices = 8

// transfer reassembles the stream from DATA, FEC and REQACK packets and
// answers REQACKs. It keeps at most two incomplete slices, next and
// next+1 (udpcast's two-slices-in-flight rule).
type transfer struct {
	env        transferEnv
	bs         int
	client     int
	ignoreLost bool
	// streaming: joined a streaming sender mid-transfer; until the first
	// slice completes, a higher slice number restarts the current one.
	streaming bool
	started   bool
	next      int32     // next slice to deliver
	cur       [2]*slice // slices next and next+1, nil if not yet seen
	lastBytes int       // size of the last delivered slice
	ended     bool      // the zero-byte end slice was delivered

	deferred []int32 // OKs held back by canAck
	msg      []byte  // scratch for outgoing messages

	retransmits int64 // RETRANSMIT messages sent
	heldBack    int64 // OKs deferred by canAck
	duplicates  int64
}

func newTransfer(env transferEnv, bs, client int, streaming, ignoreLost bool) *transfer {
	return &transfer{
		env: env, bs: bs, client: client, ignoreLost: ignoreLost,
		streaming: streaming, started: !streaming,
		msg: make([]byte, 0, sizeRetransmit),
	}
}

// current is the slice number being received, for progress reports.
func (t *transfer) current() int32 { return t.next }

// validBytes reports whether a slice size fits udpcast's limits.
func (t *transfer) validBytes(bytes int32) bool {
	return bytes >= 0 && int64(bytes) <= int64(maxBlocksPerSlice)*int64(t.bs)
}

// packet handles a DATA or FEC packet.
func (t *transfer) packet(h dataHeader, payload []byte) error {
	if !t.validBytes(h.bytes) {
		return nil
	}
	if !h.fec && h.block >= blocksFor(int(h.bytes), t.bs) {
		return nil
	}
	s, err := t.slot(h.slice, h.bytes)
	if s == nil || err != nil {
		return err
	}
	if h.fec {
		switch s.addFEC(h.stripes, h.block, payload) {
		case fecDuplicate:
			t.duplicates++
		case fecBadInterleave:
			t.env.logf("Interleave mismatch %d <-> %d", h.stripes, s.stripes)
		}
	} else if !s.addData(h.block, payload) {
		t.duplicates++
	}
	return t.advance()
}

// reqAck answers a REQACK with OK or RETRANSMIT.
func (t *transfer) reqAck(r reqAck) error {
	if r.hasClient(t.client) || !t.validBytes(r.bytes) {
		return nil
	}
	if t.started && r.slice < t.next {
		t.ok(r.slice)
		return nil
	}
	s, err := t.slot(r.slice, r.bytes)
	if err != nil {
		return err
	}
	if err := t.advance(); err != nil {
		return err
	}
	switch {
	case r.slice < t.next:
		t.ok(r.slice)
	case s == nil:
		// ignored (size mismatch)
	case s.complete():
		t.ok(r.slice)
	default:
		t.msg = appendRetransmit(t.msg[:0], r.slice, r.rxmit, &s.have)
		t.env.send(t.msg)
		t.retransmits++
	}
	return nil
}

func (t *transfer) ok(n int32) {
	if t.env.canAck() {
		t.msg = appendOK(t.msg[:0], n)
		t.env.send(t.msg)
		return
	}
	t.heldBack++
	for _, d := range t.deferred {
		if d == n {
			return
		}
	}
	t.deferred = append(t.deferred, n)
}

// flushDeferred sends the OKs held back, if memory allows now.
func (t *transfer) flushDeferred() {
	if len(t.deferred) == 0 || !t.env.canAck() {
		return
	}
	for _, n := range t.deferred {
		t.msg = appendOK(t.msg[:0], n)
		t.env.send(t.msg)
	}
	t.deferred = t.deferred[:0]
}

// slot returns the slice a packet for slice n belongs to, creating it, or
// nil if the packet is to be ignored.
func (t *transfer) slot(n, bytes int32) (*slice, error) {
	if t.ended {
		return nil, nil
	}
	if !t.started {
		t.next, t.started = n, true
	}
	if t.streaming && n > t.next {
		if t.cur[0] != nil {
			t.env.discard(t.cur[0])
			t.cur[0] = nil
		}
		t.next = n
	}
	for {
		var i int
		switch {
		case n < t.next:
			return nil, nil
		case n == t.next:
			i = 0
		case n == t.next+1:
			i = 1
		default:
			// Filling a gap of more than a few slices with guesses would
			// be inventing the stream, not ignoring a loss.
			if !t.ignoreLost || n-t.next > maxGuessedSlices {
				return nil, t.droppedError(n)
			}
			if err := t.forceNext(int(bytes)); err != nil {
				return nil, err
			}
			continue
		}
		s := t.cur[i]
		if s == nil {
			var err error
			if s, err = t.env.newSlice(n, int(bytes)); err != nil {
				return nil, err
			}
			t.cur[i] = s
		} else if s.bytes != int(bytes) {
			t.env.logf("Byte number mismatch %d <-> %d (slice %d); packet ignored", bytes, s.bytes, n)
			return nil, nil
		}
		return s, nil
	}
}

// forceNext declares slice next complete as it is (--ignore-lost-data).
func (t *transfer) forceNext(incoming int) error {
	s := t.cur[0]
	if s == nil {
		guess := t.lastBytes
		if guess == 0 {
			guess = incoming
		}
		if guess == 0 {
			guess = t.bs
		}
		var err error
		if s, err = t.env.newSlice(t.next, guess); err != nil {
			return err
		}
		t.cur[0] = s
	}
	t.env.logf("Slice %d: %d of %d blocks lost, delivered with holes", s.num, s.blocks-s.nData-s.nFEC, s.blocks)
	s.forced = true
	return t.advance()
}

// advance delivers every complete slice at the head of the window.
func (t *transfer) advance() error {
	for {
		s := t.cur[0]
		if s == nil || !(s.complete() || s.forced) {
			return nil
		}
		t.env.deliver(s)
		t.cur[0], t.cur[1] = t.cur[1], nil
		t.next++
		t.streaming = false
		if s.bytes == 0 {
			t.ended = true
			if t.cur[0] != nil {
				t.env.discard(t.cur[0])
				t.cur[0] = nil
			}
			return nil
		}
		t.lastBytes = s.bytes
	}
}

// release gives back the slices still held (at the end of a session).
func (t *transfer) release() {
	for i, s := range t.cur {
		if s != nil {
			t.env.discard(s)
			t.cur[i] = nil
		}
	}
}

func (t *transfer) droppedError(n int32) error {
	msg := fmt.Sprintf("dropped by sender: it sent slice %d while slice %d was incomplete", n, t.next)
	if s := t.cur[0]; s != nil {
		msg += fmt.Sprintf(" (missed blocks %s; blocks received: %d/%d/%d)",
			s.missingReport(), s.nData, s.nData+s.nFEC, s.blocks)
	} else {
		msg += " (no packet of it arrived)"
	}
	return errorf(ErrDropped, "%s; the network or this machine is too slow for the sender's rate", msg)
}
