package fogplan

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/imgcast/imgcast/pkg/restore/fill"
	"github.com/imgcast/imgcast/pkg/restore/imagedir"
	"github.com/imgcast/imgcast/pkg/restore/mkswap"
	"github.com/imgcast/imgcast/pkg/restore/sfdisk"
)

// File is one entry of the image folder's listing (on FOG's NFS share).
type File struct {
	Name string
	Size int64
}

// DiskMeta is what the image folder says about its disk N.
type DiskMeta struct {
	Number int
	// Table is dN.partitions (FOS falls back to the legacy name
	// dN.original.partitions).
	Table *sfdisk.Dump
	// Minimum is dN.minimum.partitions (resizable images), nil if absent.
	Minimum *sfdisk.Dump
	// Fixed is dN.fixed_size_partitions.
	Fixed []int
	// SwapUUIDs is dN.original.swapuuids by partition number.
	SwapUUIDs map[int]string
	// Boot is dN.mbr: the boot area (dos) or an sgdisk backup (gpt).
	Boot []byte
	// Size is dN.size (multi-disk images), 0 when absent.
	Size int64
	// Sums is dN.sha256 (imgcast-server folders), nil when absent.
	Sums map[string][]byte
	// Images are the dNpM.img files by M, pieces joined.
	Images map[int]*imagedir.Image
}

// Image is an image folder's metadata, read before anything is written.
type Image struct {
	Folder   imagedir.Folder
	Files    map[string]int64
	Disks    []*DiskMeta // d1, d2, … in order
	Raw      *imagedir.Image
	Warnings []string
}

const (
	maxDumpSize  = 1 << 20
	maxBootSize  = 16 << 20
	maxSmallFile = 64 << 10
)

var (
	partImageRE = regexp.MustCompile(`^d([0-9]+)p([0-9]+)\.img(\.[0-9]{3})?$`)
	diskFileRE  = regexp.MustCompile(`^d([0-9]+)\.(partitions|original\.partitions)$`)
	lvmRE       = regexp.MustCompile(`^d([0-9]+)p([0-9]+)\.lvm$`)
	legacyRE    = regexp.MustCompile(`^(sys|rec)\.img(\.[0-9]{3})?$`)
)

// Load reads the metadata the task needs from the folder, using listing
// (the folder's files) to know what exists. It refuses images imgcast
// cannot restore.
func Load(ctx context.Context, folder imagedir.Folder, listing []File, t Task) (*Image, error) {
	img := &Image{Folder: folder, Files: map[string]int64{}}
	for _, f := range listing {
		img.Files[f.Name] = f.Size
	}
	typ := strings.ToLower(strings.TrimSpace(t.Type))
	if typ == WholeDiskRaw {
		raw := pieces(img.Files, t.Image)
		if raw == nil {
			return nil, fmt.Errorf("%w: no %s or %s.000 in the dd image folder %s (it holds: %s)",
				ErrTask, t.Image, t.Image, folder, names(listing))
		}
		img.Raw = raw
		return img, nil
	}
	if err := refuseLayouts(img.Files, folder); err != nil {
		return nil, err
	}
	count := 1
	if typ == MultiAll {
		count = diskCount(img.Files)
	}
	for n := 1; n <= count; n++ {
		dm, err := loadDisk(ctx, img, n, typ == Resizable)
		if err != nil {
			return nil, err
		}
		img.Disks = append(img.Disks, dm)
	}
	return img, nil
}

// refuseLayouts refuses LVM images and the legacy single-file Windows
// layouts.
func refuseLayouts(files map[string]int64, folder imagedir.Folder) error {
	var lvm, legacy []string
	hasTable := false
	for name := range files {
		switch {
		case lvmRE.MatchString(name):
			lvm = append(lvm, name)
		case legacyRE.MatchString(name):
			legacy = append(legacy, name)
		case diskFileRE.MatchString(name):
			hasTable = true
		}
	}
	sort.Strings(lvm)
	if len(lvm) > 0 {
		return fmt.Errorf("%w: %s holds LVM volume images (%s); imgcast does not rebuild LVM volume groups — capture the image with skiplvm=1 or deploy it with FOS",
			ErrUnsupported, folder, strings.Join(lvm, ", "))
	}
	if !hasTable && len(legacy) > 0 {
		return fmt.Errorf("%w: %s is a legacy Windows XP/Vista/7 image (sys.img/rec.img, no d1.partitions); imgcast restores only the dNpM.img layout — recapture it with a current FOG",
			ErrUnsupported, folder)
	}
	if !hasTable {
		return fmt.Errorf("%w: %s has no d1.partitions: not a FOG partition image (a single-file XP/Vista image, or the wrong image type for a dd image?)",
			ErrUnsupported, folder)
	}
	return nil
}

// diskCount is how many disks a multi-disk image has: d1…dK, every one
// with a table.
func diskCount(files map[string]int64) int {
	seen := map[int]bool{}
	for name := range files {
		if m := diskFileRE.FindStringSubmatch(name); m != nil {
			n, _ := strconv.Atoi(m[1])
			seen[n] = true
		}
	}
	k := 0
	for seen[k+1] {
		k++
	}
	return k
}

func loadDisk(ctx context.Context, img *Image, n int, resizable bool) (*DiskMeta, error) {
	dm := &DiskMeta{Number: n, Images: map[int]*imagedir.Image{}}
	name := func(suffix string) string { return fmt.Sprintf("d%d.%s", n, suffix) }
	read := func(file string, max int64) ([]byte, error) {
		if _, ok := img.Files[file]; !ok {
			return nil, nil
		}
		b, err := imagedir.ReadFile(ctx, img.Folder, file, max)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		if want := dm.Sums[file]; want != nil {
			if got := sha256.Sum256(b); !bytes.Equal(got[:], want) {
				return nil, fmt.Errorf("%s does not match %s (sha256 %s, listed %s)", file, name("sha256"), hex.EncodeToString(got[:]), hex.EncodeToString(want))
			}
		}
		return b, nil
	}
	if b, err := read(name("sha256"), maxSmallFile*16); err != nil {
		return nil, err
	} else if b != nil {
		if dm.Sums, err = imagedir.ParseSHA256Sums(b); err != nil {
			return nil, fmt.Errorf("%s: %w", name("sha256"), err)
		}
	}
	tableName := name("partitions")
	b, err := read(tableName, maxDumpSize)
	if err == nil && b == nil {
		tableName = name("original.partitions")
		b, err = read(tableName, maxDumpSize)
	}
	if err != nil {
		return nil, err
	}
	if b == nil {
		return nil, fmt.Errorf("%w: %s has no %s", ErrTask, img.Folder, name("partitions"))
	}
	if dm.Table, err = sfdisk.Parse(bytes.NewReader(b)); err != nil {
		return nil, fmt.Errorf("%s: %w", tableName, err)
	}
	if dm.Boot, err = read(name("mbr"), maxBootSize); err != nil {
		return nil, err
	}
	if _, ok := img.Files[name("grub.mbr")]; ok && dm.Table.Label == "gpt" {
		img.Warnings = append(img.Warnings, fmt.Sprintf("%s is not restored: of the area before the first partition imgcast writes only the protective MBR's boot code from %s (FOS writes all of it back)",
			name("grub.mbr"), name("mbr")))
	}
	if b, err := read(name("size"), maxSmallFile); err != nil {
		return nil, err
	} else if b != nil {
		if dm.Size, err = parseDiskSize(b); err != nil {
			return nil, fmt.Errorf("%s: %w", name("size"), err)
		}
	}
	if b, err := read(name("original.swapuuids"), maxSmallFile); err != nil {
		return nil, err
	} else if b != nil {
		var bad []string
		dm.SwapUUIDs, bad = parseSwapUUIDs(b)
		for _, l := range bad {
			img.Warnings = append(img.Warnings, fmt.Sprintf("%s: ignoring line %q (swap there gets a new UUID)", name("original.swapuuids"), l))
		}
	}
	if resizable {
		if b, err := read(name("minimum.partitions"), maxDumpSize); err != nil {
			return nil, err
		} else if b != nil {
			if dm.Minimum, err = sfdisk.Parse(bytes.NewReader(b)); err != nil {
				return nil, fmt.Errorf("%s: %w", name("minimum.partitions"), err)
			}
		} else {
			img.Warnings = append(img.Warnings, fmt.Sprintf("%s has no %s: partitions can grow but not shrink below their captured size", img.Folder, name("minimum.partitions")))
		}
		if b, err := read(name("fixed_size_partitions"), maxSmallFile); err != nil {
			return nil, err
		} else if dm.Fixed, err = fill.ParseFixed(b); err != nil {
			return nil, fmt.Errorf("%s: %w", name("fixed_size_partitions"), err)
		}
	}
	for file := range img.Files {
		m := partImageRE.FindStringSubmatch(file)
		if m == nil || m[1] != strconv.Itoa(n) {
			continue
		}
		part, err := strconv.Atoi(m[2])
		if err != nil || part < 1 || part > 4096 || dm.Images[part] != nil {
			continue
		}
		base := fmt.Sprintf("d%dp%d.img", n, part)
		if im := pieces(img.Files, base); im != nil {
			if dm.Sums != nil {
				for _, pc := range im.Pieces {
					if dm.Sums[pc.Name] == nil {
						return nil, fmt.Errorf("%s does not list %s", name("sha256"), pc.Name)
					}
				}
			}
			dm.Images[part] = im
		}
	}
	return dm, nil
}

// pieces finds base's pieces the way FOG stores them: base.000 or base
// first, then base.001, base.002, … without gaps; nil when there is none.
func pieces(files map[string]int64, base string) *imagedir.Image {
	first := base + ".000"
	size, ok := files[first]
	if !ok {
		first = base
		if size, ok = files[first]; !ok {
			return nil
		}
	}
	im := &imagedir.Image{Name: base, Pieces: []imagedir.Piece{{Name: first, Size: size}}}
	for i := 1; i < 1000; i++ {
		name := fmt.Sprintf("%s.%03d", base, i)
		size, ok := files[name]
		if !ok {
			break
		}
		im.Pieces = append(im.Pieces, imagedir.Piece{Name: name, Size: size})
	}
	return im
}

// parseDiskSize reads dN.size: "N:bytes" as FOS writes it ("dN: bytes" and
// a bare number are accepted too).
func parseDiskSize(b []byte) (int64, error) {
	s := strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", ""))
	if i := strings.LastIndex(s, ":"); i >= 0 {
		s = strings.TrimSpace(s[i+1:])
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%q is not a disk size in bytes", strings.TrimSpace(string(b)))
	}
	return v, nil
}

// parseSwapUUIDs reads dN.original.swapuuids: lines "<partition device>
// <uuid>" (FOS writes the device, e.g. /dev/sda5; the partition number is
// its trailing digits). Lines it cannot use are returned.
func parseSwapUUIDs(b []byte) (map[int]string, []string) {
	out := map[int]string{}
	var bad []string
	for _, line := range strings.Split(strings.ReplaceAll(string(b), "\x00", ""), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			bad = append(bad, line)
			continue
		}
		dev := strings.TrimRightFunc(f[0], func(r rune) bool { return r >= '0' && r <= '9' })
		n, err := strconv.Atoi(f[0][len(dev):])
		if _, uerr := mkswap.ParseUUID(f[1]); err != nil || n < 1 || n > 4096 || uerr != nil {
			bad = append(bad, line)
			continue
		}
		out[n] = strings.ToLower(f[1])
	}
	return out, bad
}

func names(listing []File) string {
	var n []string
	for _, f := range listing {
		n = append(n, f.Name)
	}
	sort.Strings(n)
	if len(n) > 20 {
		n = append(n[:20], "…")
	}
	if len(n) == 0 {
		return "nothing"
	}
	return strings.Join(n, ", ")
}
