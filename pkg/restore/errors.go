package restore

import (
	"errors"
	"fmt"

	"github.com/imgcast/imgcast/internal/bytesize"
	"github.com/imgcast/imgcast/pkg/restore/decompress"
	"github.com/imgcast/imgcast/pkg/restore/partclone"
	"github.com/imgcast/imgcast/pkg/restore/ptable"
)

// Errors to test for with errors.Is. They are the subpackages' own, so a
// caller needs to import only this package.
var (
	ErrChecksum        = partclone.ErrChecksum
	ErrTruncated       = partclone.ErrTruncated
	ErrNotPartclone    = partclone.ErrNotPartclone
	ErrCorrupt         = partclone.ErrCorrupt
	ErrUnsupported     = partclone.ErrUnsupported
	ErrCompression     = decompress.ErrUnsupported
	ErrDoesNotFit      = ptable.ErrDoesNotFit
	ErrSectorSize      = ptable.ErrSectorSize
	ErrUnsupportedDisk = ptable.ErrUnsupported
	ErrBootArea        = ptable.ErrBootArea
	// ErrDigest: the bytes received do not match the expected SHA-256.
	ErrDigest = errors.New("SHA-256 mismatch")
)

// Aliases for the error types callers inspect with errors.As.
type (
	ChecksumError = partclone.ChecksumError
	FitError      = ptable.FitError
)

// PartitionError says which partition a failure belongs to.
type PartitionError struct {
	Partition int
	Err       error
}

func (e *PartitionError) Error() string { return fmt.Sprintf("partition %d: %v", e.Partition, e.Err) }
func (e *PartitionError) Unwrap() error { return e.Err }

// ImageFitError: a partition image is larger than its target.
type ImageFitError struct {
	Target     string
	DeviceSize int64 // the image's source device size
	Room       int64 // bytes available at the target
}

func (e *ImageFitError) Error() string {
	return fmt.Sprintf("the image is of a %s (%d-byte) device but %s has only %s (%d bytes)",
		bytesize.Format(e.DeviceSize), e.DeviceSize, e.Target, bytesize.Format(e.Room), e.Room)
}

// Is makes errors.Is(err, ErrDoesNotFit) true.
func (e *ImageFitError) Is(target error) bool { return target == ErrDoesNotFit }
