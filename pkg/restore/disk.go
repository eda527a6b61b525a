package restore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/imgcast/imgcast/pkg/restore/decompress"
	"github.com/imgcast/imgcast/pkg/restore/imagedir"
	"github.com/imgcast/imgcast/pkg/restore/partclone"
	"github.com/imgcast/imgcast/pkg/restore/ptable"
	"github.com/imgcast/imgcast/pkg/restore/sfdisk"
)

// Limits on the metadata files read whole into memory.
const (
	maxDumpSize  = 1 << 20
	maxBootSize  = 16 << 20
	maxSumsSize  = 1 << 20
	sumsFileName = "d%d.sha256"
)

// DiskImage is the metadata of one disk of an image folder, read before
// anything is written.
type DiskImage struct {
	Folder imagedir.Folder
	Disk   int // the N of dN.*
	Dump   *sfdisk.Dump
	// Boot is dN.mbr: the boot area before the first partition (dos) or
	// an sgdisk backup (gpt); nil when the folder has none.
	Boot []byte
	// Sums holds dN.sha256 (base name → digest); nil when absent. When
	// present it must list every image piece.
	Sums map[string][]byte
	// Images maps partition numbers to their images; partitions without
	// one get only their table entry.
	Images map[int]*imagedir.Image
}

// LoadDiskImage reads dN.partitions, dN.mbr and dN.sha256 and finds the
// partition images (HEAD requests over HTTP; nothing large is read).
func LoadDiskImage(ctx context.Context, f imagedir.Folder, disk int) (*DiskImage, error) {
	di := &DiskImage{Folder: f, Disk: disk, Images: map[int]*imagedir.Image{}}
	name := func(format string) string { return fmt.Sprintf(format, disk) }

	sums, err := imagedir.ReadFile(ctx, f, name(sumsFileName), maxSumsSize)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		if di.Sums, err = imagedir.ParseSHA256Sums(sums); err != nil {
			return nil, fmt.Errorf("%s: %w", name(sumsFileName), err)
		}
	}

	dumpName := name("d%d.partitions")
	dump, err := imagedir.ReadFile(ctx, f, dumpName, maxDumpSize)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f, err)
	}
	if err := di.checkSmall(dumpName, dump); err != nil {
		return nil, err
	}
	if di.Dump, err = sfdisk.Parse(bytes.NewReader(dump)); err != nil {
		return nil, fmt.Errorf("%s: %w", dumpName, err)
	}

	bootName := name("d%d.mbr")
	boot, err := imagedir.ReadFile(ctx, f, bootName, maxBootSize)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		if err := di.checkSmall(bootName, boot); err != nil {
			return nil, err
		}
		di.Boot = boot
	}

	for _, p := range di.Dump.Partitions {
		if p.Extended() && di.Dump.Label == "dos" {
			continue
		}
		im, err := imagedir.ProbeImage(ctx, f, disk, p.Number)
		if err != nil {
			return nil, err
		}
		if im == nil {
			continue
		}
		if di.Sums != nil {
			for _, pc := range im.Pieces {
				if di.Sums[pc.Name] == nil {
					return nil, fmt.Errorf("%s does not list %s", name(sumsFileName), pc.Name)
				}
			}
		}
		di.Images[p.Number] = im
	}
	return di, nil
}

// checkSmall verifies a metadata file against dN.sha256 when it lists it.
func (di *DiskImage) checkSmall(name string, b []byte) error {
	want := di.Sums[name]
	if want == nil {
		return nil
	}
	if got := sha256.Sum256(b); !bytes.Equal(got[:], want) {
		return &DigestError{Name: name, Want: hex.EncodeToString(want), Got: hex.EncodeToString(got[:])}
	}
	return nil
}

// Segments is what RestorePartition's Options.Verify needs for im: the
// digest of each piece, or nil when the folder has no dN.sha256.
func (di *DiskImage) Segments(im *imagedir.Image) []Segment {
	if di.Sums == nil {
		return nil
	}
	segs := make([]Segment, len(im.Pieces))
	for i, p := range im.Pieces {
		segs[i] = Segment{Name: p.Name, Size: p.Size, SHA256: di.Sums[p.Name]}
	}
	return segs
}

// Plan is a checked layout of a DiskImage on one disk.
type Plan struct {
	Image      *DiskImage
	Geometry   ptable.Geometry
	Partitions []PlannedPartition
}

// PlannedPartition is one partition of a Plan.
type PlannedPartition struct {
	Number       int
	Offset, Size int64           // bytes on the disk
	Image        *imagedir.Image // nil: only the table entry is written
	// Header is the image's partclone header once Peek (or the restore)
	// has read it.
	Header *partclone.Header
}

// NewPlan checks that the table and boot area fit a disk of geometry g
// (sector size, every partition inside the disk) without writing anything.
func NewPlan(di *DiskImage, g ptable.Geometry) (*Plan, error) {
	if err := ptable.Check(di.Dump, g, di.Boot); err != nil {
		return nil, err
	}
	p := &Plan{Image: di, Geometry: g}
	ss := g.LogicalSectorSize
	for _, dp := range di.Dump.Partitions {
		if dp.Extended() && di.Dump.Label == "dos" {
			continue
		}
		p.Partitions = append(p.Partitions, PlannedPartition{
			Number: dp.Number, Offset: int64(dp.Start) * ss, Size: int64(dp.Size) * ss, Image: di.Images[dp.Number],
		})
	}
	return p, nil
}

// Partition returns the planned partition n.
func (p *Plan) Partition(n int) (*PlannedPartition, bool) {
	for i := range p.Partitions {
		if p.Partitions[i].Number == n {
			return &p.Partitions[i], true
		}
	}
	return nil, false
}

// CheckHeader checks that an image header fits partition n.
func (p *Plan) CheckHeader(n int, h *partclone.Header) error {
	pp, ok := p.Partition(n)
	if !ok {
		return fmt.Errorf("the table has no partition %d", n)
	}
	if h.DeviceSize > uint64(pp.Size) {
		return &ImageFitError{Target: fmt.Sprintf("partition %d", n), DeviceSize: int64(h.DeviceSize), Room: pp.Size}
	}
	pp.Header = h
	return nil
}

// Peek reads the header of every partition image (a few KiB of each
// stream) and checks it fits its partition, so a whole-disk restore fails
// before the table is written. Only possible where the images can be read
// twice (a folder, not a multicast stream).
func (p *Plan) Peek(ctx context.Context) error {
	for _, pp := range p.Partitions {
		if pp.Image == nil {
			continue
		}
		if err := p.peekOne(ctx, pp.Number, pp.Image); err != nil {
			return &PartitionError{Partition: pp.Number, Err: err}
		}
	}
	return nil
}

func (p *Plan) peekOne(ctx context.Context, n int, im *imagedir.Image) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := im.Open(ctx, p.Image.Folder)
	defer r.Close()
	dec, _, err := decompress.NewReader(r)
	if err != nil {
		return err
	}
	defer dec.Close()
	h, err := partclone.ReadHeader(dec)
	if err != nil {
		return err
	}
	return p.CheckHeader(n, h)
}

// WriteTable writes the partition table and boot area to the disk f.
func (p *Plan) WriteTable(f *os.File) error {
	return ptable.Write(f, p.Image.Dump, p.Geometry, p.Image.Boot)
}

// VerifyTable reads the partition table back from the disk f and checks
// that every planned partition is there with its start and size.
func (p *Plan) VerifyTable(f *os.File) error {
	t, err := ptable.Read(f, p.Geometry)
	if err != nil {
		return err
	}
	if t.Label != p.Image.Dump.Label {
		return fmt.Errorf("the disk holds a %s table, the image a %s one", t.Label, p.Image.Dump.Label)
	}
	for _, pp := range p.Partitions {
		e, ok := t.Entry(pp.Number)
		if !ok {
			return fmt.Errorf("partition %d is missing from the table read back", pp.Number)
		}
		if e.Offset != pp.Offset || e.Size != pp.Size {
			return fmt.Errorf("partition %d reads back at %d+%d bytes, want %d+%d", pp.Number, e.Offset, e.Size, pp.Offset, pp.Size)
		}
	}
	return nil
}

// Target is where partition n goes on the disk f (by offset; the same
// bytes as the partition device).
func (p *Plan) Target(f *os.File, n int) (*Target, error) {
	pp, ok := p.Partition(n)
	if !ok {
		return nil, fmt.Errorf("the table has no partition %d", n)
	}
	return NewTarget(f, pp.Offset, pp.Size), nil
}

// PartitionOptions tune Plan.RestorePartition.
type PartitionOptions struct {
	IgnoreChecksums  bool
	Progress         func(Progress)
	ProgressInterval time.Duration
	Logf             func(format string, args ...any)
}

// RestorePartition restores planned partition n of the disk f from src,
// the partition's image as stored (its pieces in order): every piece is
// checked against dN.sha256 when the folder has one, and the image header
// against the partition before its first block is written.
func (p *Plan) RestorePartition(ctx context.Context, f *os.File, n int, src io.Reader, opts PartitionOptions) (*Result, error) {
	pp, ok := p.Partition(n)
	if !ok {
		return nil, fmt.Errorf("the table has no partition %d", n)
	}
	if pp.Image == nil {
		return nil, fmt.Errorf("partition %d has no image", n)
	}
	return RestorePartition(ctx, src, NewTarget(f, pp.Offset, pp.Size), Options{
		Partition:        n,
		IgnoreChecksums:  opts.IgnoreChecksums,
		Verify:           p.Image.Segments(pp.Image),
		InputSize:        pp.Image.Size(),
		Check:            func(h *partclone.Header) error { return p.CheckHeader(n, h) },
		Progress:         opts.Progress,
		ProgressInterval: opts.ProgressInterval,
		Logf:             opts.Logf,
	})
}

// DiskOptions tune RestoreDisk.
type DiskOptions struct {
	IgnoreChecksums bool
	Progress        func(Progress)
	Logf            func(format string, args ...any)
}

// RestoreDisk restores a whole disk from an image folder onto f (a disk
// device or image file of geometry g): it checks the table, the boot area
// and every image header first, then writes the table and boot area, then
// each partition that has an image, in partition order.
func RestoreDisk(ctx context.Context, di *DiskImage, f *os.File, g ptable.Geometry, opts DiskOptions) error {
	plan, err := NewPlan(di, g)
	if err != nil {
		return err
	}
	if err := plan.Peek(ctx); err != nil {
		return err
	}
	if err := plan.WriteTable(f); err != nil {
		return err
	}
	for _, pp := range plan.Partitions {
		if pp.Image == nil {
			if opts.Logf != nil {
				opts.Logf("partition %d: no image, table entry only", pp.Number)
			}
			continue
		}
		r := pp.Image.Open(ctx, di.Folder)
		_, err := plan.RestorePartition(ctx, f, pp.Number, r, PartitionOptions{
			IgnoreChecksums: opts.IgnoreChecksums,
			Progress:        opts.Progress,
			Logf:            opts.Logf,
		})
		r.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// OpenImage opens the image folder at location (a local directory or an
// http(s) URL) and reads disk disk's metadata (LoadDiskImage).
func OpenImage(ctx context.Context, location string, disk int) (*DiskImage, error) {
	f, err := imagedir.Open(location)
	if err != nil {
		return nil, fmt.Errorf("image folder %q: %w", location, err)
	}
	return LoadDiskImage(ctx, f, disk)
}

// OpenDisk opens a whole-disk target for writing — a block device
// exclusively (a mounted or otherwise used disk is refused) or an existing
// image file — and reads its geometry. sectorSize, when not 0, is the
// logical sector size of an image file (default 512).
func OpenDisk(path string, sectorSize int64) (*os.File, ptable.Geometry, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, ptable.Geometry{}, fmt.Errorf("disk %s: %w", path, err)
	}
	flags := os.O_RDWR
	if st.Mode()&fs.ModeDevice != 0 && st.Mode()&fs.ModeCharDevice == 0 {
		flags |= os.O_EXCL
	} else if !st.Mode().IsRegular() {
		return nil, ptable.Geometry{}, fmt.Errorf("%s is neither a block device nor a regular file", path)
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return nil, ptable.Geometry{}, fmt.Errorf("opening disk %s (is it mounted or in use?): %w", path, err)
	}
	g, err := ptable.ReadGeometry(f, sectorSize)
	if err != nil {
		f.Close()
		return nil, ptable.Geometry{}, err
	}
	return f, g, nil
}
