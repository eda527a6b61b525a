package receiver

import (
	"fmt"

	"github.com/klauspost/reedsolomon"
)

// fecDataShards is the fixed data width of udpcast's code. Its parity rows
// are inv((128+r) XOR j) over GF(2^8)/0x11D, which is exactly the Cauchy
// matrix klauspost/reedsolomon builds for 128 data shards; a stripe with
// fewer data blocks is the same code with the missing columns held at zero.
const fecDataShards = 128

// fecChunk bounds the bytes of each block decoded at a time, so that the
// decoder's scratch space (one chunk per erased block of a stripe, at most
// 128) stays small whatever block size the sender chose.
const fecChunk = 4096

// fecCodec rebuilds lost DATA blocks of a stripe from its FEC blocks. It is
// not safe for concurrent use.
type fecCodec struct {
	blockSize int
	codes     map[int]reedsolomon.Encoder // by parity-shard count
	zero      []byte
	shards    [][]byte
	parity    [][]byte
	scratch   []byte // fecDataShards chunks
}

func newFECCodec(blockSize int) *fecCodec {
	return &fecCodec{
		blockSize: blockSize,
		codes:     make(map[int]reedsolomon.Encoder),
		zero:      make([]byte, min(blockSize, fecChunk)),
		shards:    make([][]byte, fecDataShards+maxFECRows),
		parity:    make([][]byte, fecDataShards),
	}
}

// code returns an encoder with at least rows parity shards. Counts are
// rounded up to a multiple of 8 so that a session builds few of them; the
// parity row r is the same whatever the count.
func (c *fecCodec) code(rows int) (reedsolomon.Encoder, int, error) {
	n := (rows + 7) &^ 7
	if n > maxFECRows {
		n = maxFECRows
	}
	if enc, ok := c.codes[n]; ok {
		return enc, n, nil
	}
	// The inversion cache would keep one 16 KiB matrix per loss pattern
	// for the whole transfer: unbounded on a long lossy stream.
	enc, err := reedsolomon.New(fecDataShards, n, reedsolomon.WithCauchyMatrix(),
		reedsolomon.WithInversionCache(false), reedsolomon.WithMaxGoroutines(1))
	if err != nil {
		return nil, 0, fmt.Errorf("FEC code with %d parity rows: %w", n, err)
	}
	c.codes[n] = enc
	return enc, n, nil
}

// reconstruct rebuilds the erased blocks of one stripe. data holds the
// stripe's blocks in order, each exactly blockSize long (a short last block
// zero-padded); the entries at the positions listed in erased are
// overwritten. rows[i] is the FEC row whose payload is parity[i];
// len(rows) must equal len(erased). parity[i] may be data[erased[i]]
// itself (the receiver parks FEC payloads in the slots of the blocks they
// stand for): blocks are decoded a chunk at a time, each chunk of parity
// copied aside before the same chunk of output is written.
func (c *fecCodec) reconstruct(data [][]byte, erased []int, rows []int, parity [][]byte) error {
	if len(erased) != len(rows) || len(rows) != len(parity) {
		return fmt.Errorf("FEC: %d erasures but %d FEC blocks", len(erased), len(rows))
	}
	if len(erased) == 0 {
		return nil
	}
	if len(data) > fecDataShards {
		return fmt.Errorf("FEC: stripe of %d blocks exceeds %d", len(data), fecDataShards)
	}
	maxRow := 0
	for i, r := range rows {
		if r < 0 || r >= maxFECRows {
			return fmt.Errorf("FEC: row %d out of range", r)
		}
		if erased[i] < 0 || erased[i] >= len(data) {
			return fmt.Errorf("FEC: erased block %d outside a stripe of %d", erased[i], len(data))
		}
		maxRow = max(maxRow, r)
	}
	for _, d := range data {
		if len(d) != c.blockSize {
			return fmt.Errorf("FEC: block of %d bytes, want %d", len(d), c.blockSize)
		}
	}
	enc, n, err := c.code(maxRow + 1)
	if err != nil {
		return err
	}
	chunk := len(c.zero)
	if need := len(erased) * chunk; cap(c.scratch) < need {
		c.scratch = make([]byte, need)
	}
	shards := c.shards[:fecDataShards+n]
	for off := 0; off < c.blockSize; off += chunk {
		end := min(off+chunk, c.blockSize)
		size := end - off
		for i := range erased {
			c.parity[i] = c.scratch[i*chunk : i*chunk+size]
			copy(c.parity[i], parity[i][off:end])
		}
		clear(shards)
		for j, d := range data {
			shards[j] = d[off:end]
		}
		for j := len(data); j < fecDataShards; j++ {
			shards[j] = c.zero[:size]
		}
		for _, j := range erased {
			// Zero length with enough capacity: reedsolomon decodes in place.
			shards[j] = data[j][off:off]
		}
		for i, r := range rows {
			shards[fecDataShards+r] = c.parity[i]
		}
		if err := enc.ReconstructData(shards); err != nil {
			return fmt.Errorf("FEC reconstruction: %w", err)
		}
	}
	return nil
}

// encode computes FEC rows 0..len(parity)-1 of a stripe (used by tests and
// by nothing on the receiving path).
func (c *fecCodec) encode(data [][]byte, parity [][]byte) error {
	enc, n, err := c.code(len(parity))
	if err != nil {
		return err
	}
	shards := make([][]byte, fecDataShards+n)
	copy(shards, data)
	zero := make([]byte, c.blockSize)
	for j := len(data); j < fecDataShards; j++ {
		shards[j] = zero
	}
	for i := range n {
		shards[fecDataShards+i] = make([]byte, c.blockSize)
	}
	if err := enc.Encode(shards); err != nil {
		return err
	}
	for i := range parity {
		parity[i] = shards[fecDataShards+i]
	}
	return nil
}
