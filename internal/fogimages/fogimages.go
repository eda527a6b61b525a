// Package fogimages builds small test images the way FOG's client
// captures them — types n (resizable), mps, mpa and dd — with
// scripts/make-fog-images.sh. `make fog-images` puts them in a FOG image
// store, build/fog/images (with its .mntcheck), and the disks they were
// captured from in build/fog/reference; the QEMU scenarios serve that
// store over NFS as a FOG storage node would.
package fogimages

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
)

// The images, by folder name (FOG's img=) and what a task for them says.
const (
	// Resizable is type n, imgFormat 5: a 64 MiB GPT disk with ext4 (p1),
	// swap (p2, fixed, UUID SwapUUID) and NTFS (p3), the filesystems
	// shrunk at capture; it is meant for larger disks.
	Resizable = "fog-n"
	// MultiPart is type mps, imgFormat 0: a 48 MiB dos disk with ext4
	// (p1), FAT16 (p2) and an empty extended partition (p3) that has an
	// image nobody writes, as old FOG captures have.
	MultiPart = "fog-mps"
	// MultiAll is type mpa, imgFormat 6 (split zstd): disk 1 a 40 MiB GPT
	// with ext4, disk 2 a 24 MiB dos disk with FAT16, with d1.size and
	// d2.size.
	MultiAll = "fog-mpa"
	// WholeDisk is type dd, imgFormat 5: the fog-mps disk as one
	// partclone.imager stream, fog-dd.000.
	WholeDisk = "fog-dd"

	// SwapUUID is the UUID of fog-n's swap partition.
	SwapUUID = "2d8e5f41-9c3b-4a7e-8f10-6b5c4d3e2a19"
	// ResizableDiskSize is the size of the disk fog-n was captured from.
	ResizableDiskSize = 64 << 20
)

// References are the source disks in the reference folder, by image.
var References = map[string][]string{
	Resizable: {"fog-n.raw"},
	MultiPart: {"fog-mps.raw"},
	MultiAll:  {"fog-mpa-d1.raw", "fog-mpa-d2.raw"},
	WholeDisk: {"fog-mps.raw"},
}

// Files are the files each filesystem holds (paths inside it).
var Files = []string{"README.txt", "etc/hostname", "data/lines.txt", "data/random.bin"}

// Script returns the path of scripts/make-fog-images.sh in the source
// tree this package was built from.
func Script() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "scripts", "make-fog-images.sh")
}

// Build makes the image store (its .mntcheck and the four folders,
// replacing them) and the reference disks. It needs the tools
// scripts/deps.sh installs.
func Build(store, reference string) error {
	out, err := exec.Command(Script(), store, reference).CombinedOutput()
	if err != nil {
		return fmt.Errorf("building the FOG test images: %v\n%s", err, out)
	}
	return nil
}
