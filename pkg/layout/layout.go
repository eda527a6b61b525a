// Package layout is the one place that knows how an image folder's files
// become multicast streams: which files make up which stream, in which
// order, on which UDPcast port, under which FOGMC1 id, and which disk and
// partition each stream belongs to.
//
// Two servers' layouts are described:
//
//   - Imgcast: imgcast-server's, which the imgcast client expects: disk 1's
//     partition images, split pieces joined into one stream, one stream
//     per partition on its own port base (PortBase + 2*i). Probe finds a
//     partition's pieces in a folder that cannot be listed (HTTP: one
//     size request per name).
//   - FOG: FOG's multicast manager, which sends every stream of a session
//     on one port base, one after the other, in the order of its file
//     list (FOG 1.5.x: one stream per file; 1.6: split pieces grouped,
//     each stream behind a FOGMC1 header).
//
// Everything here works on names and sizes only; nothing is read or sent.
package layout

import (
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/imgcast/imgcast/internal/natsort"
	"github.com/imgcast/imgcast/pkg/fogmc"
)

// File is one entry of an image folder: a name inside the folder and its
// size in bytes (-1 when unknown).
type File struct {
	Name string
	Size int64
}

// Stream is one UDPcast stream of a session.
type Stream struct {
	// Index is the stream's place in the session, from 0.
	Index int
	// ID names the stream in its FOGMC1 header, e.g. "d1p1.img".
	ID string
	// Files are the files sent, in order, as one stream.
	Files []string
	// Size is the sum of the files' sizes, -1 if one is unknown.
	Size int64
	// Port is the UDPcast port base of the stream (the sender uses Port+1).
	Port int
	// Disk and Partition are where the stream is written: d<Disk>p<Partition>.
	// Partition 0 with a Disk is the whole disk (FOG's dd images); Disk 0
	// is a stream the client must receive and discard to stay in step
	// with the session.
	Disk, Partition int
}

// Name is a parsed partition-image file name: d<Disk>p<Partition>.img,
// optionally with a split piece number, d1p2.img.003.
type Name struct {
	Disk, Partition int
	// Piece is the split piece number; -1 for a name without a suffix.
	Piece int
}

// maxNumber bounds disk, partition and piece numbers in names, so a
// hostile or broken listing cannot make a caller allocate or loop by them.
const maxNumber = 1 << 20

// ParseName parses a partition-image file name: "d1p2.img",
// "d1p2.img.000" (split pieces have three digits, as `split -a 3 -d`
// makes them). Other names, directories included, yield ok=false.
func ParseName(name string) (n Name, ok bool) {
	rest, ok := strings.CutPrefix(name, "d")
	if !ok {
		return Name{}, false
	}
	diskStr, rest, ok := strings.Cut(rest, "p")
	if !ok {
		return Name{}, false
	}
	partStr, suffix, ok := strings.Cut(rest, ".img")
	if !ok {
		return Name{}, false
	}
	if n.Disk, ok = number(diskStr); !ok {
		return Name{}, false
	}
	if n.Partition, ok = number(partStr); !ok {
		return Name{}, false
	}
	n.Piece = -1
	if suffix == "" {
		return n, true
	}
	digits, ok := strings.CutPrefix(suffix, ".")
	if !ok || len(digits) != 3 {
		return Name{}, false
	}
	if n.Piece, ok = number(digits); !ok {
		return Name{}, false
	}
	return n, true
}

// number parses a run of ASCII digits (no sign, no spaces) up to maxNumber.
func number(s string) (int, bool) {
	if s == "" || len(s) > 7 {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	v, err := strconv.Atoi(s)
	return v, err == nil && v <= maxNumber
}

// ImageName is the name of partition part's image on disk disk: "d1p2.img".
func ImageName(disk, part int) string { return fmt.Sprintf("d%dp%d.img", disk, part) }

// PieceName is the name of a split image's piece: "d1p2.img.001".
func PieceName(disk, part, piece int) string {
	return fmt.Sprintf("%s.%03d", ImageName(disk, part), piece)
}

// StreamID is the FOGMC1 id of the stream that carries file name, by
// FOG's rule (fogmc.IDForFile): a split piece is named by its stem
// ("d1p1.img.000" → "d1p1.img"), anything else verbatim.
func StreamID(name string) string { return fogmc.IDForFile(path.Base(name)) }

// NaturalLess orders names the way PHP's natcasesort does for image
// files (natsort.Less): d1p2 < d1p10 < d2p1, case aside.
func NaturalLess(a, b string) bool { return natsort.Less(a, b) }

// sizeOf sums sizes; -1 if any is unknown.
func sizeOf(files []File) int64 {
	var n int64
	for _, f := range files {
		if f.Size < 0 {
			return -1
		}
		n += f.Size
	}
	return n
}

func names(files []File) []string {
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.Name
	}
	return out
}
