package receiver

import (
	"fmt"
	"time"

	"github.com/imgcast/imgcast/internal/bytesize"
)

// transferEnv is what the transfer state machine needs from its
// surroundings; the socket loop implements it, and tests fake it.
type transferEnv interface {
	// send transmits a message to the sender.
	send(msg []byte)
	// alloc returns a buffer of n bytes for a slice's payload, counted
	// against the memory limit. It may wait for the writer to free
	// memory.
	alloc(n int) ([]byte, error)
	// deliver hands a complete slice to the writer, in order.
	deliver(s *slice)
	// discard gives back the buffer of a slice that will not be delivered.
	discard(s *slice)
	// canAck reports whether there is memory for the slice an OK would
	// let the sender start; if not, OKs wait (flow control towards the
	// sender when the output is slow).
	canAck() bool
	logf(format string, args ...any)
}

// transferConfig is what the transfer knows of the session.
type transferConfig struct {
	blockSize int
	client    int
	// streaming: joined a streaming sender mid-transfer; until the first
	// slice completes, the receiver follows whatever slice the sender is
	// on.
	streaming  bool
	ignoreLost bool
	// noAcks: the sender does not wait for our OKs (--async, or we are
	// passive), so it announces the end of the stream only once or twice.
	noAcks bool
	// maxSliceBytes is the largest buffer one slice may take.
	maxSliceBytes int
}

// Evidence a single forged packet cannot provide. Anyone on the network
// can send datagrams with the sender's address, so no decision that ends
// a reception rests on one packet.
const (
	// aheadEvidence packets for slices the receiver cannot take yet (two
	// or more beyond the first incomplete one), with none for a slice it
	// still needs in between, mean the sender has moved on without it:
	// udp-sender starts slice k+2 only once slice k is acknowledged by
	// every receiver it still serves.
	aheadEvidence = 8
	// aheadQuiet: so does even one such packet followed by this long
	// without a word about a slice the receiver has seen begin and still
	// lacks parts of (udp-sender asks about an unfinished slice at least
	// every second or two while it waits for a receiver).
	aheadQuiet = 3 * time.Second
	// endQuiet: a sender that does not wait for acknowledgements may
	// announce the end only once; followed by this long without a word
	// about the slices in flight, it is believed. Senders that wait for
	// us announce it until we answer, so there the end needs two
	// announcements.
	endQuiet = 2 * time.Second
	// unfitEvidence packets of a slice larger than a slice may be end the
	// reception (one alone is ignored).
	unfitEvidence = 3
	// maxGuessedSlices bounds how far --ignore-lost-data skips ahead.
	maxGuessedSlices = 8
	// maxConflictMessages bounds the messages logged about packets that
	// contradict the others (a flood of forged ones must not flood the
	// log).
	maxConflictMessages = 3
)

// transfer reassembles the stream from DATA, FEC and REQACK packets and
// answers REQACKs. It keeps the slices next and next+1 (udpcast's two
// slices in flight); packets for later slices are evidence that the
// sender has moved on.
type transfer struct {
	env transferEnv
	transferConfig
	bs        int
	started   bool
	next      int32     // next slice to deliver
	cur       [2]*slice // slices next and next+1, nil if not yet seen
	lastBytes int       // size of the last delivered slice
	ended     bool      // the zero-byte end slice was delivered
	now       time.Time // time of the packet being handled

	// Since the last packet about a slice the receiver needs (at
	// lastNeeded): how many packets were about later slices, and the
	// furthest of them.
	ahead      int
	aheadMax   int32
	lastNeeded time.Time

	deferred []int32 // OKs held back by canAck
	msg      []byte  // scratch for outgoing messages

	retransmits int64 // RETRANSMIT messages sent
	heldBack    int64 // OKs deferred by canAck
	duplicates  int64
	conflicts   int64 // packets whose slice size or interleave contradicted the others
}

func newTransfer(env transferEnv, cfg transferConfig) *transfer {
	return &transfer{
		env: env, transferConfig: cfg, bs: cfg.blockSize,
		started: !cfg.streaming,
		msg:     make([]byte, 0, sizeRetransmit),
	}
}

// current is the slice number being received, for progress reports.
func (t *transfer) current() int32 { return t.next }

// validBytes reports whether a slice size fits udpcast's limits.
func (t *transfer) validBytes(bytes int32) bool {
	return bytes >= 0 && int64(bytes) <= int64(maxBlocksPerSlice)*int64(t.bs)
}

// packet handles a DATA or FEC packet that arrived at now.
func (t *transfer) packet(h dataHeader, payload []byte, now time.Time) error {
	t.now = now
	if !t.validBytes(h.bytes) {
		return nil
	}
	if !h.fec && h.block >= blocksFor(int(h.bytes), t.bs) {
		return nil
	}
	s, err := t.slot(h.slice, int(h.bytes))
	if s == nil || err != nil {
		return err
	}
	if s.blocks == 0 {
		return t.advance() // end-of-stream FEC packets carry nothing
	}
	if ok, err := t.ensureBuffer(s); !ok || err != nil {
		return err
	}
	if h.fec {
		switch s.addFEC(h.stripes, h.block, payload) {
		case fecDuplicate:
			t.duplicates++
		case fecBadInterleave:
			t.conflict("Interleave mismatch %d <-> %d (slice %d); packet ignored", h.stripes, s.stripes, s.num)
		}
	} else if !s.addData(h.block, payload) {
		t.duplicates++
	}
	return t.advance()
}

// ensureBuffer gives slice s its payload buffer, waiting for the writer
// to free memory if need be. It reports false when the payload is not to
// be stored: the slice is larger than a slice may be.
func (t *transfer) ensureBuffer(s *slice) (bool, error) {
	if s.buf != nil {
		return true, nil
	}
	need := bufSize(s.bytes, t.bs)
	if need > t.maxSliceBytes {
		s.unfit++
		if s.unfit < unfitEvidence {
			return false, nil
		}
		return false, errorf(ErrProtocol, "the sender's slices are too large for this receiver's memory: slice %d has %d blocks of %d bytes (%s), a slice may use at most %s; "+
			"use smaller slices or blocks on the sender (udp-sender --max-slice-size, --blocksize) or give the receiver more memory",
			s.num, s.blocks, t.bs, bytesize.Format(int64(need)), bytesize.Format(int64(t.maxSliceBytes)))
	}
	buf, err := t.env.alloc(need)
	if err != nil {
		return false, err
	}
	s.buf = buf
	return true, nil
}

// reqAck answers a REQACK (arrived at now) with OK or RETRANSMIT.
func (t *transfer) reqAck(r reqAck, now time.Time) error {
	t.now = now
	if r.hasClient(t.client) || !t.validBytes(r.bytes) {
		return nil
	}
	if t.started && r.slice < t.next {
		t.needed()
		t.ok(r.slice)
		return nil
	}
	s, err := t.slot(r.slice, int(r.bytes))
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
		// ignored (size outvoted), or a slice we cannot take yet
	case s.bytes == 0:
		// The end, not yet confirmed: no answer, so that a sender that
		// waits for us announces it again.
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

// needed notes a packet about a slice the receiver still needs (or has
// had): the sender has not moved on.
func (t *transfer) needed() {
	t.ahead, t.aheadMax = 0, 0
	t.lastNeeded = t.now
}

// sawAhead notes a packet about slice n, beyond what the receiver can
// take; it reports whether the evidence that the sender has moved on is
// now complete.
func (t *transfer) sawAhead(n int32) bool {
	if t.ahead == 0 || n > t.aheadMax {
		t.aheadMax = n
	}
	t.ahead++
	return t.ahead >= aheadEvidence
}

// slot returns the slice a packet for slice n of the given size belongs
// to, creating it; nil if the packet is to be ignored.
func (t *transfer) slot(n int32, bytes int) (*slice, error) {
	if t.ended {
		return nil, nil
	}
	if !t.started {
		t.next, t.started = n, true
		t.needed()
	}
	for {
		d := int64(n) - int64(t.next)
		if t.streaming {
			// Until a first slice completes, follow the sender: a packet
			// one or two slices on restarts there, a packet elsewhere
			// only once several agree (one could be forged).
			if (d < 0 || d > 2) && !t.sawAhead(n) {
				return nil, nil
			}
			if d != 0 {
				t.restartAt(n)
				d = 0
			}
			t.needed()
		} else {
			switch {
			case d < 0:
				t.needed()
				return nil, nil
			case d <= 1:
				t.needed()
			case d == 2 && t.ignoreLost:
				// What --ignore-lost-data asks for (and udpcast does): a
				// sender two slices on means slice next will not be
				// completed; deliver it with holes rather than fall
				// further behind.
				if err := t.forceNext(); err != nil {
					return nil, err
				}
				continue
			default:
				if !t.sawAhead(n) {
					return nil, nil
				}
				if err := t.leftBehind(); err != nil {
					return nil, err
				}
				continue
			}
		}
		s := t.cur[d]
		switch {
		case s == nil:
			s = newSlice(n, bytes, t.bs)
			s.seen = t.now
			t.cur[d] = s
		case s.bytes == bytes:
			s.size.n++
		case s.size.against(bytes):
			t.conflict("Slice %d: size %d replaces %d, which fewer packets announced", n, bytes, s.bytes)
			size := s.size
			t.env.discard(s)
			s = newSlice(n, bytes, t.bs)
			s.size, s.seen = size, t.now
			t.cur[d] = s
		default:
			t.conflict("Byte number mismatch %d <-> %d (slice %d); packet ignored", bytes, s.bytes, n)
			return nil, nil
		}
		return s, nil
	}
}

// conflict counts a packet that contradicts the others of its slice and
// logs the first few.
func (t *transfer) conflict(format string, args ...any) {
	t.conflicts++
	if t.conflicts <= maxConflictMessages {
		t.env.logf(format, args...)
	}
}

// restartAt drops the slices held and waits for slice n instead (a
// streaming join).
func (t *transfer) restartAt(n int32) {
	t.release()
	t.next = n
}

// leftBehind acts on the evidence that the sender has moved on without
// the receiver: an error, or with --ignore-lost-data, slice next
// delivered as it is.
func (t *transfer) leftBehind() error {
	if !t.ignoreLost || int64(t.aheadMax)-int64(t.next) > maxGuessedSlices {
		return t.droppedError()
	}
	return t.forceNext()
}

// tick applies the time-based rules; call it when nothing arrived for a
// while (at deadline() at the latest).
func (t *transfer) tick(now time.Time) error {
	t.now = now
	if t.ended {
		return nil
	}
	if s := t.cur[0]; t.ahead > 0 && !t.streaming && s != nil && !s.complete() && now.Sub(t.lastNeeded) >= aheadQuiet {
		if err := t.leftBehind(); err != nil {
			return err
		}
	}
	return t.advance()
}

// deadline is when tick has something to decide, or zero.
func (t *transfer) deadline() time.Time {
	if t.ended {
		return time.Time{}
	}
	var d time.Time
	for _, s := range t.cur {
		if s != nil && s.bytes == 0 && t.noAcks && s.size.n < 2 {
			d = t.lastNeeded.Add(endQuiet)
		}
	}
	if s := t.cur[0]; s != nil && t.ahead > 0 && !t.streaming && !s.complete() {
		d = earliest(d, t.lastNeeded.Add(aheadQuiet))
	}
	return d
}

// forceNext declares slice next complete as it is (--ignore-lost-data).
func (t *transfer) forceNext() error {
	s := t.cur[0]
	if s == nil {
		guess := t.lastBytes
		if guess == 0 {
			guess = t.bs
		}
		s = newSlice(t.next, guess, t.bs)
		s.seen = t.now
		t.cur[0] = s
	}
	if s.buf == nil && s.blocks > 0 {
		need := bufSize(s.bytes, t.bs)
		if need > t.maxSliceBytes {
			return t.droppedError()
		}
		buf, err := t.env.alloc(need)
		if err != nil {
			return err
		}
		s.buf = buf
	}
	t.env.logf("Slice %d: %d of %d blocks lost, delivered with holes", s.num, s.blocks-s.nData-s.nFEC, s.blocks)
	s.forced = true
	return t.advance()
}

// confirmed reports whether a complete slice that a single packet could
// have completed can be believed: the end of the stream (no data at all),
// or the first slice of a streaming join (any slice number goes then).
func (t *transfer) confirmed(s *slice) bool {
	switch {
	case s.forced || s.size.n >= 2:
		return true
	case s.bytes == 0:
		return t.noAcks && t.now.Sub(t.lastNeeded) >= endQuiet
	}
	return !t.streaming
}

// advance delivers every complete slice at the head of the window.
func (t *transfer) advance() error {
	for {
		s := t.cur[0]
		if s == nil || !(s.complete() || s.forced) {
			if end := t.cur[1]; s != nil && t.noAcks && end != nil && end.bytes == 0 && t.confirmed(end) {
				// The sender ended without waiting for us: slice next
				// will never be completed.
				t.aheadMax = end.num
				if err := t.leftBehind(); err != nil {
					return err
				}
				continue
			}
			return nil
		}
		if !t.confirmed(s) {
			return nil
		}
		t.env.deliver(s)
		t.cur[0], t.cur[1] = t.cur[1], nil
		t.next++
		t.streaming = false
		if !s.forced {
			t.needed()
		}
		if s.bytes == 0 {
			t.ended = true
			t.release()
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

func (t *transfer) droppedError() error {
	msg := fmt.Sprintf("dropped by sender: it went on to slice %d while slice %d was incomplete", t.aheadMax, t.next)
	if s := t.cur[0]; s != nil {
		msg += fmt.Sprintf(" (missed blocks %s; blocks received: %d/%d/%d)",
			s.missingReport(), s.nData, s.nData+s.nFEC, s.blocks)
	} else {
		msg += " (no packet of it arrived)"
	}
	return errorf(ErrDropped, "%s; the network or this machine is too slow for the sender's rate", msg)
}
