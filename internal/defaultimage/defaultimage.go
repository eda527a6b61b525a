// Package defaultimage builds the image the demo and the end-to-end tests
// send: a small GPT disk with an ext4 and a FAT32 partition, captured as a
// FOG image folder by scripts/make-default-image.sh. `make default-image`
// puts it in build/images/default with the raw disk it was captured from
// in build/reference/default.raw.
package defaultimage

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
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

// Tools are the commands Build needs (scripts/deps.sh installs them).
var Tools = []string{"sgdisk", "sfdisk", "partclone.extfs", "partclone.fat32", "mkfs.ext4", "mkfs.vfat", "mcopy", "zstd", "pigz"}

var shared struct {
	once     sync.Once
	tmp      string
	dir, ref string
	err      error
}

// Shared builds the default image once per process, in a temporary
// directory, and returns its folder and reference disk; tests must not
// change them. find locates the tools (testtools.Find), so a missing one
// is reported before anything runs. RemoveShared deletes it (TestMain).
func Shared(find func(tools ...string) ([]string, error)) (dir, ref string, err error) {
	shared.once.Do(func() {
		if _, shared.err = find(Tools...); shared.err != nil {
			return
		}
		if shared.tmp, shared.err = os.MkdirTemp("", "imgcast-default-image-"); shared.err != nil {
			return
		}
		shared.dir, shared.ref = filepath.Join(shared.tmp, "images", "default"), filepath.Join(shared.tmp, "reference.raw")
		shared.err = Build(shared.dir, shared.ref)
	})
	return shared.dir, shared.ref, shared.err
}

// RemoveShared removes what Shared built.
func RemoveShared() {
	if shared.tmp != "" {
		os.RemoveAll(shared.tmp)
	}
}
