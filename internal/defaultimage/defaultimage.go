// Package defaultimage builds the image the demo and the end-to-end tests
// send: a small GPT disk with an ext4 and a FAT32 partition, captured as a
// FOG image folder by scripts/make-default-image.sh. `make default-image`
// puts it in build/images/default with the raw disk it was captured from
// in build/reference/default.raw.
package defaultimage

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
)

// Layout of the default disk.
const (
	// DiskSize is the size of the captured disk. A target of exactly this
	// size restores to a disk byte-identical to the reference (a larger
	// one moves the backup GPT).
	DiskSize = 80 << 20
	// Partition offsets and sizes in bytes.
	Part1Offset, Part1Size = 2048 * 512, 81920 * 512  // ext4
	Part2Offset, Part2Size = 83968 * 512, 73728 * 512 // FAT32
)

// Script returns the path of scripts/make-default-image.sh in the source
// tree this package was built from.
func Script() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "scripts", "make-default-image.sh")
}

// Build makes the image folder imageDir (replacing it) and the reference
// disk file reference. It needs the tools scripts/deps.sh installs.
func Build(imageDir, reference string) error {
	out, err := exec.Command(Script(), imageDir, reference).CombinedOutput()
	if err != nil {
		return fmt.Errorf("building the default image: %v\n%s", err, out)
	}
	return nil
}
