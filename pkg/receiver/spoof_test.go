package receiver

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
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
		{"--ignore-lost-data: eight ahead deliver slice 0 with a hole", true, repeat(8, dataPacket(2, 0, 8, blk)), 0, nil},
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
				// Slice 0 went out with its hole zeroed; slice 2's DATA,
				// kept while the evidence gathered, waits for slice 1.
				if len(env.delivered) != 1 || env.out.String() != "abcdefgh"+strings.Repeat("\x00", 8) || tr.cur[1] == nil || !tr.cur[1].complete() {
					t.Fatalf("delivered %v %q; slice 2 kept: %v", env.delivered, env.out.String(), tr.cur[1] != nil)
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
	// Headers alone (REQACKs, also far ahead) cost no slice memory.
	for _, p := range [][]byte{reqAckPacket(0, 1024*bs, 0), reqAckPacket(1, 1024*bs, 0), reqAckPacket(2, 1024*bs, 0)} {
		if err := feed(tr, p); err != nil {
			t.Fatal(err)
		}
	}
	if env.held != 0 {
		t.Fatalf("%d bytes held for slices nothing was received of", env.held)
	}
	// The slice after next is stored only if memory is to spare.
	env.limit = 2 * 1024 * bs
	for _, n := range []int32{0, 1, 2} {
		if err := feed(tr, dataPacket(n, 0, 1024*bs, make([]byte, bs))); err != nil {
			t.Fatal(err)
		}
	}
	if env.held != 2*1024*bs || tr.cur[2].buf != nil {
		t.Fatalf("held %d, slice 2 stored: %v", env.held, tr.cur[2].buf != nil)
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
