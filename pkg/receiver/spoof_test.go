package receiver

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imgcast/imgcast/pkg/receiver/receivertest"
)

// stripeTooLong is the packet sequence that crashed the receiver: a slice
// of 130 blocks, all but the last received, then one FEC block sent with
// interleave 1, which would put all 130 blocks in one stripe although
// udpcast's code covers at most 128.
func stripeTooLong(bs int) [][]byte {
	const blocks = 130
	var pkts [][]byte
	for b := range blocks - 1 {
		pkts = append(pkts, dataPacket(0, b, blocks*bs, bytes.Repeat([]byte{byte(b)}, bs)))
	}
	return append(pkts, fecPacket(0, 1, 0, blocks*bs, bytes.Repeat([]byte{0xfe}, bs)))
}

func TestFECStripeLongerThanTheCodeIsRefused(t *testing.T) {
	const bs = 8
	env := newFakeEnv(bs)
	tr := newTestTransfer(env, 0, false, false)
	for _, p := range stripeTooLong(bs) {
		if err := feed(tr, p); err != nil {
			t.Fatal(err)
		}
	}
	if s := tr.cur[0]; s == nil || s.complete() || s.nFEC != 0 || len(env.delivered) != 0 {
		t.Fatalf("a FEC block for a 130-block stripe was taken: %+v delivered %v", s, env.delivered)
	}
	// The last block arriving later completes the slice as usual.
	if err := feed(tr, dataPacket(0, 129, 130*bs, bytes.Repeat([]byte{129}, bs))); err != nil {
		t.Fatal(err)
	}
	if len(env.delivered) != 1 || env.out.Len() != 130*bs {
		t.Fatalf("delivered %v, %d bytes", env.delivered, env.out.Len())
	}

	// The same interleave is fine for a slice of 128 blocks.
	s := newSlice(0, 128*bs, bs)
	s.buf = make([]byte, 128*bs)
	s.addData(0, make([]byte, bs))
	if r := s.addFEC(1, 0, make([]byte, bs)); r != fecStored {
		t.Errorf("FEC for a 128-block stripe: %v, want stored", r)
	}
	// And decode refuses rather than index past its arrays if the
	// bookkeeping were ever wrong.
	s = newSlice(0, 130*bs, bs)
	s.buf = make([]byte, 130*bs)
	s.stripes, s.nFEC, s.nData = 1, 1, 129
	s.stored[0], s.missing[0] = 1, 1
	if _, err := s.decode(newFECCodec(bs)); err == nil {
		t.Error("decode of a 130-block stripe: no error")
	}
}

// leftBehindCase plays packets to a transfer that has slice 0 incomplete
// (block 1 of 2 missing).
func TestTransferLeftBehind(t *testing.T) {
	const bs = 8
	blk := []byte("abcdefgh")
	tests := []struct {
		name       string
		ignoreLost bool
		pkts       [][]byte      // after DATA 0/0
		quiet      time.Duration // then nothing for this long
		want       error         // nil: still receiving
	}{
		{"one DATA two slices ahead", false, [][]byte{dataPacket(2, 0, 8, blk)}, 0, nil},
		{"one REQACK far ahead", false, [][]byte{reqAckPacket(1000, 8, 0)}, 0, nil},
		{"seven packets ahead", false, repeat(7, dataPacket(5, 0, 8, blk)), 0, nil},
		{"eight packets ahead", false, repeat(8, dataPacket(5, 0, 8, blk)), 0, ErrDropped},
		{"eight ahead, but the sender still asks about slice 0", false,
			append(append(repeat(4, dataPacket(5, 0, 8, blk)), reqAckPacket(0, 16, 3)), repeat(4, dataPacket(5, 0, 8, blk))...), 0, nil},
		{"one ahead then 3 s without a word about slice 0", false, [][]byte{reqAckPacket(2, 0, 0)}, aheadQuiet, ErrDropped},
		{"one ahead then 2 s of quiet", false, [][]byte{reqAckPacket(2, 0, 0)}, 2 * time.Second, nil},
		{"quiet alone", false, nil, time.Minute, nil},
		{"--ignore-lost-data: one two slices ahead delivers slice 0 with a hole", true, [][]byte{dataPacket(2, 0, 8, blk)}, 0, nil},
		{"--ignore-lost-data: one far ahead is not enough", true, [][]byte{dataPacket(9, 0, 8, blk)}, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := newFakeEnv(bs)
			tr := newTestTransfer(env, 0, false, tc.ignoreLost)
			now := clock
			err := feedAt(tr, dataPacket(0, 0, 16, blk), now)
			for _, p := range tc.pkts {
				if err != nil {
					break
				}
				now = now.Add(10 * time.Millisecond)
				err = feedAt(tr, p, now)
			}
			if err == nil && tc.quiet > 0 {
				if d := tr.deadline(); d.IsZero() || d.After(now.Add(tc.quiet)) {
					err = tr.tick(now.Add(tc.quiet))
					if tc.want != nil {
						t.Fatalf("nothing to decide before %v: deadline %v", now.Add(tc.quiet), d)
					}
				} else {
					err = tr.tick(now.Add(tc.quiet))
				}
			}
			if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if tc.ignoreLost {
				// Slice 0 went out with its hole zeroed, and slice 2's
				// DATA waits for slice 1; not for a single packet further
				// ahead.
				wantOut := "abcdefgh" + strings.Repeat("\x00", 8)
				if tc.pkts[0][7] == 9 {
					wantOut = ""
				}
				if env.out.String() != wantOut {
					t.Fatalf("delivered %v %q, want %q", env.delivered, env.out.String(), wantOut)
				}
			}
		})
	}
}

func repeat(n int, p []byte) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = p
	}
	return out
}

func TestTransferSliceSizeNeedsAMajority(t *testing.T) {
	const bs = 4
	real := [][]byte{dataPacket(0, 0, 8, []byte("abcd")), dataPacket(0, 1, 8, []byte("efgh"))}
	tests := []struct {
		name string
		pkts [][]byte
		want string
	}{
		{"forged size first", append([][]byte{reqAckPacket(0, 4000, 0)}, append(real, real...)...), "abcdefgh"},
		{"forged size later", [][]byte{real[0], dataPacket(0, 1, 5, []byte("X")), real[1]}, "abcdefgh"},
		{"forged end first", append([][]byte{reqAckPacket(0, 0, 0)}, append(real, real...)...), "abcdefgh"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := newFakeEnv(bs)
			tr := newTestTransfer(env, 0, false, false)
			for _, p := range tc.pkts {
				if err := feed(tr, p); err != nil {
					t.Fatal(err)
				}
			}
			if got := env.out.String(); got != tc.want || tr.ended {
				t.Fatalf("delivered %q (ended=%v), want %q", got, tr.ended, tc.want)
			}
		})
	}
}

func TestTransferEndNeedsTwoAnnouncementsOrQuiet(t *testing.T) {
	const bs = 4
	for _, noAcks := range []bool{false, true} {
		env := newFakeEnv(bs)
		tr := newTestTransfer(env, 0, false, false)
		tr.noAcks = noAcks
		if err := feed(tr, dataPacket(0, 0, 4, []byte("abcd"))); err != nil {
			t.Fatal(err)
		}
		if err := feed(tr, reqAckPacket(1, 0, 0)); err != nil || tr.ended {
			t.Fatalf("noAcks=%v: one end announcement: ended=%v err=%v", noAcks, tr.ended, err)
		}
		_ = tr.tick(clock.Add(endQuiet))
		if tr.ended != noAcks {
			t.Fatalf("noAcks=%v: after %s of quiet ended=%v", noAcks, endQuiet, tr.ended)
		}
		if !noAcks {
			// A sender that waits for us repeats itself.
			if err := feed(tr, fecPacket(1, 8, 3, 0, make([]byte, bs))); err != nil || !tr.ended {
				t.Fatalf("second end announcement: ended=%v err=%v", tr.ended, err)
			}
		}
		if env.out.String() != "abcd" || env.held != 0 {
			t.Fatalf("output %q, %d bytes held", env.out.String(), env.held)
		}
	}
}

func TestTransferStreamingFollowsTheSenderNotOnePacket(t *testing.T) {
	const bs = 4
	env := newFakeEnv(bs)
	tr := newTestTransfer(env, 0, true, false)
	// The first packet is forged, far ahead of the real stream.
	pkts := [][]byte{dataPacket(1_000_000, 0, 4, []byte("evil"))}
	for b := range 8 {
		pkts = append(pkts, dataPacket(7, 8+b, 64, []byte("ssss"))) // joined in the middle of slice 7
	}
	pkts = append(pkts, dataPacket(8, 0, 8, []byte("dddd")), dataPacket(8, 1, 8, []byte("eeee")),
		reqAckPacket(9, 0, 0), reqAckPacket(9, 0, 1))
	for _, p := range pkts {
		if err := feed(tr, p); err != nil {
			t.Fatal(err)
		}
	}
	if got := env.out.String(); got != "ddddeeee" || !tr.ended {
		t.Fatalf("delivered %q (ended=%v), want slice 8", got, tr.ended)
	}
}

func TestTransferSliceLargerThanAllowed(t *testing.T) {
	const bs = 1000
	env := newFakeEnv(bs)
	tr := newTransfer(env, transferConfig{blockSize: bs, maxSliceBytes: 10 * bs})
	big := 11 * bs
	for i := range unfitEvidence - 1 {
		if err := feed(tr, dataPacket(0, i, big, make([]byte, bs))); err != nil {
			t.Fatalf("packet %d of an oversized slice: %v", i, err)
		}
	}
	if env.held != 0 {
		t.Fatalf("%d bytes allocated for a slice over the limit", env.held)
	}
	err := feed(tr, dataPacket(0, 5, big, make([]byte, bs)))
	if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "too large for this receiver's memory") {
		t.Fatalf("got %v", err)
	}
}

func TestTransferAllocatesOnlyForPayload(t *testing.T) {
	const bs = 1000
	env := newFakeEnv(bs)
	tr := newTestTransfer(env, 0, false, false)
	// Headers alone (REQACKs, also ahead) cost no slice memory, and
	// neither do payloads for a slice the receiver cannot take yet.
	for _, p := range [][]byte{reqAckPacket(0, 1024*bs, 0), reqAckPacket(1, 1024*bs, 0), reqAckPacket(2, 1024*bs, 0),
		dataPacket(2, 0, 1024*bs, make([]byte, bs))} {
		if err := feed(tr, p); err != nil {
			t.Fatal(err)
		}
	}
	if env.held != 0 {
		t.Fatalf("%d bytes held for slices nothing was received of", env.held)
	}
	if err := feed(tr, dataPacket(1, 0, 1024*bs, make([]byte, bs))); err != nil {
		t.Fatal(err)
	}
	if env.held != 1024*bs {
		t.Fatalf("held %d for one slice of %d", env.held, 1024*bs)
	}
}

func TestPoolLimitIsHard(t *testing.T) {
	p := pool{limit: 1000}
	a := p.take(400)
	b := p.take(400)
	if a == nil || b == nil || len(a) != 400 {
		t.Fatal("two buffers within the limit refused")
	}
	if p.take(400) != nil {
		t.Fatal("a third buffer beyond the limit")
	}
	p.put(a)
	c := p.take(300)
	if c == nil || &c[:1][0] != &a[:1][0] {
		t.Fatal("freed buffer not reused")
	}
	p.put(b)
	p.put(c)
	// Larger buffers later: the small free ones are dropped to make room.
	d := p.take(900)
	if d == nil || p.held+p.freeBytes > p.limit {
		t.Fatalf("held %d + free %d over %d", p.held, p.freeBytes, p.limit)
	}
}

// An --async sender without FEC announces the end with exactly two
// REQACKs and waits for nobody. Whatever the loss, a receiver must then
// finish: with --ignore-lost-data with the whole length, without it
// complete or dropped, never waiting for slices that will not come.
func TestTransferAsyncEndWithLoss(t *testing.T) {
	const bs = 1456
	for seed := range 40 {
		for _, ignoreLost := range []bool{true, false} {
			rng := rand.New(rand.NewPCG(uint64(seed), 5))
			data := randomBytes(rng, 3_000_000) // slices of 1024, 1024 and 12 blocks, the end
			env := newFakeEnv(bs)
			tr := newTestTransfer(env, 0, false, ignoreLost)
			tr.noAcks = true
			var pkts [][]byte
			slices := receivertest.Slices(data, 1024*bs)
			for k, sl := range slices {
				pkts = append(pkts, receivertest.DataPackets(int32(k), sl, bs)...)
			}
			end := int32(len(slices))
			pkts = append(pkts, reqAckPacket(end, 0, 0), reqAckPacket(end, 0, 1))
			now, endHeard := clock, false
			var err error
			for i, p := range pkts {
				now = now.Add(50 * time.Microsecond)
				if rng.Float64() < 0.03 {
					continue
				}
				endHeard = endHeard || i >= len(pkts)-2
				if err = feedAt(tr, p, now); err != nil {
					break
				}
			}
			for i := 0; err == nil && i < 100 && !tr.ended; i++ {
				now = now.Add(100 * time.Millisecond)
				if d := tr.deadline(); !d.IsZero() && !now.Before(d) {
					err = tr.tick(now)
				}
			}
			switch {
			case !endHeard:
				// Nothing says the stream ended: waiting is right.
			case err != nil && (ignoreLost || !errors.Is(err, ErrDropped)):
				t.Fatalf("seed %d ignoreLost=%v: %v", seed, ignoreLost, err)
			case err == nil && !tr.ended:
				t.Fatalf("seed %d ignoreLost=%v: still waiting at slice %d after the end", seed, ignoreLost, tr.next)
			case tr.ended && ignoreLost && env.out.Len() != len(data):
				t.Fatalf("seed %d: --ignore-lost-data delivered %d bytes of %d", seed, env.out.Len(), len(data))
			case tr.ended && !ignoreLost && !bytes.Equal(env.out.Bytes(), data):
				t.Fatalf("seed %d: ended with wrong output", seed)
			}
		}
	}
}

// A receiver may join a --streaming sender at any packet: it writes a
// suffix of the stream that starts at a slice boundary (possibly empty),
// never a stream with a slice missing.
func TestTransferStreamingJoinAnywhere(t *testing.T) {
	const bs, stripes, redundancy = 64, 8, 8
	rng := rand.New(rand.NewPCG(1, 1))
	// The tail of a file as udp-sender cuts it: full slices, what was
	// read when the input ran short, the rest, a remainder under a block.
	var data []byte
	var starts []int
	var pkts [][]byte
	for k, n := range []int{1024 * bs, 1024 * bs, 342 * bs, 32 * bs, 11} {
		sl := randomBytes(rng, n)
		starts = append(starts, len(data))
		data = append(data, sl...)
		pkts = append(pkts, receivertest.DataPackets(int32(k), sl, bs)...)
		codec := newFECCodec(bs)
		parity := make([][][]byte, stripes)
		for st := range stripes {
			var stripe [][]byte
			for b := st; b*bs < n; b += stripes {
				blk := make([]byte, bs)
				copy(blk, sl[b*bs:min(n, (b+1)*bs)])
				stripe = append(stripe, blk)
			}
			parity[st] = make([][]byte, redundancy)
			if len(stripe) > 0 {
				if err := codec.encode(stripe, parity[st]); err != nil {
					t.Fatal(err)
				}
			}
		}
		for f := range stripes * redundancy { // in udp-sender's order
			p := parity[f%stripes][f/stripes]
			if p == nil {
				p = make([]byte, bs)
			}
			pkts = append(pkts, fecPacket(int32(k), stripes, f, n, p))
		}
	}
	for f := range stripes * redundancy {
		pkts = append(pkts, fecPacket(5, stripes, f, 0, make([]byte, bs)))
	}
	starts = append(starts, len(data))
	for first := 0; first < len(pkts); first += 3 {
		env := newFakeEnv(bs)
		tr := newTestTransfer(env, 0, true, false)
		tr.noAcks = true
		for _, p := range pkts[first:] {
			if err := feed(tr, p); err != nil {
				t.Fatalf("joined at packet %d: %v", first, err)
			}
		}
		got := env.out.Bytes()
		if !tr.ended || !bytes.HasSuffix(data, got) || !slices.Contains(starts, len(data)-len(got)) {
			t.Fatalf("joined at packet %d: ended=%v, %d bytes: not a suffix from a slice boundary", first, tr.ended, len(got))
		}
	}
}
