package layout

import (
	"fmt"
	"regexp"
	"sort"
)

// ImageType is a FOG image's type (imgType on the kernel command line of
// its boot, imageTypeID in its database).
type ImageType string

// FOG's image types.
const (
	// TypeResizable ("n", imageTypeID 1): single disk, resizable.
	TypeResizable ImageType = "n"
	// TypeMultiPartSingle ("mps", 2): multiple partitions, disk 1.
	TypeMultiPartSingle ImageType = "mps"
	// TypeMultiPartAll ("mpa", 3): multiple partitions, every disk.
	TypeMultiPartAll ImageType = "mpa"
	// TypeRaw ("dd", 4): the whole disk as one raw stream.
	TypeRaw ImageType = "dd"
)

// Generation is a FOG server generation whose multicast manager builds
// the session's file list its own way.
type Generation int

// The generations.
const (
	// FOG15 is FOG 1.5.x: one udp-sender run per file, chained on one
	// port base. Only names whose extension is exactly "img" are listed
	// (dd: every file), so split images ("d1p2.img.000", …) send nothing.
	FOG15 Generation = iota
	// FOG16 is FOG 1.6: split pieces are sent as one stream, and every
	// stream starts with a FOGMC1 header naming it.
	FOG16
)

func (g Generation) String() string {
	switch g {
	case FOG15:
		return "FOG 1.5"
	case FOG16:
		return "FOG 1.6"
	}
	return fmt.Sprintf("Generation(%d)", int(g))
}

// FOGOptions say which FOG session to describe.
type FOGOptions struct {
	Type       ImageType
	Generation Generation
	// PortBase is the session's port (port= on the kernel command line):
	// every stream uses it.
	PortBase int
	// Partition, when not 0, is imgPartitionType=N: only disk 1..9's
	// partition N is sent (FOG's filter /^d[0-9]p$N\.img$/).
	Partition int
}

// FOG lists the streams FOG's multicast manager sends for an image folder
// with these files: the file list of the image type in natural,
// case-insensitive order (PHP's natcasesort: d1p1, d1p2, d1p10, d2p1),
// filtered by imgPartitionType, every stream on the one port base, in the
// order the client must open its receivers.
//
//   - n, mps: every d1pN.img (disk 1)
//   - mpa: every dNpM.img (every disk)
//   - dd: every file in the folder; the first stream is the whole disk 1,
//     any further one is received and discarded (on FOG 1.5 a dd folder
//     works only with exactly one file).
//
// On FOG 1.6 split pieces (d1p2.img.000, .001, …) join their stem's stream
// in piece order; on 1.5 they are not sent at all. A stream whose name
// does not map to a partition (dd's extra files) has Disk 0.
//
// FOG's legacy layouts (sys.img/rec.img of old Windows images, single-file
// XP images) and LVM sidecar files are not described.
func FOG(files []File, opt FOGOptions) ([]Stream, error) {
	switch opt.Type {
	case TypeResizable, TypeMultiPartSingle, TypeMultiPartAll, TypeRaw:
	default:
		return nil, fmt.Errorf("FOG image type %q is not n, mps, mpa or dd", opt.Type)
	}
	if opt.Generation != FOG15 && opt.Generation != FOG16 {
		return nil, fmt.Errorf("unknown FOG generation %d", int(opt.Generation))
	}
	if opt.Partition < 0 {
		return nil, fmt.Errorf("imgPartitionType %d is not a partition number", opt.Partition)
	}
	var streams []Stream
	byID := map[string]int{} // stream id -> index in streams (1.6 grouping)
	type piece struct {
		file File
		num  int
	}
	pieces := map[string][]piece{}
	for _, f := range files {
		n, parsed := ParseName(f.Name)
		if !fogLists(opt, f.Name, n, parsed) {
			continue
		}
		if opt.Generation == FOG16 {
			id := StreamID(f.Name)
			if _, seen := byID[id]; !seen {
				byID[id] = len(streams)
				streams = append(streams, Stream{ID: id})
			}
			pieces[id] = append(pieces[id], piece{f, max(n.Piece, 0)})
			continue
		}
		streams = append(streams, Stream{ID: StreamID(f.Name), Files: []string{f.Name}, Size: f.Size})
	}
	if opt.Generation == FOG16 {
		for i := range streams {
			s := &streams[i]
			ps := pieces[s.ID]
			sort.Slice(ps, func(a, b int) bool {
				if ps[a].num != ps[b].num {
					return ps[a].num < ps[b].num
				}
				return NaturalLess(ps[a].file.Name, ps[b].file.Name)
			})
			seq := make([]File, len(ps))
			for k, p := range ps {
				seq[k] = p.file
			}
			s.Files, s.Size = names(seq), sizeOf(seq)
		}
	}
	// 1.5 sorts its list of files, 1.6 its list of streams.
	key := func(s Stream) string { return s.ID }
	if opt.Generation == FOG15 {
		key = func(s Stream) string { return s.Files[0] }
	}
	sort.SliceStable(streams, func(a, b int) bool { return NaturalLess(key(streams[a]), key(streams[b])) })
	if opt.Partition != 0 {
		only := regexp.MustCompile(fmt.Sprintf(`^d[0-9]p%d\.img$`, opt.Partition))
		kept := streams[:0]
		for _, s := range streams {
			if only.MatchString(s.ID) {
				kept = append(kept, s)
			}
		}
		streams = kept
	}
	for i := range streams {
		s := &streams[i]
		s.Index, s.Port = i, opt.PortBase
		switch {
		case opt.Type == TypeRaw:
			if i == 0 {
				s.Disk = 1
			}
		default:
			n, _ := ParseName(s.ID)
			s.Disk, s.Partition = n.Disk, n.Partition
		}
	}
	return streams, nil
}

// fogLists says whether FOG's file list for the image type has name.
func fogLists(opt FOGOptions, name string, n Name, parsed bool) bool {
	if opt.Type == TypeRaw {
		return true
	}
	if !parsed || (n.Piece >= 0 && opt.Generation == FOG15) {
		return false
	}
	return opt.Type == TypeMultiPartAll || n.Disk == 1
}
