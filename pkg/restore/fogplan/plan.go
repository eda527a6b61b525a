package fogplan

import (
	"fmt"
	"sort"
	"strings"

	"github.com/imgcast/imgcast/pkg/restore"
	"github.com/imgcast/imgcast/pkg/restore/decompress"
	"github.com/imgcast/imgcast/pkg/restore/fill"
	"github.com/imgcast/imgcast/pkg/restore/gptid"
	"github.com/imgcast/imgcast/pkg/restore/imagedir"
	"github.com/imgcast/imgcast/pkg/restore/partclone"
	"github.com/imgcast/imgcast/pkg/restore/ptable"
	"github.com/imgcast/imgcast/pkg/restore/sfdisk"
)

// Plan is a checked FOG deploy for this machine. Carry it out disk by
// disk: write Table (when not nil), then each Write in order (with the
// decompressor Compression names, checking each image header with
// Write.Check before its first byte is written, and growing the
// filesystem after its data when Grow is set), receiving and discarding
// the streams of Skip at their place in the server's order; then set the
// GPT identifiers and make the swap areas.
type Plan struct {
	Type          string // n, mps, mpa or dd
	PartitionType string // all, mbr or a number
	// Compression is the decompressor imgFormat selects ("" = sniff the
	// stream); Split says the images come in 200 MiB pieces.
	Compression decompress.Kind
	Split       bool
	Disks       []*DiskPlan
	// Warnings are things FOS would do that imgcast does not; show them
	// before imaging starts.
	Warnings []string
}

// DiskPlan is what happens to one disk.
type DiskPlan struct {
	// Image is the image's disk dN (nil for a dd image).
	Image    *DiskMeta
	Disk     Disk
	Geometry ptable.Geometry
	// Table writes the partition table and boot area (Table.WriteTable);
	// nil when none is written (a single partition, a dd image).
	Table *restore.Plan
	// Writes are the images to restore, in partition order.
	Writes []*Write
	// Skip are image files of this disk that the server streams but no
	// partition takes.
	Skip []Skipped
	// GPT sets the disk GUID and partition type/GUIDs after the data
	// (gptid.Set); nil for a dos table or when nothing is restored.
	GPT *GPTFixup
	// Swaps are swap areas to make after the data (mkswap.Make).
	Swaps []Swap
}

// Write is one image restored to a byte range of the disk.
type Write struct {
	Partition    int // 0: the whole disk (dd)
	Offset, Size int64
	Image        *imagedir.Image
	// Verify is the SHA-256 of each piece (restore.Options.Verify), when
	// the folder has a dN.sha256.
	Verify []restore.Segment
	// Grow: grow the filesystem to the partition after its data
	// (growfs.Grow with the header's filesystem name).
	Grow bool
}

// Check refuses an image whose source device is larger than the range
// it goes to; use it as restore.Options.Check.
func (w *Write) Check(h *partclone.Header) error {
	if h.DeviceSize > uint64(w.Size) {
		target := fmt.Sprintf("partition %d", w.Partition)
		if w.Partition == 0 {
			target = "the disk"
		}
		return &restore.ImageFitError{Target: target, DeviceSize: int64(h.DeviceSize), Room: w.Size}
	}
	return nil
}

// Skipped is an image file no partition takes.
type Skipped struct {
	Image     *imagedir.Image
	Partition int
	Reason    string
}

// GPTFixup are the identifiers FOS resets from dN.partitions.
type GPTFixup struct {
	DiskGUID   string
	Partitions map[int]gptid.IDs
}

// Swap is a swap area to make over a partition.
type Swap struct {
	Partition    int
	Offset, Size int64
	UUID         string // "" = a new random one
}

// NewPlan checks the task against the image and the machine's disks and
// decides everything, writing nothing. resolve resolves fdrive paths
// (filepath.EvalSymlinks; nil: paths compare as given).
func NewPlan(img *Image, t Task, disks []Disk, resolve Resolver) (*Plan, error) {
	typ := strings.ToLower(strings.TrimSpace(t.Type))
	switch typ {
	case Resizable, MultiPart, MultiAll, WholeDiskRaw:
	default:
		return nil, fmt.Errorf("%w: imgType=%q (n, mps, mpa or dd)", ErrTask, t.Type)
	}
	comp, split, err := Compression(t)
	if err != nil {
		return nil, err
	}
	all, mbr, only, err := partitionType(t.PartitionType)
	if err != nil {
		return nil, err
	}
	p := &Plan{Type: typ, PartitionType: strings.TrimSpace(t.PartitionType), Compression: comp, Split: split}
	if all {
		p.PartitionType = "all"
	}
	p.Warnings = append(p.Warnings, img.Warnings...)
	p.Warnings = append(p.Warnings, taskWarnings(t)...)
	if typ == Resizable && !resizableOS(t.OSID) {
		return nil, fmt.Errorf("%w: a resizable image needs a Windows or Linux osid, this task has osid=%d (FOS refuses it too)", ErrTask, t.OSID)
	}
	chosen, warnings, err := chooseDisks(t, disks, img.Disks, resolve)
	p.Warnings = append(p.Warnings, warnings...)
	if err != nil {
		return nil, err
	}

	if typ == WholeDiskRaw {
		if !all {
			return nil, fmt.Errorf("%w: imgPartitionType=%s with a dd image: a dd image is one stream for the whole disk", ErrTask, p.PartitionType)
		}
		if img.Raw == nil {
			return nil, fmt.Errorf("%w: no whole-disk image was loaded", ErrTask)
		}
		d := chosen[0]
		dp := &DiskPlan{Disk: d, Geometry: geometry(d)}
		dp.Writes = []*Write{{Partition: 0, Offset: 0, Size: dp.Geometry.Size, Image: img.Raw}}
		dp.Skip = otherFiles(img)
		p.Disks = []*DiskPlan{dp}
		return p, nil
	}

	if len(chosen) < len(img.Disks) {
		return nil, fmt.Errorf("%w: the image has %d disks but this machine has %d usable (%s)", ErrTask, len(img.Disks), len(chosen), describe(chosen))
	}
	for i, dm := range img.Disks {
		dp, err := planDisk(typ, all, mbr, only, t, dm, chosen[i], img.Folder)
		if err != nil {
			if len(img.Disks) > 1 {
				return nil, fmt.Errorf("disk %d (%s): %w", dm.Number, chosen[i].Path, err)
			}
			return nil, err
		}
		p.Warnings = append(p.Warnings, moved(t, dm, dp)...)
		p.Disks = append(p.Disks, dp)
	}
	return p, nil
}

func geometry(d Disk) ptable.Geometry {
	ss := int64(d.SectorSize)
	if ss == 0 {
		ss = 512
	}
	return ptable.Geometry{Size: int64(d.SizeBytes), LogicalSectorSize: ss, PhysicalSectorSize: ss}
}

func planDisk(typ string, all, mbr bool, only int, t Task, dm *DiskMeta, d Disk, folder imagedir.Folder) (*DiskPlan, error) {
	g := geometry(d)
	dp := &DiskPlan{Image: dm, Disk: d, Geometry: g}
	if int64(dm.Table.SectorSize) != g.LogicalSectorSize {
		return nil, fmt.Errorf("%w: the image was taken from a disk with %d-byte sectors, %s has %d-byte sectors; deploy it to a disk with %d-byte sectors or capture a new image",
			ptable.ErrSectorSize, dm.Table.SectorSize, d.Path, g.LogicalSectorSize, dm.Table.SectorSize)
	}
	table := dm.Table
	fixed := map[int]bool{}
	for _, n := range dm.Fixed {
		fixed[n] = true
	}
	for _, pt := range dm.Table.Partitions {
		if fill.IsSwap(dm.Table.Label, pt) {
			fixed[pt.Number] = true
		}
	}
	if typ == Resizable && only == 0 {
		l, err := fill.Fill(dm.Table, dm.Minimum, dm.Fixed, g)
		if err != nil {
			return nil, err
		}
		table, fixed = l.Table, l.Fixed
	}

	if only != 0 {
		return planOne(typ, only, fixed, dm, dp)
	}

	di := &restore.DiskImage{Folder: folder, Disk: dm.Number, Dump: table, Boot: dm.Boot, Sums: dm.Sums, Images: map[int]*imagedir.Image{}}
	if all {
		for n, im := range dm.Images {
			if pt, ok := table.Partition(n); ok && !(table.Label == "dos" && pt.Extended()) {
				di.Images[n] = im
			}
		}
	}
	rp, err := restore.NewPlan(di, g)
	if err != nil {
		return nil, err
	}
	dp.Table = rp
	for _, pp := range rp.Partitions {
		if pp.Image == nil {
			continue
		}
		dp.Writes = append(dp.Writes, &Write{
			Partition: pp.Number, Offset: pp.Offset, Size: pp.Size, Image: pp.Image,
			Verify: di.Segments(pp.Image), Grow: typ == Resizable && !fixed[pp.Number],
		})
	}
	for _, n := range sortedKeys(dm.Images) {
		if di.Images[n] != nil {
			continue
		}
		reason := "imgPartitionType=mbr writes the partition table only"
		if all {
			if pt, ok := table.Partition(n); !ok {
				reason = fmt.Sprintf("d%d.partitions has no partition %d", dm.Number, n)
			} else if pt.Extended() {
				reason = fmt.Sprintf("partition %d is a dos extended partition: its image is not written (FOS skips it too)", n)
			}
		}
		dp.Skip = append(dp.Skip, Skipped{Image: dm.Images[n], Partition: n, Reason: reason})
	}
	if all {
		dp.GPT = gptFixup(dm, table, 0)
		dp.Swaps = swaps(dm, table, 0)
	}
	return dp, nil
}

// planOne restores partition n alone into the disk's existing table.
func planOne(typ string, n int, fixed map[int]bool, dm *DiskMeta, dp *DiskPlan) (*DiskPlan, error) {
	im := dm.Images[n]
	if im == nil {
		return nil, fmt.Errorf("%w: imgPartitionType=%d but the image has no d%dp%d.img", ErrTask, n, dm.Number, n)
	}
	cur := dp.Disk.Table
	if cur == nil {
		return nil, fmt.Errorf("%w: imgPartitionType=%d restores one partition into the disk's partition table, but %s has none: deploy with imgPartitionType=all first",
			ErrTask, n, dp.Disk.Path)
	}
	pt, ok := cur.Partition(n)
	if !ok || (cur.Label == "dos" && pt.Extended()) {
		return nil, fmt.Errorf("%w: imgPartitionType=%d but %s has no partition %d to restore into", ErrTask, n, dp.Disk.Path, n)
	}
	ss := dp.Geometry.LogicalSectorSize
	if int64(cur.SectorSize) != ss || (pt.Start+pt.Size)*uint64(ss) > uint64(dp.Geometry.Size) {
		return nil, fmt.Errorf("%w: partition %d of %s lies beyond the disk", ErrTask, n, dp.Disk.Path)
	}
	var verify []restore.Segment
	if dm.Sums != nil {
		for _, pc := range im.Pieces {
			verify = append(verify, restore.Segment{Name: pc.Name, Size: pc.Size, SHA256: dm.Sums[pc.Name]})
		}
	}
	dp.Writes = []*Write{{
		Partition: n, Offset: int64(pt.Start) * ss, Size: int64(pt.Size) * ss, Image: im, Verify: verify,
		Grow: typ == Resizable && !fixed[n],
	}}
	if cur.Label == "gpt" {
		dp.GPT = gptFixup(dm, cur, n)
	}
	dp.Swaps = swaps(dm, cur, n)
	return dp, nil
}

// gptFixup is FOS's restoreUUIDInformation: the disk GUID and each
// partition's type and GUID from dN.partitions, swap partitions left out
// (only partition only when it is not 0). nil for a dos image.
func gptFixup(dm *DiskMeta, on *sfdisk.Dump, only int) *GPTFixup {
	if dm.Table.Label != "gpt" || on.Label != "gpt" {
		return nil
	}
	f := &GPTFixup{DiskGUID: dm.Table.ID, Partitions: map[int]gptid.IDs{}}
	for _, pt := range dm.Table.Partitions {
		if only != 0 && pt.Number != only {
			continue
		}
		if _, ok := on.Partition(pt.Number); !ok {
			continue
		}
		if _, swap := dm.SwapUUIDs[pt.Number]; swap || fill.IsSwap("gpt", pt) {
			continue
		}
		f.Partitions[pt.Number] = gptid.IDs{Type: pt.Type, UUID: pt.UUID}
	}
	return f
}

// swaps is FOS's makeAllSwapSystems: on a GPT every partition listed in
// dN.original.swapuuids, on a dos table every type 82 partition (with its
// recorded UUID when there is one); only partition only when it is not 0.
func swaps(dm *DiskMeta, on *sfdisk.Dump, only int) []Swap {
	var out []Swap
	ss := int64(on.SectorSize)
	for _, pt := range on.Partitions {
		if only != 0 && pt.Number != only {
			continue
		}
		uuid, listed := dm.SwapUUIDs[pt.Number]
		if (on.Label == "gpt" && listed) || (on.Label == "dos" && pt.TypeByte() == 0x82) {
			out = append(out, Swap{Partition: pt.Number, Offset: int64(pt.Start) * ss, Size: int64(pt.Size) * ss, UUID: uuid})
		}
	}
	return out
}

// moved warns when a resizable Windows image on a dos table moves a
// partition: Windows' boot configuration finds its partitions there by
// offset, and FOS replaces Boot\BCD for Windows 7/8/8.1, which imgcast
// does not do.
func moved(t Task, dm *DiskMeta, dp *DiskPlan) []string {
	if !windows(t.OSID) || dm.Table.Label != "dos" || dp.Table == nil {
		return nil
	}
	var w []string
	for _, pt := range dp.Table.Image.Dump.Partitions {
		if o, ok := dm.Table.Partition(pt.Number); ok && o.Start != pt.Start {
			w = append(w, fmt.Sprintf("partition %d starts at sector %d instead of %d: Windows may not boot until its boot configuration (BCD) is repaired (FOS replaces Boot\\BCD for Windows 7/8, imgcast does not)",
				pt.Number, pt.Start, o.Start))
		}
	}
	return w
}

// taskWarnings are the task's requests imgcast does not carry out.
func taskWarnings(t Task) []string {
	var w []string
	if t.HostEarly && strings.TrimSpace(t.Hostname) != "" && windows(t.OSID) {
		w = append(w, fmt.Sprintf("hostearly: imgcast does not rename Windows to %q before its first boot (FOS edits the registry offline); the FOG client service on the machine renames it after boot", t.Hostname))
	}
	if NonTrivialScript(t.PostDownload) {
		w = append(w, "postdownloadscripts/fog.postdownload is not run: imgcast has no bash and none of FOS's functions; driver injection and other post-download steps must be done another way")
	}
	return w
}

// otherFiles are the files of a dd image folder that are not the image:
// FOG 1.5's server streams every file of a dd folder.
func otherFiles(img *Image) []Skipped {
	in := map[string]bool{}
	for _, pc := range img.Raw.Pieces {
		in[pc.Name] = true
	}
	var names []string
	for name := range img.Files {
		if !in[name] {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var out []Skipped
	for _, name := range names {
		out = append(out, Skipped{
			Image:  &imagedir.Image{Name: name, Pieces: []imagedir.Piece{{Name: name, Size: img.Files[name]}}},
			Reason: "not part of the dd image (FOG 1.5's server streams every file of a dd image folder)",
		})
	}
	return out
}

func sortedKeys[V any](m map[int]V) []int {
	k := make([]int, 0, len(m))
	for n := range m {
		k = append(k, n)
	}
	sort.Ints(k)
	return k
}
