// Package decompress recognises how an image stream is compressed from its
// first bytes and undoes it: gzip (including pigz's and concatenated
// multi-member files), zstd (any number of frames, skippable frames
// included) or nothing. Formats partclone users meet but this client does
// not decode (xz, bzip2, lz4, lzo) are named in a clear error rather than
// treated as raw data.
package decompress

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Kind is a compression format.
type Kind string

const (
	None Kind = "none"
	Gzip Kind = "gzip"
	Zstd Kind = "zstd"
)

// ErrUnsupported is returned for compression formats this package
// recognises but does not decode.
var ErrUnsupported = errors.New("unsupported compression")

var unsupported = []struct {
	magic []byte
	name  string
}{
	{[]byte{0xFD, '7', 'z', 'X', 'Z', 0x00}, "xz"},
	{[]byte("BZh"), "bzip2"},
	{[]byte{0x04, 0x22, 0x4D, 0x18}, "lz4"},
	{[]byte{0x89, 'L', 'Z', 'O'}, "lzop"},
	{[]byte{0x5D, 0x00, 0x00}, "lzma"},
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
	}
	for _, u := range unsupported {
		if bytes.HasPrefix(b, u.magic) {
			return "", fmt.Errorf("%w: the stream is %s-compressed; imgcast reads gzip, zstd or uncompressed images", ErrUnsupported, u.name)
		}
	}
	return None, nil
}

// NewReader sniffs r and returns a reader of the decompressed stream. It
// reads r strictly sequentially. Close releases the decoder (not r).
func NewReader(r io.Reader) (io.ReadCloser, Kind, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	kind, err := Sniff(br)
	if err != nil {
		return nil, "", err
	}
	switch kind {
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
	}
	return io.NopCloser(br), None, nil
}
