package partclone

import (
	"encoding/hex"
	"errors"
	"fmt"
)

// Errors a caller can test for with errors.Is.
var (
	// ErrNotPartclone: the stream does not start with "partclone-image".
	ErrNotPartclone = errors.New("not a partclone image")
	// ErrUnsupported: a partclone image this decoder does not read
	// (another format version, a big-endian writer, a future option).
	ErrUnsupported = errors.New("unsupported partclone image")
	// ErrCorrupt: the descriptor or bitmap is damaged (bad CRC, impossible
	// field values).
	ErrCorrupt = errors.New("damaged partclone image")
	// ErrTruncated: the stream ended before the image did.
	ErrTruncated = errors.New("image stream ended early")
	// ErrChecksum: a data checksum did not match; see ChecksumError.
	ErrChecksum = errors.New("checksum mismatch")
)

// ChecksumError names the blocks a failed data checksum covers.
type ChecksumError struct {
	Mode ChecksumMode
	// FirstBlock and LastBlock are the block numbers (block k is at byte
	// k*BlockSize of the partition) of the first and last block of the
	// group the checksum covers.
	FirstBlock, LastBlock uint64
	// Offset is the position of the stored checksum in the decompressed
	// image stream.
	Offset           int64
	Stored, Computed []byte
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("%s checksum mismatch in blocks %d–%d (stored %s, computed %s at image byte %d)",
		e.Mode, e.FirstBlock, e.LastBlock, hex.EncodeToString(e.Stored), hex.EncodeToString(e.Computed), e.Offset)
}

// Is makes errors.Is(err, ErrChecksum) true.
func (e *ChecksumError) Is(target error) bool { return target == ErrChecksum }

func corrupt(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, a...))
}

func unsupported(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrUnsupported, fmt.Sprintf(format, a...))
}

// truncated reports an early end of stream while reading what, at byte off.
func truncated(off int64, what string) error {
	return fmt.Errorf("%w: at image byte %d, while reading %s", ErrTruncated, off, what)
}
