package layout

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

// Port is the UDPcast port base of the i-th stream of an imgcast-server
// session: each partition has its own pair of ports, PortBase+2*i and the
// port above it.
func Port(portBase, i int) int { return portBase + 2*i }

// Imgcast lists the streams imgcast-server sends from an image folder:
// disk 1's partition images in partition order, one stream per partition
// on Port(portBase, i). A split image is "d1pN.img" or "d1pN.img.000"
// followed by ".001", ".002", … without gaps, sent as one stream.
//
// Only disk 1 is sent: the client restores one disk (d1.partitions), and a
// sender for a disk no client asks for would wait for receivers forever.
// The error says why a folder has nothing to send.
func Imgcast(files []File, portBase int) ([]Stream, error) {
	pieces := map[int]map[int]File{} // partition -> piece number -> file
	var otherDisks, legacy []string
	for _, f := range files {
		if strings.HasPrefix(f.Name, "sys.img") || strings.HasPrefix(f.Name, "rec.img") {
			legacy = append(legacy, f.Name)
			continue
		}
		n, ok := ParseName(f.Name)
		if !ok {
			continue
		}
		if n.Disk != 1 {
			otherDisks = append(otherDisks, f.Name)
			continue
		}
		piece := max(n.Piece, 0) // the bare name is the first piece
		if pieces[n.Partition] == nil {
			pieces[n.Partition] = map[int]File{}
		}
		if prev, dup := pieces[n.Partition][piece]; dup {
			a, b := prev.Name, f.Name
			if b < a {
				a, b = b, a
			}
			return nil, fmt.Errorf("both %s and %s claim to be piece %d of partition %d; remove one", a, b, piece, n.Partition)
		}
		pieces[n.Partition][piece] = f
	}
	if len(pieces) == 0 {
		sort.Strings(legacy)
		sort.Strings(otherDisks)
		switch {
		case len(legacy) > 0:
			return nil, fmt.Errorf("only legacy FOG images (%s), which imgcast does not send; recapture it as d1pN.img", strings.Join(legacy, ", "))
		case len(otherDisks) > 0:
			return nil, fmt.Errorf("no images for disk 1 (d1pN.img), only %s", strings.Join(otherDisks, ", "))
		}
		return nil, errors.New("no partition images (d1pN.img or d1pN.img.000)")
	}
	parts := make([]int, 0, len(pieces))
	for p := range pieces {
		parts = append(parts, p)
	}
	sort.Ints(parts)
	streams := make([]Stream, 0, len(parts))
	for i, p := range parts {
		var seq []File
		for k := 0; k < len(pieces[p]); k++ {
			f, ok := pieces[p][k]
			if !ok {
				return nil, fmt.Errorf("partition %d is split into %d pieces but piece .%03d is missing", p, len(pieces[p]), k)
			}
			seq = append(seq, f)
		}
		streams = append(streams, Stream{
			Index: i, ID: ImageName(1, p), Files: names(seq), Size: sizeOf(seq),
			Port: Port(portBase, i), Disk: 1, Partition: p,
		})
	}
	return streams, nil
}

// SizeFunc returns the size of a file of a folder, or an error wrapping
// fs.ErrNotExist when there is none (an HTTP folder asks with HEAD).
type SizeFunc func(ctx context.Context, name string) (int64, error)

// MaxPieces bounds the pieces of one split image Probe looks for.
const MaxPieces = 1000

// Probe finds the pieces of partition part's image on disk disk in a
// folder that cannot be listed, by asking for each name: "dNpM.img.000"
// or else "dNpM.img" first, then ".001", ".002", … up to the first that
// does not exist. It returns nil and no error when the partition has no
// image. The pieces are the same, in the same order, as Imgcast lists for
// a folder it can read.
func Probe(ctx context.Context, size SizeFunc, disk, part int) ([]File, error) {
	first := PieceName(disk, part, 0)
	n, err := size(ctx, first)
	if errors.Is(err, fs.ErrNotExist) {
		first = ImageName(disk, part)
		n, err = size(ctx, first)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	pieces := []File{{first, n}}
	for i := 1; i < MaxPieces; i++ {
		name := PieceName(disk, part, i)
		n, err := size(ctx, name)
		if errors.Is(err, fs.ErrNotExist) {
			return pieces, nil
		}
		if err != nil {
			return nil, err
		}
		pieces = append(pieces, File{name, n})
	}
	return nil, fmt.Errorf("%s: more than %d pieces", ImageName(disk, part), MaxPieces)
}
