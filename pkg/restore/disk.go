package restore

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/imgcast/imgcast/pkg/manifest"
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
	// Sums holds dN.sha256 (base name → digest); nil when absent or when
	// a signed manifest is used instead. When present it lists dN.partitions,
	// dN.mbr (if the folder has one) and every image piece.
	Sums map[string][]byte
	// Manifest is the folder's verified signed manifest, when LoadOptions
	// had a public key; every partition image is then checked chunk by
	// chunk against it (Chunks).
	Manifest *manifest.Manifest
	// Images maps partition numbers to their images; partitions without
	// one get only their table entry.
	Images map[int]*imagedir.Image
}

// LoadOptions tune LoadDiskImageWith.
type LoadOptions struct {
	// PublicKey, when set, requires dN.manifest signed by it: the
	// metadata is checked against it here, and each chunk of every image
	// as it streams (DiskImage.Chunks).
	PublicKey ed25519.PublicKey
	// ImageID is the id the manifest must name; default
	// manifest.ImageID(Folder.String()), the folder's last path element.
	ImageID string
}

// LoadDiskImage reads dN.partitions, dN.mbr and dN.sha256 and finds the
// partition images (HEAD requests over HTTP; nothing large is read).
func LoadDiskImage(ctx context.Context, f imagedir.Folder, disk int) (*DiskImage, error) {
	return LoadDiskImageWith(ctx, f, disk, LoadOptions{})
}

// LoadDiskImageWith is LoadDiskImage with a signed manifest when opts has
// a public key: nothing is returned (so nothing can be written) unless the
// manifest's signature, image id, dN.partitions, dN.mbr and the list of
// image pieces with their sizes all verify.
//
// Without a key, dN.sha256 is used when the folder has one: it must list
// dN.partitions, dN.mbr (when present) and every image piece, or the image
// is refused. Those metadata files are checked here; a piece's digest is
// known only when its last byte has streamed by, so a mismatch fails the
// partition after data was written (RestoreDisk then wipes the disk).
func LoadDiskImageWith(ctx context.Context, f imagedir.Folder, disk int, opts LoadOptions) (*DiskImage, error) {
	di := &DiskImage{Folder: f, Disk: disk, Images: map[int]*imagedir.Image{}}
	name := func(format string) string { return fmt.Sprintf(format, disk) }

	if opts.PublicKey != nil {
		id := opts.ImageID
		if id == "" {
			id = manifest.ImageID(f.String())
		}
		m, err := manifest.Load(ctx, f, disk, id, opts.PublicKey)
		if err != nil {
			return nil, err
		}
		di.Manifest = m
	} else {
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
		if di.Manifest == nil {
			break
		}
		if _, listed := di.Manifest.File(bootName); listed {
			return nil, fmt.Errorf("%w: %s is in the signed manifest but not in %s", manifest.ErrManifest, bootName, f)
		}
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
		if di.Manifest != nil {
			if err := checkPieces(di.Manifest, fmt.Sprintf("d%dp%d.img", disk, p.Number), im); err != nil {
				return nil, err
			}
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
	if di.Manifest != nil {
		for _, s := range di.Manifest.Streams {
			if !di.hasImage(s.Name) {
				return nil, fmt.Errorf("%w: the signed manifest lists %s, which is not the image of a partition in %s",
					manifest.ErrManifest, s.Name, dumpName)
			}
		}
	}
	return di, nil
}

func (di *DiskImage) hasImage(name string) bool {
	for _, im := range di.Images {
		if im.Name == name {
			return true
		}
	}
	return false
}

// checkPieces compares the pieces found for an image (nil: none) with the
// signed manifest's: names, order and sizes.
func checkPieces(m *manifest.Manifest, name string, im *imagedir.Image) error {
	s, listed := m.Stream(name)
	switch {
	case im == nil && !listed:
		return nil
	case im == nil:
		return fmt.Errorf("%w: %s is in the signed manifest but not in the folder", manifest.ErrManifest, name)
	case !listed:
		return fmt.Errorf("%w: %s is in the folder but not in the signed manifest", manifest.ErrManifest, name)
	}
	var found []string
	for _, pc := range im.Pieces {
		found = append(found, pc.Name)
	}
	if strings.Join(found, " ") != strings.Join(s.Pieces, " ") {
		return fmt.Errorf("%w: %s is %d pieces in the folder (%s … %s) but %d in the signed manifest (%s … %s)",
			manifest.ErrManifest, name, len(found), found[0], found[len(found)-1], len(s.Pieces), s.Pieces[0], s.Pieces[len(s.Pieces)-1])
	}
	for _, pc := range im.Pieces {
		f, _ := m.File(pc.Name)
		if pc.Size >= 0 && pc.Size != f.Size {
			return fmt.Errorf("%w: %s is %d bytes, the signed manifest says %d", manifest.ErrManifest, pc.Name, pc.Size, f.Size)
		}
	}
	return nil
}

// checkSmall verifies a metadata file against the signed manifest, or
// against dN.sha256, which must list it.
func (di *DiskImage) checkSmall(name string, b []byte) error {
	if di.Manifest != nil {
		return di.Manifest.CheckFile(name, b)
	}
	if di.Sums == nil {
		return nil
	}
	want := di.Sums[name]
	if want == nil {
		return &DigestError{Name: name, Detail: fmt.Sprintf("d%d.sha256 does not list it; refusing the image (list every file: sha256sum d%d.* d%dp*.img* > d%d.sha256)", di.Disk, di.Disk, di.Disk, di.Disk)}
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

// Chunks is what RestorePartition's Options.Chunks needs for im: its
// entry in the signed manifest, or nil when the folder is not verified by
// one.
func (di *DiskImage) Chunks(im *imagedir.Image) *manifest.Stream {
	if di.Manifest == nil {
		return nil
	}
	s, _ := di.Manifest.Stream(im.Name)
	return s
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
	var r io.ReadCloser = im.Open(ctx, p.Image.Folder)
	defer r.Close()
	if s := p.Image.Chunks(im); s != nil {
		v := s.NewReader(r)
		defer v.Close()
		r = v
	}
	dec, _, err := decompress.NewReader(r)
	if err != nil {
		return err
	}
	defer dec.Close()
	// The descriptor is checked against the partition before the bitmap
	// (whose size comes from the image) is read.
	_, err = partclone.ReadHeaderChecked(dec, func(h *partclone.Header) error {
		if err := p.CheckHeader(n, h); err != nil {
			return err
		}
		if h.BitmapBytes() > partclone.MaxBitmapBytes {
			return partclone.BitmapTooLarge(h, partclone.MaxBitmapBytes)
		}
		return nil
	})
	return err
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
	IgnoreChecksums bool
	// Compression forces the image's format instead of sniffing it.
	Compression      decompress.Kind
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
		Chunks:           p.Image.Chunks(pp.Image),
		Compression:      opts.Compression,
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
// each partition that has an image, in partition order. When a di has a
// signed manifest, each image is verified chunk by chunk before it is
// decompressed. If anything fails once the table is written, the disk is
// wiped (Plan.Wipe) so it cannot be mistaken for an imaged one, and the
// error says so.
func RestoreDisk(ctx context.Context, di *DiskImage, f *os.File, g ptable.Geometry, opts DiskOptions) error {
	plan, err := NewPlan(di, g)
	if err != nil {
		return err
	}
	if err := plan.Peek(ctx); err != nil {
		return err
	}
	if err := plan.WriteTable(f); err != nil {
		return plan.Failed(f, true, nil, err)
	}
	var written []int
	for _, pp := range plan.Partitions {
		if pp.Image == nil {
			if opts.Logf != nil {
				opts.Logf("partition %d: no image, table entry only", pp.Number)
			}
			continue
		}
		written = append(written, pp.Number)
		r := pp.Image.Open(ctx, di.Folder)
		_, err := plan.RestorePartition(ctx, f, pp.Number, r, PartitionOptions{
			IgnoreChecksums: opts.IgnoreChecksums,
			Progress:        opts.Progress,
			Logf:            opts.Logf,
		})
		r.Close()
		if err != nil {
			return plan.Failed(f, true, written, err)
		}
	}
	return nil
}

// OpenImage opens the image folder at location (a local directory or an
// http(s) URL) and reads disk disk's metadata (LoadDiskImageWith): with
// opts.PublicKey set, only a folder whose signed manifest verifies.
func OpenImage(ctx context.Context, location string, disk int, opts LoadOptions) (*DiskImage, error) {
	f, err := imagedir.Open(location)
	if err != nil {
		return nil, fmt.Errorf("image folder %q: %w", location, err)
	}
	return LoadDiskImageWith(ctx, f, disk, opts)
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

// Failed wipes what a failed restore wrote to the disk f (Wipe) and
// returns cause with what was wiped, or with why the wipe failed too.
// errors.Is and errors.As still see cause.
func (p *Plan) Failed(f *os.File, table bool, partitions []int, cause error) error {
	rep, err := p.Wipe(f, table, partitions)
	if err != nil {
		return fmt.Errorf("%w; wiping the disk after the failure failed too: %v", cause, err)
	}
	return fmt.Errorf("%w; the disk was wiped so it cannot pass for imaged (%s)", cause, rep)
}

// WipeSize is how much of the start of each written partition Wipe zeroes:
// every filesystem signature blkid knows lies within it.
const WipeSize = 1 << 20

// WipeReport says what Wipe zeroed.
type WipeReport struct {
	Table      string // "gpt (both copies)", "dos entries", or ""
	Partitions []int
	Bytes      int64 // zeroed in all
	// Reread is false when the kernel did not take the emptied table (e.g.
	// a partition is in use); it sees it at the next boot.
	Reread bool
}

func (r *WipeReport) String() string {
	var parts []string
	if r.Table != "" {
		parts = append(parts, "partition table: "+r.Table)
	}
	for _, n := range r.Partitions {
		parts = append(parts, fmt.Sprintf("first MiB of partition %d", n))
	}
	if len(parts) == 0 {
		return "nothing written, nothing wiped"
	}
	return "zeroed " + strings.Join(parts, ", ")
}

// Wipe makes a disk that a restore failed on unrecognisable as imaged: it
// zeroes the first WipeSize bytes of each partition in partitions, and
// with table the partition table (GPT: the protective MBR's entries, both
// headers and both entry arrays; dos: the four entries and the boot
// signature; the boot code before them is left), then syncs and asks the
// kernel to re-read the table.
func (p *Plan) Wipe(f *os.File, table bool, partitions []int) (*WipeReport, error) {
	rep := &WipeReport{}
	zero := func(off, n int64) error {
		if n <= 0 {
			return nil
		}
		if _, err := f.WriteAt(make([]byte, n), off); err != nil {
			return fmt.Errorf("zeroing %d bytes at byte %d of %s: %w", n, off, f.Name(), err)
		}
		rep.Bytes += n
		return nil
	}
	for _, n := range partitions {
		pp, ok := p.Partition(n)
		if !ok {
			return rep, fmt.Errorf("the table has no partition %d", n)
		}
		if err := zero(pp.Offset, min(WipeSize, pp.Size)); err != nil {
			return rep, err
		}
		rep.Partitions = append(rep.Partitions, n)
	}
	if table {
		ss := p.Geometry.LogicalSectorSize
		if err := zero(446, 66); err != nil {
			return rep, err
		}
		rep.Table = "dos entries"
		if p.Image.Dump.Label == "gpt" {
			// Header and entries at LBA 1, and the backup entries and
			// header that end at the disk's last sector.
			n := (1 + int64(ptable.GPTEntrySectors(ss))) * ss
			if err := zero(ss, n); err != nil {
				return rep, err
			}
			if err := zero(p.Geometry.Size-n, n); err != nil {
				return rep, err
			}
			rep.Table = "gpt (both copies)"
		}
	}
	if err := f.Sync(); err != nil {
		return rep, fmt.Errorf("syncing %s after the wipe: %w", f.Name(), err)
	}
	if table {
		rep.Reread = ptable.Reread(f) == nil
	}
	return rep, nil
}
