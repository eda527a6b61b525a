// Package fill computes the partition table of a FOG resizable image (image
// type "n") for a disk of any size, the way FOG's client does before it
// writes the data: from the table the image was captured from
// (dN.partitions), the table after its filesystems were shrunk
// (dN.minimum.partitions) and the partitions that must keep their size
// (dN.fixed_size_partitions), it scales every other partition to the room
// the disk has, never below its shrunk size.
//
// The rules follow FOS's "filldisk" step: fixed partitions, swap, and the
// area before the first partition keep their size; the other partitions
// share what is left in proportion to their original sizes, each rounded
// down to 256 KiB and never below its minimum; partitions are laid out in
// their original order, one after the other. Where FOS's step is unsound
// this package differs, on purpose:
//
//   - a partition whose rounded size would fall below its minimum is
//     rounded up instead (FOS rounds down, cutting into the filesystem);
//   - every start is aligned (FOS places a partition right after the one
//     before, so an odd-sized fixed partition misaligns all that follow);
//   - the GPT backup area at the end of the disk is always left free, and
//     a layout that does not fit is an error naming the size needed
//     (FOS trims whatever partition comes last, fixed or not);
//   - a dos extended partition is sized around its logical partitions,
//     with room for each logical's boot record (FOS scales it like a data
//     partition and counts its logicals twice);
//   - a GPT partition of the Linux swap type is fixed like a dos type 82
//     one.
package fill

import (
	"errors"
	"fmt"
	"math/bits"
	"sort"
	"strconv"
	"strings"

	"github.com/imgcast/imgcast/internal/bytesize"
	"github.com/imgcast/imgcast/pkg/restore/ptable"
	"github.com/imgcast/imgcast/pkg/restore/sfdisk"
)

// AlignBytes is the alignment of starts and of scaled sizes: FOS rounds to
// 512 sectors of 512 bytes.
const AlignBytes = 256 << 10

// LinuxSwapGUID is the GPT partition type of Linux swap.
const LinuxSwapGUID = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"

// ErrInput wraps errors about the image's dumps (they do not belong
// together, or a list is malformed).
var ErrInput = errors.New("bad resizable-image metadata")

// TooSmallError says the disk cannot hold the image even with every
// resizable partition at its minimum.
type TooSmallError struct {
	Need, Have int64 // bytes
}

func (e *TooSmallError) Error() string {
	return fmt.Sprintf("the disk holds %s but this resizable image needs at least %s (%d bytes) with every partition at its minimum size",
		bytesize.Format(e.Have), bytesize.Format(e.Need), e.Need)
}

// Is makes errors.Is(err, ptable.ErrDoesNotFit) true.
func (e *TooSmallError) Is(target error) bool { return target == ptable.ErrDoesNotFit }

// ParseFixed reads dN.fixed_size_partitions: partition numbers separated
// by colons ("1:3"), possibly with empty fields, a trailing newline or NUL
// bytes (FOS strips those too).
func ParseFixed(b []byte) ([]int, error) {
	if len(b) > 64<<10 {
		return nil, fmt.Errorf("%w: the fixed-size partition list is %d bytes long", ErrInput, len(b))
	}
	var out []int
	seen := map[int]bool{}
	for _, tok := range strings.FieldsFunc(string(b), func(r rune) bool {
		return r == ':' || r == 0 || r == ' ' || r == '\t' || r == '\n' || r == '\r'
	}) {
		n, err := strconv.Atoi(tok)
		if err != nil || n < 1 || n > 4096 {
			return nil, fmt.Errorf("%w: %q in the fixed-size partition list is not a partition number", ErrInput, tok)
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out, nil
}

// IsSwap reports whether p is a swap partition by its type (dos 82, or
// the GPT Linux swap GUID).
func IsSwap(label string, p sfdisk.Partition) bool {
	if label == "dos" {
		return p.TypeByte() == 0x82
	}
	return p.Type == LinuxSwapGUID
}

// Layout is the result of Fill.
type Layout struct {
	// Table is the new table: the original's header and partition entries
	// (types, GUIDs, names, flags) with new starts and sizes.
	Table *sfdisk.Dump
	// Fixed lists the partitions that kept their original size (the fixed
	// list, swap, an empty extended partition); the others were scaled and
	// their filesystems should be grown to fill them.
	Fixed map[int]bool
}

// entry is one partition during the computation.
type entry struct {
	p        sfdisk.Partition
	min      uint64 // sectors
	fixed    bool
	extended bool
	logical  bool
}

// Fill computes the table for a disk of geometry g. orig is dN.partitions,
// minimum is dN.minimum.partitions (nil: the original sizes are the
// minimums, as FOS does without the file) and fixed the numbers from
// dN.fixed_size_partitions. Nothing is written; the result is meant for
// ptable.Write, which checks it again.
func Fill(orig, minimum *sfdisk.Dump, fixed []int, g ptable.Geometry) (*Layout, error) {
	if orig == nil {
		return nil, fmt.Errorf("%w: no original partition table", ErrInput)
	}
	if minimum == nil || len(minimum.Partitions) == 0 {
		minimum = orig
	}
	if g.LogicalSectorSize <= 0 || g.Size <= 0 {
		return nil, fmt.Errorf("disk geometry unknown (size %d, sector %d)", g.Size, g.LogicalSectorSize)
	}
	if minimum.Label != orig.Label || minimum.SectorSize != orig.SectorSize {
		return nil, fmt.Errorf("%w: the minimum table (%s, %d-byte sectors) does not match the original (%s, %d-byte sectors)",
			ErrInput, minimum.Label, minimum.SectorSize, orig.Label, orig.SectorSize)
	}
	if int64(orig.SectorSize) != g.LogicalSectorSize {
		return nil, fmt.Errorf("%w: the image was taken from a disk with %d-byte sectors, this disk has %d-byte sectors",
			ptable.ErrSectorSize, orig.SectorSize, g.LogicalSectorSize)
	}
	if len(orig.Partitions) == 0 {
		return nil, fmt.Errorf("%w: the original table has no partitions", ErrInput)
	}
	ss := uint64(g.LogicalSectorSize)
	align := max(AlignBytes/ss, 1)
	sectors := uint64(g.Size) / ss
	if sectors < 2 {
		return nil, &TooSmallError{Need: int64(orig.Partitions[0].Size * ss), Have: g.Size}
	}

	isFixed := map[int]bool{}
	for _, n := range fixed {
		isFixed[n] = true
	}
	entries := make([]*entry, 0, len(orig.Partitions))
	byNum := map[int]*entry{}
	var ext *entry
	for _, p := range orig.Partitions {
		e := &entry{p: p, min: p.Size, fixed: isFixed[p.Number] || IsSwap(orig.Label, p)}
		if orig.Label == "dos" {
			e.extended = p.Extended()
			e.logical = p.Number > 4
			if e.extended {
				ext = e
			}
		}
		entries = append(entries, e)
		byNum[p.Number] = e
	}
	minStart := uint64(0)
	for i, mp := range minimum.Partitions {
		e := byNum[mp.Number]
		if e == nil {
			return nil, fmt.Errorf("%w: the minimum table has partition %d, the original table does not", ErrInput, mp.Number)
		}
		if e.extended != (orig.Label == "dos" && mp.Extended()) {
			return nil, fmt.Errorf("%w: partition %d is extended in one table and not in the other", ErrInput, mp.Number)
		}
		e.min = mp.Size
		if i == 0 || mp.Start < minStart {
			minStart = mp.Start
		}
	}
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].p.Start < entries[j].p.Start })

	// The area partitions may use: from the first partition's start (or
	// the GPT's first usable sector) to the end of the disk, less the
	// backup GPT.
	first, last := minStart, sectors-1
	if orig.Label == "gpt" {
		entrySectors := (128*128 + ss - 1) / ss
		first = max(first, orig.FirstLBA, 2+entrySectors)
		if sectors < 2*(1+entrySectors)+2 {
			return nil, &TooSmallError{Need: int64(first+1+(1+entrySectors)) * int64(ss), Have: g.Size}
		}
		last = sectors - 2 - entrySectors
	}

	hasLogicals := false
	for _, e := range entries {
		hasLogicals = hasLogicals || e.logical
	}
	if ext != nil {
		// An extended partition is sized around its logicals; an empty one
		// keeps its size.
		ext.fixed = !hasLogicals
	}

	// What the fixed partitions and the layout itself take; what the
	// resizable ones had and need at least.
	var fixedSectors, origVariable uint64
	var variable []*entry
	for _, e := range entries {
		switch {
		case e.extended && hasLogicals:
			// Sized around its logicals.
		case e.logical:
			fixedSectors += align // room for its boot record
			if e.fixed {
				fixedSectors += e.p.Size
			} else {
				variable = append(variable, e)
				origVariable += e.p.Size
			}
		case e.fixed:
			fixedSectors += e.p.Size
		default:
			variable = append(variable, e)
			origVariable += e.p.Size
		}
	}
	room := int64(last+1) - int64(first) - int64(fixedSectors)
	size := map[int]uint64{}
	for _, e := range entries {
		if e.fixed {
			size[e.p.Number] = e.p.Size
		}
	}
	for _, e := range variable {
		s := uint64(0)
		if room > 0 && origVariable > 0 {
			s = mulDiv(uint64(room), alignDown(e.p.Size, align), origVariable)
		}
		s = max(s, e.min)
		if s = alignDown(s, align); s < e.min {
			s = alignUp(e.min, align)
		}
		size[e.p.Number] = s
	}

	// Rounding (aligned starts, minimums rounded up) can overshoot by a few
	// alignment units: take them back from the resizable partitions, the
	// last first, never below their minimum.
	for {
		out, end := place(entries, orig, size, first, align)
		if end <= last {
			if orig.Label == "gpt" {
				out.LastLBA = last
			}
			fixedSet := map[int]bool{}
			for _, e := range entries {
				if e.fixed && !e.extended {
					fixedSet[e.p.Number] = true
				}
			}
			return &Layout{Table: out, Fixed: fixedSet}, nil
		}
		need := alignUp(end-last, align)
		for i := len(variable) - 1; i >= 0 && need > 0; i-- {
			e := variable[i]
			s := size[e.p.Number]
			spare := uint64(0)
			if s > e.min {
				spare = alignDown(s-e.min, align)
			}
			take := min(spare, need)
			size[e.p.Number] = s - take
			need -= take
		}
		if need == alignUp(end-last, align) {
			// Nothing could be taken: every resizable partition is at its
			// minimum and the layout still does not fit.
			tail := sectors - 1 - last
			return nil, &TooSmallError{Need: int64(end+1+tail) * int64(ss), Have: g.Size}
		}
	}
}

// place lays the partitions out in their original order from sector first
// on, each start aligned (but an unaligned first start, such as 63, is
// kept), and returns the table and its last used sector.
func place(entries []*entry, orig *sfdisk.Dump, size map[int]uint64, first, align uint64) (*sfdisk.Dump, uint64) {
	out := *orig
	out.Partitions = make([]sfdisk.Partition, 0, len(entries))
	cursor, end := first, uint64(0)
	ext := -1 // index in out.Partitions of an open extended partition
	closeExt := func() {
		if ext >= 0 {
			out.Partitions[ext].Size = cursor - out.Partitions[ext].Start
			ext = -1
		}
	}
	for i, e := range entries {
		if !e.logical {
			closeExt()
		}
		start := alignUp(cursor, align)
		if i == 0 {
			start = cursor
		}
		p := e.p
		if e.extended && !e.fixed {
			// Sized around its logicals once they are placed.
			p.Start, p.Size = start, 0
			out.Partitions = append(out.Partitions, p)
			ext, cursor = len(out.Partitions)-1, start
			continue
		}
		if e.logical {
			start = alignUp(cursor, align) + align // room for its boot record
		}
		p.Start, p.Size = start, size[p.Number]
		cursor = start + p.Size
		end = max(end, cursor-1)
		out.Partitions = append(out.Partitions, p)
	}
	closeExt()
	// Keep the table in partition-number order, as sfdisk dumps it.
	sort.SliceStable(out.Partitions, func(i, j int) bool { return out.Partitions[i].Number < out.Partitions[j].Number })
	return &out, end
}

func alignDown(v, a uint64) uint64 { return v - v%a }

func alignUp(v, a uint64) uint64 {
	if r := v % a; r != 0 {
		return v + a - r
	}
	return v
}

// mulDiv is a*b/c without overflow (c > 0; the result fits because b ≤ c
// in every use).
func mulDiv(a, b, c uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	if hi >= c {
		return ^uint64(0)
	}
	q, _ := bits.Div64(hi, lo, c)
	return q
}
