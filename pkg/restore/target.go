package restore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Target is where one partition image goes: a partition device, a byte
// range of a disk (device or image file), or a regular file.
type Target struct {
	f      *os.File
	name   string
	offset int64 // where the partition starts in f
	size   int64 // room in bytes, or -1 for a regular file that may grow
	owned  bool  // Close closes f
	// create: the file does not exist yet and is created only once the
	// image has been checked, so a refused image leaves nothing behind.
	create  bool
	created bool
}

// NewTarget writes into f starting at byte offset, with room for size
// bytes (size < 0: a regular file that is grown to the image's device size).
// Closing the Target does not close f.
func NewTarget(f *os.File, offset, size int64) *Target {
	return &Target{f: f, name: f.Name(), offset: offset, size: size}
}

// OpenTarget opens a partition device (exclusively, so a mounted one is
// refused) or a regular file, which is grown to the image's device size
// when it is shorter. A file that does not exist is created once the image
// header has been checked, and removed again if the restore fails.
func OpenTarget(path string) (*Target, error) {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if dir, err := os.Stat(filepath.Dir(path)); err != nil || !dir.IsDir() {
			return nil, fmt.Errorf("cannot create %s: its folder does not exist", path)
		}
		return &Target{name: path, size: -1, owned: true, create: true}, nil
	case err != nil:
		return nil, err
	case st.Mode().IsRegular():
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		return &Target{f: f, name: path, size: -1, owned: true}, nil
	case st.Mode()&fs.ModeDevice != 0 && st.Mode()&fs.ModeCharDevice == 0:
		f, err := os.OpenFile(path, os.O_RDWR|os.O_EXCL, 0)
		if err != nil {
			return nil, fmt.Errorf("opening %s (is it mounted or in use?): %w", path, err)
		}
		size, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("size of %s: %w", path, err)
		}
		return &Target{f: f, name: path, size: size, owned: true}, nil
	}
	return nil, fmt.Errorf("%s is neither a block device nor a regular file", path)
}

// Name is the target's path, for messages.
func (t *Target) Name() string { return t.name }

// Close closes the file if OpenTarget opened it.
func (t *Target) Close() error {
	if t.owned && t.f != nil {
		return t.f.Close()
	}
	return nil
}

// fits checks that an image of deviceSize bytes fits, without touching the
// target.
func (t *Target) fits(deviceSize int64) error {
	if t.size >= 0 && deviceSize > t.size {
		return &ImageFitError{Target: t.name, DeviceSize: deviceSize, Room: t.size}
	}
	return nil
}

// prepare checks that an image of deviceSize bytes fits, creates a new
// file and sizes a growable regular file. Nothing has been written before
// it returns nil.
func (t *Target) prepare(deviceSize int64) error {
	if err := t.fits(deviceSize); err != nil || t.size >= 0 {
		return err
	}
	if t.create && !t.created {
		f, err := os.OpenFile(t.name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		t.f, t.created = f, true
	}
	st, err := t.f.Stat()
	if err != nil {
		return err
	}
	if end := t.offset + deviceSize; st.Size() < end {
		if err := t.f.Truncate(end); err != nil {
			return fmt.Errorf("sizing %s to %d bytes: %w", t.name, end, err)
		}
	}
	return nil
}

// discard removes a file this Target created, after a failed restore: a
// half-written new file must not be mistaken for a restored one.
func (t *Target) discard() {
	if !t.created {
		return
	}
	t.f.Close()
	os.Remove(t.name)
	t.f, t.created = nil, false
}
