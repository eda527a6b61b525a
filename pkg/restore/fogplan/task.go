// Package fogplan decides, before anything is written, what a FOG deploy
// task does to a machine's disks: which disk or disks are written (FOG's
// "fdrive", the image's dN.size for multi-disk images, or the first
// disk), which partition table goes on each (as captured, filled to the
// disk for a resizable image, none for a single-partition or dd image),
// which image file is restored to which byte range, which image files
// the server streams that no partition takes (they must be received and
// thrown away, or every later stream lands on the wrong partition), and
// what follows the data: growing filesystems, GPT identifiers, swap.
//
// Everything FOG's client does that imgcast does not — partimage images,
// LVM volumes, the Windows XP/Vista/7 single-file layouts — is refused
// here with a clear message, and what it skips with consequences (the
// Windows hostname change, post-download scripts) is a warning, so a
// task that cannot be done right fails before the first write.
package fogplan

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/imgcast/imgcast/pkg/restore/decompress"
)

// ErrUnsupported wraps every refusal of a task imgcast cannot do.
var ErrUnsupported = errors.New("not supported by imgcast")

// ErrTask wraps errors in the task's own settings.
var ErrTask = errors.New("bad FOG task")

// Image types (FOG's imgType).
const (
	Resizable    = "n"   // single disk, partitions filled to the disk
	MultiPart    = "mps" // single disk, table as captured
	MultiAll     = "mpa" // every disk, tables as captured
	WholeDiskRaw = "dd"  // one stream for the whole disk
)

// Task is what FOG's kernel command line says about the deploy.
type Task struct {
	// Image is img=, the image's folder under the store (dd images are
	// files named after it).
	Image string
	// Type is imgType: n, mps, mpa or dd.
	Type string
	// PartitionType is imgPartitionType: "all", "mbr" (the table only) or
	// a partition number (that partition only, no table).
	PartitionType string
	// Format is imgFormat (0–6); Legacy is imgLegacy, which FOS prefers
	// when set.
	Format, Legacy string
	// FDrive is the host's "Primary Disk": paths, sizes, serials or WWNs,
	// comma separated.
	FDrive string
	// OSID is osid (1 XP, 2 Vista, 4 Windows other, 5 7, 6 8, 7 8.1,
	// 9 10, 10 11, 11 Server, 50 Linux, 51 ChromeOS, 99 other).
	OSID int
	// LargeSize (largesize=) picks the largest disk instead of the first.
	LargeSize bool
	// HostEarly (hostearly=1) and Hostname ask FOS to rename Windows
	// offline, which imgcast does not do.
	HostEarly bool
	Hostname  string
	// PostDownload is the store's postdownloadscripts/fog.postdownload
	// (nil when absent); imgcast does not run it.
	PostDownload []byte
}

// Compression maps imgFormat (or imgLegacy) to the decompressor FOS uses,
// and says whether the images are split into 200 MiB pieces. An empty
// format returns "" (sniff the stream).
func Compression(t Task) (decompress.Kind, bool, error) {
	f := strings.TrimSpace(t.Legacy)
	if f == "" {
		f = strings.TrimSpace(t.Format)
	}
	if f == "" {
		return "", false, nil
	}
	switch f {
	case "0":
		return decompress.Gzip, false, nil
	case "2":
		return decompress.Gzip, true, nil
	case "3":
		return decompress.None, false, nil
	case "4":
		return decompress.None, true, nil
	case "5":
		return decompress.Zstd, false, nil
	case "6":
		return decompress.Zstd, true, nil
	case "1":
		return "", false, fmt.Errorf("%w: imgFormat=1 is a partimage image; imgcast restores partclone images only (recapture the image with a partclone format)", ErrUnsupported)
	}
	return "", false, fmt.Errorf("%w: imgFormat=%q (FOG uses 0–6)", ErrTask, f)
}

// partitionType parses imgPartitionType: all, mbr, or a number (n > 0).
func partitionType(s string) (all, mbr bool, n int, err error) {
	switch s = strings.TrimSpace(s); s {
	case "", "all":
		return true, false, 0, nil
	case "mbr":
		return false, true, 0, nil
	}
	n, err = strconv.Atoi(s)
	if err != nil || n < 1 || n > 4096 {
		return false, false, 0, fmt.Errorf("%w: imgPartitionType=%q (all, mbr or a partition number)", ErrTask, s)
	}
	return false, false, n, nil
}

// windows reports whether osid names a Windows version.
func windows(osid int) bool {
	switch osid {
	case 1, 2, 4, 5, 6, 7, 9, 10, 11:
		return true
	}
	return false
}

// resizableOS is FOS's validResizeOS: the osids a resizable image may
// have.
func resizableOS(osid int) bool { return windows(osid) || osid == 50 || osid == 51 }

// NonTrivialScript reports whether a post-download script does anything:
// FOG installs fog.postdownload with comments only.
func NonTrivialScript(b []byte) bool {
	for _, line := range strings.Split(string(b), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return true
		}
	}
	return false
}
