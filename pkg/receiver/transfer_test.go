package receiver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/imgcast/imgcast/pkg/receiver/receivertest"
)

// fakeEnv stands in for the socket loop: it collects what the transfer
// sends and delivers, decodes FEC the way the writer does, and counts the
// memory held.
type fakeEnv struct {
	bs        int
	out       bytes.Buffer
	sent      [][]byte
	noAck     bool
	codec     *fecCodec
	delivered []int32
	logs      []string
	held      int // bytes of buffers allocated and not yet given back
}

func newFakeEnv(bs int) *fakeEnv { return &fakeEnv{bs: bs, codec: newFECCodec(bs)} }

func (e *fakeEnv) send(b []byte) { e.sent = append(e.sent, bytes.Clone(b)) }
func (e *fakeEnv) alloc(n int) ([]byte, error) {
	e.held += n
	return make([]byte, n), nil
}
func (e *fakeEnv) deliver(s *slice) {
	if s.nFEC > 0 || s.forced {
		if _, err := s.decode(e.codec); err != nil {
			panic(err)
		}
	}
	e.out.Write(s.buf[:s.bytes])
	e.delivered = append(e.delivered, s.num)
	e.discard(s)
}
func (e *fakeEnv) discard(s *slice) {
	e.held -= len(s.buf)
	s.buf = nil
}
func (e *fakeEnv) canAck() bool { return !e.noAck }
func (e *fakeEnv) logf(format string, args ...any) {
	e.logs = append(e.logs, fmt.Sprintf(format, args...))
}

// newTestTransfer is a transfer with the fake environment's block size
// and no memory limit of its own.
func newTestTransfer(env *fakeEnv, client int, streaming, ignoreLost bool) *transfer {
	return newTransfer(env, transferConfig{
		blockSize: env.bs, client: client, streaming: streaming, ignoreLost: ignoreLost,
		maxSliceBytes: maxBlocksPerSlice * env.bs,
	})
}

// lastSent pops the last message the transfer sent.
func (e *fakeEnv) lastSent() []byte {
	if len(e.sent) == 0 {
		return nil
	}
	m := e.sent[len(e.sent)-1]
	e.sent = e.sent[:0]
	return m
}

var (
	dataPacket   = receivertest.Data
	fecPacket    = receivertest.FEC
	reqAckPacket = receivertest.ReqAck
)

// clock is the arrival time the tests give packets; they move it on.
var clock = time.Unix(1_000_000, 0)

// feed dispatches one datagram the way the socket loop does, arriving at
// clock.
func feed(tr *transfer, pkt []byte) error { return feedAt(tr, pkt, clock) }

// feedAt dispatches one datagram arriving at now.
func feedAt(tr *transfer, pkt []byte, now time.Time) error {
	op, _ := opcode(pkt)
	switch op {
	case opData, opFEC:
		h, ok := parseDataHeader(pkt)
		if !ok {
			return nil
		}
		return tr.packet(h, pkt[sizeDataHeader:], now)
	case opReqAck:
		r, ok := parseReqAck(pkt)
		if !ok {
			return nil
		}
		return tr.reqAck(r, now)
	}
	return nil
}

// sim is an in-process udp-sender: it cuts a stream into slices, sends
// DATA (and FEC) through a lossy, duplicating, reordering channel, with
// the next slice's first transmission interleaved with the current
// slice's REQACK/RETRANSMIT rounds, as a full-duplex sender does.
type sim struct {
	bs         int
	sliceSizes []int // bytes per slice, cycled
	stripes    int   // FEC interleave, 0 = no FEC
	redundancy int
	async      bool
	loss, dup  float64
	shuffle    bool
	rng        *rand.Rand
}

func (s *sim) cut(data []byte) [][]byte {
	var out [][]byte
	for i := 0; len(data) > 0; i++ {
		n := min(len(data), s.sliceSizes[i%len(s.sliceSizes)])
		out = append(out, data[:n])
		data = data[n:]
	}
	return out
}

func (s *sim) firstRound(k int32, sl []byte) [][]byte {
	var pkts [][]byte
	blocks := blocksFor(len(sl), s.bs)
	for b := range blocks {
		pkts = append(pkts, dataPacket(k, b, len(sl), sl[b*s.bs:min(len(sl), (b+1)*s.bs)]))
	}
	if s.stripes > 0 {
		codec := newFECCodec(s.bs)
		for st := range s.stripes {
			var stripe [][]byte
			for b := st; b < blocks; b += s.stripes {
				blk := make([]byte, s.bs)
				copy(blk, sl[b*s.bs:min(len(sl), (b+1)*s.bs)])
				stripe = append(stripe, blk)
			}
			parity := make([][]byte, s.redundancy)
			if len(stripe) > 0 {
				if err := codec.encode(stripe, parity); err != nil {
					panic(err)
				}
			}
			for r := range s.redundancy {
				p := parity[r]
				if p == nil {
					p = bytes.Repeat([]byte{0xee}, s.bs) // stale garbage, never useful
				}
				pkts = append(pkts, fecPacket(k, s.stripes, st+r*s.stripes, len(sl), p))
			}
		}
	}
	return pkts
}

// channel applies loss, duplication and reordering.
func (s *sim) channel(pkts [][]byte) [][]byte {
	var out [][]byte
	for _, p := range pkts {
		if s.rng.Float64() < s.loss {
			continue
		}
		out = append(out, p)
		if s.rng.Float64() < s.dup {
			out = append(out, p)
		}
	}
	if s.shuffle {
		s.rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	}
	return out
}

func (s *sim) run(t *testing.T, tr *transfer, env *fakeEnv, data []byte) error {
	t.Helper()
	slices := s.cut(data)
	send := func(pkts [][]byte) error {
		for _, p := range s.channel(pkts) {
			if err := feed(tr, p); err != nil {
				return err
			}
		}
		return nil
	}
	if len(slices) > 0 {
		if err := send(s.firstRound(0, slices[0])); err != nil {
			return err
		}
	}
	for k := range slices {
		if k+1 < len(slices) {
			if err := send(s.firstRound(int32(k+1), slices[k+1])); err != nil {
				return err
			}
		}
		if s.async {
			continue
		}
		if err := s.acknowledge(t, tr, env, int32(k), slices[k]); err != nil {
			return err
		}
	}
	end := int32(len(slices))
	if s.async && s.stripes > 0 {
		var pkts [][]byte
		for f := range s.stripes * s.redundancy {
			pkts = append(pkts, fecPacket(end, s.stripes, f, 0, bytes.Repeat([]byte{0xee}, s.bs)))
		}
		return send(pkts)
	}
	return s.acknowledge(t, tr, env, end, nil)
}

// acknowledge plays the sender's REQACK rounds for slice k until OK.
func (s *sim) acknowledge(t *testing.T, tr *transfer, env *fakeEnv, k int32, sl []byte) error {
	t.Helper()
	for rxmit := 0; rxmit < 1000; rxmit++ {
		env.sent = env.sent[:0]
		req := reqAckPacket(k, len(sl), rxmit)
		if rxmit > 0 && s.rng.Float64() < s.loss {
			continue // REQACK lost: the sender repeats it
		}
		if err := feed(tr, req); err != nil {
			return err
		}
		reply := env.lastSent()
		op, _ := opcode(reply)
		switch {
		case len(reply) == 0 && len(sl) == 0:
			// The end is believed once announced twice: the sender
			// repeats a REQACK nobody answered.
		case op == opOK && len(reply) == sizeOK && int32(binary.BigEndian.Uint32(reply[4:])) == k:
			return nil
		case op == opRetransmit && len(reply) == sizeRetransmit:
			if got := binary.BigEndian.Uint32(reply[8:]); got != uint32(rxmit) {
				t.Fatalf("RETRANSMIT echoes rxmit %d, want %d", got, rxmit)
			}
			var again [][]byte
			for b := range blocksFor(len(sl), s.bs) {
				if !bitIsSet(reply[12:], b) {
					again = append(again, dataPacket(k, b, len(sl), sl[b*s.bs:min(len(sl), (b+1)*s.bs)]))
				}
			}
			for b := blocksFor(len(sl), s.bs); b < maxBlocksPerSlice; b++ {
				if bitIsSet(reply[12:], b) {
					t.Fatalf("RETRANSMIT map has bit %d set beyond the slice", b)
				}
			}
			for _, p := range s.channel(again) {
				if err := feed(tr, p); err != nil {
					return err
				}
			}
		default:
			t.Fatalf("slice %d: reply to REQACK is % x", k, reply)
		}
	}
	t.Fatalf("slice %d never acknowledged", k)
	return nil
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func TestTransferSimulated(t *testing.T) {
	tests := []struct {
		name string
		size int
		sim  sim
	}{
		{"clean", 1_000_003, sim{bs: 1456, sliceSizes: []int{112 * 1456}}},
		{"empty stream", 0, sim{bs: 1456, sliceSizes: []int{1456}}},
		{"one byte", 1, sim{bs: 1456, sliceSizes: []int{1456}}},
		{"udpcast tail slices", 500_001, sim{bs: 1456, sliceSizes: []int{163072, 163072, 163072, 10192, 593}}},
		{"changing slice sizes", 400_000, sim{bs: 1456, sliceSizes: []int{130 * 1456, 162 * 1456, 91 * 1456, 1024 * 1456, 32 * 1456}}},
		{"loss dup reorder", 1_500_000, sim{bs: 1456, sliceSizes: []int{112 * 1456}, loss: 0.1, dup: 0.05, shuffle: true}},
		{"heavy loss", 300_000, sim{bs: 1000, sliceSizes: []int{64 * 1000}, loss: 0.4, shuffle: true}},
		{"tiny blocks", 5_000, sim{bs: 4, sliceSizes: []int{4 * 1024, 17, 3}, loss: 0.05}},
		{"FEC 8x8/64 clean", 1_000_000, sim{bs: 1456, sliceSizes: []int{512 * 1456}, stripes: 8, redundancy: 8}},
		{"FEC 8x8/64 5% loss", 2_000_000, sim{bs: 1456, sliceSizes: []int{512 * 1456}, stripes: 8, redundancy: 8, loss: 0.05, shuffle: true}},
		{"FEC 8x8/64 20% loss", 1_000_000, sim{bs: 1456, sliceSizes: []int{512 * 1456}, stripes: 8, redundancy: 8, loss: 0.2, dup: 0.05, shuffle: true}},
		{"FEC short slices", 10_000, sim{bs: 1456, sliceSizes: []int{3 * 1456, 1, 1456 + 7}, stripes: 8, redundancy: 4, loss: 0.1}},
		{"FEC 16 stripes", 900_000, sim{bs: 512, sliceSizes: []int{1024 * 512}, stripes: 16, redundancy: 8, loss: 0.05}},
		{"async FEC", 1_000_000, sim{bs: 1456, sliceSizes: []int{1024 * 1456}, stripes: 8, redundancy: 8, async: true}},
		{"async FEC 2% loss", 1_000_000, sim{bs: 1456, sliceSizes: []int{1024 * 1456}, stripes: 8, redundancy: 8, async: true, loss: 0.02}},
		{"async no FEC", 300_000, sim{bs: 1456, sliceSizes: []int{1024 * 1456}, async: true}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.sim.rng = rand.New(rand.NewPCG(uint64(i), 7))
			data := randomBytes(tc.sim.rng, tc.size)
			env := newFakeEnv(tc.sim.bs)
			tr := newTestTransfer(env, 0, false, false)
			if err := tc.sim.run(t, tr, env, data); err != nil {
				t.Fatal(err)
			}
			if !tr.ended {
				t.Fatal("end of stream not seen")
			}
			if !bytes.Equal(env.out.Bytes(), data) {
				t.Fatalf("output differs: %d bytes, want %d", env.out.Len(), len(data))
			}
			t.Logf("%d slices, %d RETRANSMITs, %d duplicates", len(env.delivered), tr.retransmits, tr.duplicates)
		})
	}
}

func TestTransferAsyncLossDropsOrFillsHoles(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	data := randomBytes(rng, 3_000_000)
	s := sim{bs: 1456, sliceSizes: []int{1024 * 1456}, async: true, loss: 0.05, rng: rng}

	env := newFakeEnv(s.bs)
	err := s.run(t, newTestTransfer(env, 0, false, false), env, data)
	if !errors.Is(err, ErrDropped) {
		t.Fatalf("lossy async transfer: got %v, want ErrDropped", err)
	}

	s.rng = rand.New(rand.NewPCG(5, 6))
	env = newFakeEnv(s.bs)
	tr := newTestTransfer(env, 0, false, true)
	if err := s.run(t, tr, env, data); err != nil {
		t.Fatalf("--ignore-lost-data: %v", err)
	}
	// The last slice has no successor to force it out; udpcast fails the
	// same way. Everything before it has the right length.
	if env.out.Len() < len(data)-1024*1456 || env.out.Len() > len(data) {
		t.Fatalf("--ignore-lost-data delivered %d bytes of %d", env.out.Len(), len(data))
	}
}

func TestTransferReqAckRules(t *testing.T) {
	const bs = 8
	env := newFakeEnv(bs)
	tr := newTestTransfer(env, 3, false, false)
	payload := []byte("abcdefgh")

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	expect := func(what string, want []byte) {
		t.Helper()
		got := env.lastSent()
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: sent % x, want % x", what, got, want)
		}
	}
	// Slice 0 of 2 blocks, block 1 missing.
	must(feed(tr, dataPacket(0, 0, 16, payload)))
	must(feed(tr, reqAckPacket(0, 16, 4, 0, 1)))
	var have [bitmapBytes]byte
	have[0] = 1
	expect("RETRANSMIT", appendRetransmit(nil, 0, 4, &have))

	// Our client number (3) in the readySet: no answer.
	must(feed(tr, reqAckPacket(0, 16, 5, 3)))
	expect("already acknowledged", nil)

	// A size that disagrees with what we know is ignored.
	must(feed(tr, dataPacket(0, 1, 17, payload)))
	if tr.next != 0 || len(env.logs) == 0 {
		t.Fatal("byte number mismatch not ignored")
	}

	// Completing the slice delivers it; a repeated REQACK gets OK.
	must(feed(tr, dataPacket(0, 0, 16, payload))) // duplicate
	must(feed(tr, dataPacket(0, 1, 16, payload)))
	must(feed(tr, dataPacket(0, 1, 16, payload))) // for a delivered slice
	must(feed(tr, reqAckPacket(0, 16, 6)))
	expect("OK", appendOK(nil, 0))
	if tr.next != 1 || tr.duplicates != 1 {
		t.Fatalf("next=%d duplicates=%d", tr.next, tr.duplicates)
	}

	// Flow control: with no memory to spare, the OK waits.
	env.noAck = true
	must(feed(tr, dataPacket(1, 0, 3, payload)))
	must(feed(tr, reqAckPacket(1, 3, 0)))
	expect("held-back OK", nil)
	tr.flushDeferred()
	expect("still held back", nil)
	env.noAck = false
	tr.flushDeferred()
	expect("released OK", appendOK(nil, 1))

	// A REQACK for a slice never seen creates it: all blocks missing.
	must(feed(tr, reqAckPacket(2, 24, 0)))
	expect("RETRANSMIT for unseen slice", appendRetransmit(nil, 2, 0, &[bitmapBytes]byte{}))

	// Data of slice 3 while 2 is incomplete is fine (two in flight); a
	// packet for slice 4 or beyond may be forged: it takes more than one
	// to show that the sender left us behind (TestTransferLeftBehind).
	must(feed(tr, dataPacket(3, 0, 8, payload)))
	must(feed(tr, dataPacket(5, 0, 8, payload)))
	must(feed(tr, reqAckPacket(9, 8, 0)))
	expect("REQACK for a slice out of reach", nil)

	// End of stream after completing 2 and 3: believed when announced
	// twice.
	for b := range 3 {
		must(feed(tr, dataPacket(2, b, 24, payload)))
	}
	must(feed(tr, reqAckPacket(4, 0, 0)))
	expect("first end announcement", nil)
	must(feed(tr, reqAckPacket(4, 0, 1)))
	expect("OK for end slice", appendOK(nil, 4))
	if !tr.ended || env.out.String() != "abcdefghabcdefghabc"+"abcdefghabcdefghabcdefgh"+"abcdefgh" {
		t.Fatalf("ended=%v out=%q", tr.ended, env.out.String())
	}
	// Packets after the end are ignored, REQACKs still answered.
	must(feed(tr, dataPacket(5, 0, 8, payload)))
	must(feed(tr, reqAckPacket(4, 0, 1)))
	expect("OK after end", appendOK(nil, 4))
}

func TestTransferStreamingJoin(t *testing.T) {
	const bs = 4
	env := newFakeEnv(bs)
	tr := newTestTransfer(env, 0, true, false)
	// Joined in the middle of slice 7: block 0 was missed.
	for _, p := range [][]byte{
		dataPacket(7, 1, 12, []byte("BBBB")),
		dataPacket(7, 2, 12, []byte("CCCC")),
		dataPacket(6, 0, 12, []byte("zzzz")), // older: ignored
		dataPacket(8, 0, 8, []byte("dddd")),  // restarts at slice 8
		dataPacket(8, 1, 8, []byte("eeee")),
		dataPacket(9, 0, 4, []byte("ffff")),
		reqAckPacket(10, 0, 0),
		reqAckPacket(10, 0, 1),
	} {
		if err := feed(tr, p); err != nil {
			t.Fatal(err)
		}
	}
	if got := env.out.String(); got != "ddddeeeeffff" || !tr.ended {
		t.Fatalf("streaming join delivered %q (ended=%v), want the suffix from slice 8", got, tr.ended)
	}
}

func TestSliceFECBookkeeping(t *testing.T) {
	const bs = 4
	s := newSlice(0, 10, bs) // 3 blocks, the last one 2 bytes
	s.buf = make([]byte, 3*bs)
	fec := []byte("FFFF")
	s.addData(0, []byte("aaaa"))
	if r := s.addFEC(4, 3, fec); r != fecUseless {
		t.Errorf("FEC for stripe 3 (no data) = %v, want useless", r)
	}
	if r := s.addFEC(4, 1, fec); r != fecStored {
		t.Errorf("FEC for stripe 1 = %v, want stored", r)
	}
	if r := s.addFEC(4, 1, fec); r != fecDuplicate && r != fecUseless {
		t.Errorf("same FEC again = %v", r)
	}
	if r := s.addFEC(4, 5, fec); r != fecUseless {
		t.Errorf("second FEC for stripe 1 (one block missing) = %v, want useless", r)
	}
	if r := s.addFEC(2, 0, fec); r != fecBadInterleave {
		t.Errorf("other interleave = %v", r)
	}
	if r := s.addFEC(0, 0, fec); r != fecInvalid {
		t.Errorf("zero interleave = %v", r)
	}
	if s.complete() {
		t.Fatal("complete with block 2 missing")
	}
	// Block 1 arrives late: the FEC parked in its slot has nowhere to go.
	s.addData(1, []byte("bbbb"))
	if s.nFEC != 0 || s.stored[1] != 0 || s.missing[1] != 0 {
		t.Fatalf("late DATA: nFEC=%d stored=%d missing=%d", s.nFEC, s.stored[1], s.missing[1])
	}
	if s.addData(2, []byte("c")) {
		t.Fatal("truncated last block accepted")
	}
	s.addData(2, []byte("cc"))
	if !s.complete() || string(s.buf[:s.bytes]) != "aaaabbbbcc" {
		t.Fatalf("complete=%v data=%q", s.complete(), s.buf[:s.bytes])
	}
}

func TestSliceFECMovesOnLateData(t *testing.T) {
	const bs = 4
	s := newSlice(0, 16, bs) // 4 blocks, 1 stripe
	s.buf = make([]byte, 4*bs)
	// Two FEC blocks arrive before any DATA (reordering): parked in slots 0, 1.
	for f := range 2 {
		if r := s.addFEC(1, f, []byte("FFFF")); r != fecStored {
			t.Fatalf("FEC %d: %v", f, r)
		}
	}
	// DATA 0 and 1 arrive: the FEC blocks move to holes 2 and 3.
	s.addData(0, []byte("aaaa"))
	s.addData(1, []byte("bbbb"))
	if s.nFEC != 2 || s.fecRow[2] == 0 || s.fecRow[3] == 0 || !s.complete() {
		t.Fatalf("nFEC=%d fecRow=%v complete=%v", s.nFEC, s.fecRow[:4], s.complete())
	}
}

// FuzzTransfer feeds arbitrary packet sequences (each prefixed by its
// length byte) to the transfer state machine: no input may panic it, and
// whatever it delivers must fit the slices it accepted.
func FuzzTransfer(f *testing.F) {
	seq := func(flags byte, pkts ...[]byte) []byte {
		b := []byte{flags}
		for _, p := range pkts {
			b = append(b, byte(len(p)))
			b = append(b, p...)
		}
		return b
	}
	f.Add(seq(0, dataPacket(0, 0, 10, []byte("abcdefgh")), dataPacket(0, 1, 10, []byte("ij")), reqAckPacket(0, 10, 0), reqAckPacket(1, 0, 0)))
	f.Add(seq(1, dataPacket(0, 0, 16, []byte("abcdefgh")), fecPacket(0, 2, 1, 16, []byte("FFFFFFFF")), dataPacket(3, 0, 8, []byte("abcdefgh"))))
	f.Add(seq(2, fecPacket(5, 1, 0, 8, []byte("FFFFFFFF")), fecPacket(6, 1, 0, 0, []byte("FFFFFFFF"))))
	f.Add(seq(3, fecPacket(0, 3, 2, 24, []byte("FFFFFFFF")), fecPacket(0, 3, 5, 24, []byte("GGGGGGGG")), dataPacket(0, 0, 24, []byte("abcdefgh"))))
	f.Add(seq(0, stripeTooLong(8)...))
	f.Add(seq(4, dataPacket(0, 0, 16, []byte("abcdefgh")), reqAckPacket(3, 0, 0), reqAckPacket(1, 0, 0), reqAckPacket(0, 16, 0)))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		const bs = 8
		env := newFakeEnv(bs)
		flags := in[0]
		tr := newTestTransfer(env, 1, flags&2 != 0, flags&1 != 0)
		tr.noAcks = flags&8 != 0
		now := clock
		in = in[1:]
		for len(in) > 0 {
			n := min(int(in[0]), len(in)-1)
			pkt := in[1 : 1+n]
			in = in[1+n:]
			if err := feedAt(tr, pkt, now); err != nil {
				return
			}
			tr.flushDeferred()
			if flags&4 != 0 { // a second passes between packets
				now = now.Add(time.Second)
				if err := tr.tick(now); err != nil {
					return
				}
			}
		}
		if env.held < 0 || (tr.ended && env.held != 0) {
			t.Fatalf("%d bytes of buffers held (ended=%v)", env.held, tr.ended)
		}
		if env.out.Len() > len(env.delivered)*maxBlocksPerSlice*bs {
			t.Fatalf("delivered %d bytes in %d slices", env.out.Len(), len(env.delivered))
		}
	})
}
