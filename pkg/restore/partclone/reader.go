package partclone

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Run is a stretch of consecutive used blocks inside a batch: Count blocks
// that belong at block numbers Block, Block+1, …
type Run struct {
	Block uint64
	Count uint64
}

// Reader streams the data section of an image in batches of verified
// blocks.
type Reader struct {
	h      *Header
	r      io.Reader
	sum    summer // nil without checksums or when they are ignored
	csize  int
	n      uint64 // blocks per checksum
	next   uint64 // next block number to look at in the bitmap
	done   uint64 // used blocks delivered so far
	group  uint64 // blocks since the last stored checksum
	first  uint64 // block number of the current group's first block
	off    int64  // position in the decompressed image stream
	stored []byte
	calc   []byte
	err    error
}

// Options change how a Reader treats the data section.
type Options struct {
	// IgnoreChecksums skips data checksums by position without computing
	// them (partclone's --ignore_crc). Descriptor and bitmap CRCs are
	// always checked.
	IgnoreChecksums bool
}

// NewReader reads and checks the descriptor and bitmap from r and returns
// a Reader positioned at the data section.
func NewReader(r io.Reader, opts Options) (*Reader, error) {
	h, err := ReadHeader(r)
	if err != nil {
		return nil, err
	}
	return NewDataReader(r, h, opts)
}

// NewDataReader returns a Reader for the data section of an image whose
// header was already read from r with ReadHeader.
func NewDataReader(r io.Reader, h *Header, opts Options) (*Reader, error) {
	d := &Reader{h: h, r: r, off: h.size, csize: h.ChecksumSize(), n: uint64(h.BlocksPerChecksum)}
	if h.Checksum != ChecksumNone && !opts.IgnoreChecksums {
		s, err := newSummer(h.Checksum, int(h.BlockSize))
		if err != nil {
			return nil, err
		}
		d.sum = s
	}
	d.stored = make([]byte, d.csize)
	d.calc = make([]byte, 0, d.csize)
	return d, nil
}

// Header returns the image's descriptor and bitmap.
func (d *Reader) Header() *Header { return d.h }

// Offset is the number of decompressed image bytes consumed so far.
func (d *Reader) Offset() int64 { return d.off }

// BlocksDone is the number of used blocks delivered so far.
func (d *Reader) BlocksDone() uint64 { return d.done }

// ReadBatch fills buf with as many whole used blocks as fit, verifying
// every checksum whose group ends inside the batch, and appends to runs
// where they belong. The data of the returned runs lies back to back in
// buf[:n]. A batch whose checksum fails is not returned at all. After the
// last block (and its checksum) ReadBatch returns 0 and io.EOF; the caller
// may then check that the stream has ended.
func (d *Reader) ReadBatch(buf []byte, runs []Run) ([]Run, int, error) {
	if d.err != nil {
		return runs, 0, d.err
	}
	bs := uint64(d.h.BlockSize)
	capBlocks := uint64(len(buf)) / bs
	if capBlocks == 0 {
		return runs, 0, fmt.Errorf("partclone: batch buffer of %d bytes is smaller than one %d-byte block", len(buf), bs)
	}
	start := len(runs)
	filled := uint64(0)
	for filled < capBlocks && d.done < d.h.UsedBlocks {
		k := min(capBlocks-filled, d.h.UsedBlocks-d.done)
		if d.csize > 0 {
			k = min(k, d.n-d.group)
		}
		p := buf[filled*bs : (filled+k)*bs]
		if got, err := io.ReadFull(d.r, p); err != nil {
			blk := d.h.nextUsed(d.next)
			if got > 0 {
				// Locate the block the stream ended in.
				for range uint64(got) / bs {
					blk = d.h.nextUsed(blk + 1)
				}
			}
			d.err = d.readFail(err, d.off+int64(got), fmt.Sprintf("block %d (used block %d of %d)", blk, d.done+uint64(got)/bs+1, d.h.UsedBlocks))
			return runs[:start], 0, d.err
		}
		if d.group == 0 {
			d.first = d.h.nextUsed(d.next)
		}
		for i := uint64(0); i < k; {
			blk := d.h.nextUsed(d.next)
			c := d.h.runLength(blk, k-i)
			if last := len(runs) - 1; last >= start && runs[last].Block+runs[last].Count == blk {
				runs[last].Count += c
			} else {
				runs = append(runs, Run{Block: blk, Count: c})
			}
			d.next = blk + c
			i += c
		}
		if d.sum != nil {
			d.sum.add(p)
		}
		d.off += int64(len(p))
		d.group += k
		d.done += k
		filled += k
		if d.csize > 0 && (d.group == d.n || d.done == d.h.UsedBlocks) {
			if err := d.checkSum(); err != nil {
				d.err = err
				return runs[:start], 0, err
			}
		}
	}
	if filled == 0 {
		return runs, 0, io.EOF
	}
	return runs, int(filled * bs), nil
}

// checkSum reads the stored checksum that closes the current group and
// compares it with the computed one.
func (d *Reader) checkSum() error {
	at := d.off
	if _, err := io.ReadFull(d.r, d.stored); err != nil {
		return d.readFail(err, at, fmt.Sprintf("the checksum after block %d", d.next-1))
	}
	d.off += int64(d.csize)
	d.group = 0
	if d.sum == nil {
		return nil
	}
	d.calc = d.sum.sum(d.calc[:0])
	if !bytes.Equal(d.calc, d.stored) {
		return &ChecksumError{
			Mode: d.h.Checksum, FirstBlock: d.first, LastBlock: d.next - 1, Offset: at,
			Stored: bytes.Clone(d.stored), Computed: bytes.Clone(d.calc),
		}
	}
	if d.h.Reseed {
		d.sum.reset()
	}
	return nil
}

func (d *Reader) readFail(err error, off int64, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return truncated(off, what)
	}
	return fmt.Errorf("reading %s at image byte %d: %w", what, off, err)
}
