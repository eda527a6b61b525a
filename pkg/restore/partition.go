package restore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/imgcast/imgcast/pkg/manifest"
	"github.com/imgcast/imgcast/pkg/restore/decompress"
	"github.com/imgcast/imgcast/pkg/restore/partclone"
)

// Options tune RestorePartition. The zero value is a sensible default.
type Options struct {
	// Partition is the partition number, used in errors and progress
	// (0: a stand-alone partition image).
	Partition int
	// IgnoreChecksums skips partclone data checksums (FOG restores with
	// --ignore_crc); descriptor and bitmap CRCs are still enforced.
	IgnoreChecksums bool
	// AllowRaw writes a stream that is not a partclone image as it is,
	// from byte 0 of the target. Off by default: unknown data is refused.
	AllowRaw bool
	// Verify, when set, checks the SHA-256 of the input bytes as received
	// (before decompression), piece by piece. A whole piece's digest is
	// known only at its end: a mismatch fails the restore after data was
	// written (RestoreDisk then wipes what it wrote).
	Verify []Segment
	// Chunks, when set, is the image's entry in a signed manifest: every
	// 4 MiB chunk of the input is checked against it before a byte of it
	// is decompressed, so altered or injected data never reaches the
	// target. The stream must be exactly the size the manifest gives.
	Chunks *manifest.Stream
	// Compression forces the input's format instead of sniffing it (FOG
	// names it in the image's settings: decompress.FOGFormat).
	Compression decompress.Kind
	// MaxBitmapBytes bounds the memory the image's block bitmap may take
	// (default partclone.MaxBitmapBytes, 64 MiB).
	MaxBitmapBytes uint64
	// InputSize is the expected number of input bytes, for progress only.
	InputSize int64
	// Check is called with the image header before anything is written; an
	// error stops the restore with the target untouched.
	Check func(*partclone.Header) error
	// Progress is called every ProgressInterval (default 1 s) and once at
	// the end.
	Progress         func(Progress)
	ProgressInterval time.Duration
	// FlushEvery is how many bytes are written between writeback flushes
	// (default 32 MiB).
	FlushEvery int64
	// Logf receives warnings (e.g. trailing bytes after the image).
	Logf func(format string, args ...any)
}

// Result describes a finished restore.
type Result struct {
	Compression   decompress.Kind
	Header        *partclone.Header // nil for a raw stream
	In            int64             // bytes read from the source
	Written       int64             // bytes written to the target
	TrailingBytes int64             // decompressed bytes after the image's end (ignored)
	Elapsed       time.Duration
}

const (
	batchSize      = 2 << 20
	batches        = 3
	chunkSize      = 1 << 20
	chunks         = 4
	flushDefault   = 32 << 20
	sniffAheadSize = 64 << 10
)

// RestorePartition decodes the image in src (partclone, compressed or not)
// and writes its used blocks to t. src is read strictly sequentially to its
// end. The header, the target size and opts.Check are all checked before
// the first write. Data is fsynced before it returns successfully.
func RestorePartition(ctx context.Context, src io.Reader, t *Target, opts Options) (res *Result, err error) {
	if opts.Partition > 0 {
		defer func() {
			if err != nil {
				err = &PartitionError{Partition: opts.Partition, Err: err}
			}
		}()
	}
	defer func() {
		if err != nil {
			t.discard()
		}
	}()
	m := &meter{start: time.Now(), part: opts.Partition, inTotal: opts.InputSize}
	m.phase.Store("writing")
	var raw io.Reader = countingReader{r: src, n: &m.in}
	if opts.Chunks != nil {
		v := opts.Chunks.NewReader(raw)
		defer v.Close()
		raw = v
		defer func() {
			if verr := v.Err(); err != nil && verr != nil && !errors.Is(err, manifest.ErrChunk) {
				err = verr // the cause, not what the decoder made of it
			}
		}()
	}
	var dg *digester
	if len(opts.Verify) > 0 {
		if dg, err = newDigester(opts.Verify); err != nil {
			return nil, err
		}
		raw = io.TeeReader(raw, dg)
	}
	dec, kind, err := decompress.NewReaderKind(raw, opts.Compression)
	if err != nil {
		return nil, firstErr(dg, err)
	}
	ra := newReadahead(dec, chunkSize, chunks)
	defer ra.Close(func() { dec.Close() })
	in := bufio.NewReaderSize(ra, sniffAheadSize)
	res = &Result{Compression: kind}

	// Read and check everything before the first write: the descriptor
	// against the target before the bitmap is read (its size comes from
	// the wire), then the bitmap.
	var h *partclone.Header
	magic, _ := in.Peek(len(partclone.Magic))
	if string(magic) == partclone.Magic || !opts.AllowRaw {
		maxBitmap := cmp(opts.MaxBitmapBytes, partclone.MaxBitmapBytes)
		h, err = partclone.ReadHeaderChecked(in, func(h *partclone.Header) error {
			if h.DeviceSize > math.MaxInt64/2 {
				return fmt.Errorf("%w: device size %d", ErrCorrupt, h.DeviceSize)
			}
			if opts.Check != nil {
				if err := opts.Check(h); err != nil {
					return err
				}
			}
			if err := t.fits(int64(h.DeviceSize)); err != nil {
				return err
			}
			if h.BitmapBytes() > maxBitmap {
				return partclone.BitmapTooLarge(h, maxBitmap)
			}
			return nil
		})
		if err != nil {
			return res, firstErr(dg, err)
		}
		if err := t.prepare(int64(h.DeviceSize)); err != nil {
			return res, err
		}
		res.Header = h
		m.total.Store(int64(h.UsedBytes()))
	} else if err := t.prepare(0); err != nil {
		return res, err
	}

	w := newBlockWriter(t, batchSize, batches, cmp(opts.FlushEvery, flushDefault))
	m.written = w.written.Load
	if opts.Progress != nil {
		stop, done := make(chan struct{}), make(chan struct{})
		go m.report(opts.Progress, cmp(opts.ProgressInterval, time.Second), stop, done)
		defer func() {
			close(stop)
			<-done
			p := m.snapshot()
			if err == nil {
				p.Phase = "done"
			}
			opts.Progress(p)
		}()
	}

	if h != nil {
		err = decodeInto(ctx, in, h, w, opts.IgnoreChecksums)
	} else {
		err = copyRaw(ctx, in, t, w)
	}
	if err != nil {
		w.abort()
		res.Written = w.written.Load()
		return res, firstErr(dg, err)
	}
	// Read to the end: it completes the decompressor's own checks (gzip
	// CRC) and the digest, and tells of bytes after the image.
	res.TrailingBytes, err = io.Copy(io.Discard, in)
	if err != nil {
		w.abort()
		return res, firstErr(dg, fmt.Errorf("after the image: %w", err))
	}
	if res.TrailingBytes > 0 && opts.Logf != nil {
		opts.Logf("warning: %d bytes after the end of the image were ignored", res.TrailingBytes)
	}
	m.phase.Store("syncing")
	if err := w.finish(); err != nil {
		return res, err
	}
	res.Written = w.written.Load()
	if dg != nil {
		if err := dg.finish(); err != nil {
			return res, err
		}
	}
	res.In = m.in.Load()
	res.Elapsed = time.Since(m.start)
	return res, nil
}

// firstErr prefers a digest mismatch, which explains any decoding error
// that follows it, and marks a compressed stream cut short as truncated.
func firstErr(dg *digester, err error) error {
	if dg != nil && dg.err != nil {
		return dg.err
	}
	if errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrTruncated) {
		return fmt.Errorf("%w: %w", ErrTruncated, err)
	}
	return err
}

func cmp[T int64 | uint64 | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// decodeInto runs the partclone decoder on this goroutine and hands each
// verified batch to the writer.
func decodeInto(ctx context.Context, in io.Reader, h *partclone.Header, w *blockWriter, ignore bool) error {
	pr, err := partclone.NewDataReader(in, h, partclone.Options{IgnoreChecksums: ignore})
	if err != nil {
		return err
	}
	bs := int64(h.BlockSize)
	if bs > batchSize {
		return fmt.Errorf("%w: %d-byte blocks are larger than the %d-byte batch buffers", ErrUnsupported, bs, batchSize)
	}
	var runs []partclone.Run
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := w.get()
		if b == nil {
			return w.err
		}
		var n int
		runs, n, err = pr.ReadBatch(b.buf, runs[:0])
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		pos := int64(0)
		for _, r := range runs {
			l := int64(r.Count) * bs
			b.extents = append(b.extents, extent{off: int64(r.Block) * bs, n: int(l)})
			pos += l
		}
		if pos != int64(n) {
			return fmt.Errorf("internal error: runs cover %d of %d bytes", pos, n)
		}
		if !w.put(b) {
			return w.err
		}
	}
}

// copyRaw writes a stream without a partclone header as it is.
func copyRaw(ctx context.Context, in io.Reader, t *Target, w *blockWriter) error {
	var pos int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := w.get()
		if b == nil {
			return w.err
		}
		n, err := fill(in, b.buf)
		if n > 0 {
			if t.size >= 0 && pos+int64(n) > t.size {
				return &ImageFitError{Target: t.name, DeviceSize: pos + int64(n), Room: t.size}
			}
			b.extents = append(b.extents, extent{off: pos, n: n})
			pos += int64(n)
			if !w.put(b) {
				return w.err
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
