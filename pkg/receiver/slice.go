package receiver

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// slice is one slice of the stream being reassembled: its DATA blocks are
// copied straight into buf at blockNo*blockSize. A useful FEC block is
// parked in the slot of a DATA block of its stripe that is still missing,
// as udpcast does, so a slice never needs more than blocks*blockSize bytes.
// buf is allocated only when the first payload arrives, so a slice known
// from headers alone (a REQACK, the end of the stream) costs no memory.
type slice struct {
	num    int32
	bytes  int // total payload bytes of the slice
	blocks int
	bs     int
	buf    []byte    // nil, or len blocks*bs
	seen   time.Time // when its first packet arrived

	// size counts the packets that announced bytes against those that
	// announced another size: a single packet cannot impose a size the
	// sender's own packets contradict.
	size vote
	// unfit counts payloads not stored because the slice is larger than
	// the memory limit lets a slice be.
	unfit int

	have  [bitmapBytes]byte // DATA blocks received, LSB-first
	nData int

	// FEC bookkeeping, valid once stripes > 0.
	stripes    int
	interleave vote // packets for and against stripes
	nFEC       int
	missing    [maxStripes]int16 // per stripe: DATA blocks not received
	stored     [maxStripes]int16 // per stripe: FEC blocks parked
	// fecRow[b] is 1 + the FEC row parked in DATA slot b, or 0.
	fecRow [maxBlocksPerSlice]uint8

	forced bool // completed by --ignore-lost-data with holes
}

func newSlice(num int32, bytes, bs int) *slice {
	return &slice{num: num, bytes: bytes, bs: bs, blocks: blocksFor(bytes, bs), size: vote{n: 1}}
}

// vote settles a value that every packet of a slice repeats: the value
// first announced holds until a different one has been announced by more
// packets than it (only the latest alternative is counted).
type vote struct{ n, alt, altN int }

// against records a packet announcing x instead of the value held. It
// reports true when x has taken over.
func (v *vote) against(x int) bool {
	if v.altN == 0 || v.alt != x {
		v.alt, v.altN = x, 0
	}
	v.altN++
	if v.altN > v.n {
		*v = vote{n: v.altN}
		return true
	}
	return false
}

func blocksFor(bytes, bs int) int { return (bytes + bs - 1) / bs }

// bufSize is the buffer a slice of the given size needs.
func bufSize(bytes, bs int) int { return blocksFor(bytes, bs) * bs }

func (s *slice) complete() bool { return s.nData+s.nFEC == s.blocks }

func (s *slice) hasBlock(b int) bool { return bitIsSet(s.have[:], b) }

// blockLen is the payload length of DATA block b.
func (s *slice) blockLen(b int) int { return min(s.bs, s.bytes-b*s.bs) }

// stripeLen is the number of DATA blocks in stripe st.
func (s *slice) stripeLen(st int) int {
	if st >= s.blocks {
		return 0
	}
	return (s.blocks - st + s.stripes - 1) / s.stripes
}

// addData stores DATA block b. It reports false for a duplicate or a
// payload of the wrong length.
func (s *slice) addData(b int, payload []byte) bool {
	if b >= s.blocks || s.hasBlock(b) {
		return false
	}
	n := s.blockLen(b)
	if len(payload) < n {
		return false // truncated datagram
	}
	if s.stripes > 0 {
		st := b % s.stripes
		s.missing[st]--
		if row := s.fecRow[b]; row != 0 {
			// A FEC block is parked where this block goes: move it to
			// another hole of the stripe, or drop it if there is none
			// (then it is surplus now that this block arrived).
			s.fecRow[b] = 0
			if to := s.freeSlot(st, b); to >= 0 {
				copy(s.buf[to*s.bs:(to+1)*s.bs], s.buf[b*s.bs:(b+1)*s.bs])
				s.fecRow[to] = row
			} else {
				s.stored[st]--
				s.nFEC--
			}
		}
	}
	copy(s.buf[b*s.bs:], payload[:n])
	s.have[b/8] |= 1 << (b % 8)
	s.nData++
	return true
}

// freeSlot returns a missing DATA slot of stripe st, other than except,
// that holds no FEC block, or -1.
func (s *slice) freeSlot(st, except int) int {
	for b := st; b < s.blocks; b += s.stripes {
		if b != except && !s.hasBlock(b) && s.fecRow[b] == 0 {
			return b
		}
	}
	return -1
}

// fecResult says what happened to a FEC packet.
type fecResult int

const (
	fecStored fecResult = iota
	fecUseless
	fecDuplicate
	fecBadInterleave
	fecInvalid
)

// fecUsable reports whether a FEC packet with this interleave and block
// number can belong to this slice: udpcast's code covers at most 128 data
// blocks per stripe and 128 FEC rows.
func (s *slice) fecUsable(stripes, f int) bool {
	return stripes > 0 && stripes <= maxStripes && s.blocks <= stripes*fecDataShards && f/stripes < maxFECRows
}

// addFEC parks FEC block f (stripes interleave) if it is useful.
func (s *slice) addFEC(stripes, f int, payload []byte) fecResult {
	if !s.fecUsable(stripes, f) || len(payload) < s.bs {
		return fecInvalid
	}
	switch {
	case s.stripes == 0:
		s.setStripes(stripes)
	case s.stripes != stripes:
		if !s.interleave.against(stripes) {
			return fecBadInterleave
		}
		// The interleave first seen was outvoted: drop what was parked
		// under it.
		s.setStripes(stripes)
	default:
		s.interleave.n++
	}
	st, row := f%stripes, f/stripes
	if s.missing[st] <= s.stored[st] {
		return fecUseless // also covers stripes without any data block
	}
	for b := st; b < s.blocks; b += stripes {
		if s.fecRow[b] == uint8(row+1) {
			return fecDuplicate
		}
	}
	free := s.freeSlot(st, -1)
	if free < 0 {
		return fecUseless // cannot happen while missing > stored
	}
	copy(s.buf[free*s.bs:(free+1)*s.bs], payload)
	s.fecRow[free] = uint8(row + 1)
	s.stored[st]++
	s.nFEC++
	return fecStored
}

// setStripes starts the FEC bookkeeping for an interleave, dropping any
// FEC block parked under another one.
func (s *slice) setStripes(stripes int) {
	s.stripes, s.nFEC = stripes, 0
	clear(s.fecRow[:s.blocks])
	clear(s.missing[:])
	clear(s.stored[:])
	if s.interleave.n == 0 {
		s.interleave.n = 1
	}
	for b := range s.blocks {
		if !s.hasBlock(b) {
			s.missing[b%stripes]++
		}
	}
}

// decode rebuilds every DATA block still missing from the FEC blocks parked
// in its stripe. After a forced completion, stripes that cannot be rebuilt
// have their holes zeroed. It returns the number of blocks rebuilt.
func (s *slice) decode(c *fecCodec) (int, error) {
	if s.complete() && s.nFEC == 0 {
		return 0, nil
	}
	if !s.complete() && !s.forced {
		return 0, fmt.Errorf("slice %d: decode of an incomplete slice", s.num)
	}
	if s.stripes == 0 || s.nFEC == 0 {
		s.zeroHoles(-1)
		return 0, nil
	}
	if n := s.stripeLen(0); n > fecDataShards {
		// addFEC never lets this happen; indexing below depends on it.
		return 0, fmt.Errorf("slice %d: stripe of %d blocks, more than FEC covers (%d)", s.num, n, fecDataShards)
	}
	if tail := s.bytes % s.bs; tail != 0 && s.hasBlock(s.blocks-1) {
		// The code sees the short last block zero-padded.
		clear(s.buf[s.bytes:])
	}
	var (
		data   [fecDataShards][]byte
		erased [fecDataShards]int
		rows   [fecDataShards]int
		parity [fecDataShards][]byte
		fixed  int
	)
	for st := range s.stripes {
		if s.stored[st] == 0 || s.stored[st] != s.missing[st] {
			if s.missing[st] > 0 {
				s.zeroHoles(st)
			}
			continue
		}
		n, k := 0, 0
		for b := st; b < s.blocks; b += s.stripes {
			block := s.buf[b*s.bs : (b+1)*s.bs]
			if !s.hasBlock(b) {
				// The slot holds a FEC payload now and the block after.
				parity[k] = block
				rows[k] = int(s.fecRow[b]) - 1
				erased[k] = n
				k++
			}
			data[n] = block
			n++
		}
		if err := c.reconstruct(data[:n], erased[:k], rows[:k], parity[:k]); err != nil {
			return fixed, fmt.Errorf("slice %d stripe %d: %w", s.num, st, err)
		}
		fixed += k
	}
	return fixed, nil
}

// zeroHoles clears the missing DATA blocks of stripe st (all stripes if
// st < 0); used only for slices forced complete by --ignore-lost-data.
func (s *slice) zeroHoles(st int) {
	for b := range s.blocks {
		if !s.hasBlock(b) && (st < 0 || b%s.stripes == st) {
			clear(s.buf[b*s.bs : b*s.bs+s.blockLen(b)])
		}
	}
}

// missingReport lists the DATA blocks not received, as udpcast's
// "Missed blocks" line does.
func (s *slice) missingReport() string {
	var b strings.Builder
	for i := range s.blocks {
		if !s.hasBlock(i) {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Itoa(i))
		}
	}
	return b.String()
}
