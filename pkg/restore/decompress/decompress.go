// Package decompress recognises how an image stream is compressed from its
// first bytes and undoes it: gzip (including pigz's and concatenated
// multi-member files), zstd (any number of frames, skippable frames
// included), xz, lz4 (frame and legacy format, concatenated frames), bzip2
// (including pbzip2's concatenated streams) or nothing. Formats partclone
// users meet but this client does not decode (lzop, lzma) are named in a
// clear error rather than treated as raw data. A caller that knows the
// format (FOG's image setting) can force it instead of sniffing.
package decompress

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
)

// Kind is a compression format.
type Kind string

const (
	// Auto (the empty Kind) asks NewReaderKind to sniff the format.
	Auto  Kind = ""
	None  Kind = "none"
	Gzip  Kind = "gzip"
	Zstd  Kind = "zstd"
	Xz    Kind = "xz"
	Lz4   Kind = "lz4"
	Bzip2 Kind = "bzip2"
)

// ErrUnsupported is returned for compression formats this package
// recognises but does not decode, and for FOG's partimage images.
var ErrUnsupported = errors.New("unsupported compression")

// MaxXzDictionary bounds the LZMA2 dictionary an xz stream may ask for: the
// decoder allocates it whole. xz -9 uses 64 MiB; the default (-6) 8 MiB.
const MaxXzDictionary = 64 << 20

var unsupported = []struct {
	magic []byte
	name  string
}{
	{[]byte{0x89, 'L', 'Z', 'O'}, "lzop"},
	{[]byte{0x5D, 0x00, 0x00}, "lzma"},
	{[]byte("LZIP"), "lzip"},
}

// Sniff tells the compression of what follows in r without consuming it.
func Sniff(r *bufio.Reader) (Kind, error) {
	b, err := r.Peek(6)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	switch {
	case len(b) >= 2 && b[0] == 0x1F && b[1] == 0x8B:
		return Gzip, nil
	case len(b) >= 4 && b[1] == 0xB5 && b[2] == 0x2F && b[3] == 0xFD && b[0] == 0x28:
		return Zstd, nil
	case len(b) >= 4 && b[0]&0xF0 == 0x50 && b[1] == 0x2A && b[2] == 0x4D && b[3] == 0x18:
		return Zstd, nil // a skippable frame first (pzstd writes one)
	case bytes.HasPrefix(b, []byte{0xFD, '7', 'z', 'X', 'Z', 0x00}):
		return Xz, nil
	case bytes.HasPrefix(b, []byte{0x04, 0x22, 0x4D, 0x18}), bytes.HasPrefix(b, []byte{0x02, 0x21, 0x4C, 0x18}):
		return Lz4, nil // frame format, or the legacy format of lz4 -l
	case len(b) >= 4 && b[0] == 'B' && b[1] == 'Z' && b[2] == 'h' && b[3] >= '1' && b[3] <= '9':
		return Bzip2, nil
	}
	for _, u := range unsupported {
		if bytes.HasPrefix(b, u.magic) {
			return "", fmt.Errorf("%w: the stream is %s-compressed; imgcast reads gzip, zstd, xz, lz4, bzip2 or uncompressed images", ErrUnsupported, u.name)
		}
	}
	return None, nil
}

// FOGFormat maps a FOG image's format setting (imgFormat) to a Kind: 0 and
// 2 are gzip (pigz, split or not), 3 and 4 uncompressed, 5 and 6 zstd. 1 is
// partimage, which imgcast does not read: it is refused before anything is
// written.
func FOGFormat(n int) (Kind, error) {
	switch n {
	case 0, 2:
		return Gzip, nil
	case 3, 4:
		return None, nil
	case 5, 6:
		return Zstd, nil
	case 1:
		return "", fmt.Errorf("%w: the image is in FOG format 1 (partimage), which imgcast does not read; recapture it with partclone", ErrUnsupported)
	}
	return "", fmt.Errorf("%w: unknown FOG image format %d", ErrUnsupported, n)
}

// NewReader sniffs r and returns a reader of the decompressed stream. It
// reads r strictly sequentially. Close releases the decoder (not r).
func NewReader(r io.Reader) (io.ReadCloser, Kind, error) {
	return NewReaderKind(r, Auto)
}

// NewReaderKind is NewReader with the format forced to kind (Auto: sniff).
// A stream that is not of the forced kind fails when it is read.
func NewReaderKind(r io.Reader, kind Kind) (io.ReadCloser, Kind, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if kind == Auto {
		var err error
		if kind, err = Sniff(br); err != nil {
			return nil, "", err
		}
	}
	switch kind {
	case None:
		return io.NopCloser(br), None, nil
	case Gzip:
		z, err := gzip.NewReader(br)
		if err != nil {
			return nil, kind, fmt.Errorf("gzip: %w", err)
		}
		return z, kind, nil
	case Zstd:
		z, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(2))
		if err != nil {
			return nil, kind, fmt.Errorf("zstd: %w", err)
		}
		return z.IOReadCloser(), kind, nil
	case Xz:
		if err := checkXzDictionary(br); err != nil {
			return nil, kind, err
		}
		z, err := xz.NewReader(br)
		if err != nil {
			return nil, kind, fmt.Errorf("xz: %w", err)
		}
		return io.NopCloser(errorPrefix{z, "xz"}), kind, nil
	case Lz4:
		return io.NopCloser(errorPrefix{lz4.NewReader(br), "lz4"}), kind, nil
	case Bzip2:
		return io.NopCloser(errorPrefix{bzip2.NewReader(br), "bzip2"}), kind, nil
	}
	return nil, "", fmt.Errorf("%w: %q", ErrUnsupported, kind)
}

// errorPrefix names the decoder in its errors (io.EOF stays io.EOF).
type errorPrefix struct {
	r    io.Reader
	name string
}

func (e errorPrefix) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%s: %w", e.name, err)
	}
	return n, err
}

// checkXzDictionary reads the first block header of an xz stream (without
// consuming it) and refuses an LZMA2 dictionary above MaxXzDictionary
// before the decoder allocates it. Later blocks of the same stream are
// written with the same settings by xz and pixz.
func checkXzDictionary(br *bufio.Reader) error {
	const streamHeader = 12
	b, err := br.Peek(streamHeader + 1)
	if err != nil {
		return nil // too short to matter: the decoder reports it
	}
	hsize := (int(b[streamHeader]) + 1) * 4
	if b[streamHeader] == 0 { // an index right away: an empty stream
		return nil
	}
	hdr, err := br.Peek(streamHeader + hsize)
	if err != nil {
		return nil
	}
	h := hdr[streamHeader:]
	flags := h[1]
	p := 2
	varint := func() (uint64, bool) {
		v, n := binary.Uvarint(h[p : len(h)-4])
		if n <= 0 {
			return 0, false
		}
		p += n
		return v, true
	}
	if flags&0x40 != 0 {
		if _, ok := varint(); !ok {
			return nil
		}
	}
	if flags&0x80 != 0 {
		if _, ok := varint(); !ok {
			return nil
		}
	}
	for range int(flags&0x03) + 1 {
		id, ok1 := varint()
		size, ok2 := varint()
		if !ok1 || !ok2 || uint64(len(h)-4-p) < size {
			return nil
		}
		if id == 0x21 && size == 1 {
			if d := xzDictSize(h[p]); d > MaxXzDictionary {
				return fmt.Errorf("%w: the xz stream needs a %d MiB dictionary (at most %d MiB is allowed: recompress with xz -9 or lower)",
					ErrUnsupported, d>>20, MaxXzDictionary>>20)
			}
		}
		p += int(size)
	}
	return nil
}

// xzDictSize decodes LZMA2's one-byte dictionary size.
func xzDictSize(b byte) uint64 {
	if b >= 40 {
		return 1<<32 - 1
	}
	return uint64(2|b&1) << (b/2 + 11)
}
