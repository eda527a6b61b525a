package ptable

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// GPTEntrySectors is the number of sectors of sectorSize bytes the
// 128-entry GPT partition array takes (32 for 512-byte sectors).
func GPTEntrySectors(sectorSize int64) uint64 { return gptEntrySectors(sectorSize) }

// Reread asks the kernel to re-read the partition table of the disk f (a
// no-op for an image file). It fails while a partition of it is in use.
func Reread(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeDevice == 0 {
		return nil
	}
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0); err != nil {
		return fmt.Errorf("re-reading the partition table of %s: %w", f.Name(), err)
	}
	return nil
}
