package fogimages

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imgcast/imgcast/internal/fogtest"
	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/restore"
	"github.com/imgcast/imgcast/pkg/restore/fogplan"
	"github.com/imgcast/imgcast/pkg/restore/gptid"
	"github.com/imgcast/imgcast/pkg/restore/growfs"
	"github.com/imgcast/imgcast/pkg/restore/imagedir"
	"github.com/imgcast/imgcast/pkg/restore/mkswap"
	"github.com/imgcast/imgcast/pkg/restore/sfdisk"
)

var tools = []string{"sfdisk", "sgdisk", "mkfs.ext4", "resize2fs", "e2fsck", "dumpe2fs", "debugfs", "mkntfs",
	"ntfscp", "ntfscat", "ntfsresize", "ntfsfix", "mkswap", "mkfs.vfat", "fsck.vfat", "mcopy", "mtype",
	"partclone.ext4", "partclone.ntfs", "partclone.fat16", "partclone.imager", "zstd", "pigz", "split"}

var (
	once                 sync.Once
	buildDir             string
	buildErr             error
	builtStore, builtRef string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// build makes the store once for all tests.
func build(t *testing.T) (store, ref string) {
	t.Helper()
	fogtest.Need(t, tools...)
	once.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "imgcast-fogimages-"); buildErr != nil {
			return
		}
		builtStore, builtRef = filepath.Join(buildDir, "images"), filepath.Join(buildDir, "reference")
		buildErr = Build(builtStore, builtRef)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtStore, builtRef
}

// TestBuild: the store has FOG's marker, nothing left over, and each
// folder the files FOS writes.
func TestBuild(t *testing.T) {
	store, ref := build(t)
	if _, err := os.Stat(filepath.Join(store, ".mntcheck")); err != nil {
		t.Errorf("no .mntcheck in the store: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(store, ".fog-images*")); len(left) > 0 {
		t.Errorf("the build left %v behind", left)
	}
	for image, files := range map[string][]string{
		Resizable: {"d1.partitions", "d1.minimum.partitions", "d1.fixed_size_partitions", "d1.original.swapuuids",
			"d1.original.fstypes", "d1.mbr", "d1p1.img", "d1p3.img"},
		MultiPart: {"d1.partitions", "d1.mbr", "d1p1.img", "d1p2.img", "d1p3.img"},
		MultiAll:  {"d1.partitions", "d1.mbr", "d1.size", "d1p1.img", "d1p1.img.001", "d2.partitions", "d2.mbr", "d2.size", "d2p1.img", "d2p1.img.001"},
		WholeDisk: {"fog-dd.000"},
	} {
		for _, f := range files {
			if _, err := os.Stat(filepath.Join(store, image, f)); err != nil {
				t.Errorf("%s: %v", image, err)
			}
		}
		for _, r := range References[image] {
			if _, err := os.Stat(filepath.Join(ref, r)); err != nil {
				t.Errorf("reference: %v", err)
			}
		}
	}
	if b, _ := os.ReadFile(filepath.Join(store, Resizable, "d1.original.swapuuids")); string(b) != "/dev/sda2 "+SwapUUID+"\n" {
		t.Errorf("d1.original.swapuuids: %q", b)
	}
}

// newDisk is an empty disk file of size bytes.
func newDisk(t *testing.T, name string, size int64) fogplan.Disk {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return fogplan.Disk{Disk: inventory.Disk{Name: name, Path: p, SizeBytes: uint64(size), SectorSize: 512}}
}

// deploy carries out a FOG task with imgcast's packages onto disk files,
// the way the agent will: plan, table, each image (received streams for
// skipped images are read to their end), growing, fix-ups.
func deploy(t *testing.T, store string, task fogplan.Task, disks ...fogplan.Disk) *fogplan.Plan {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(store, task.Image)
	folder, err := imagedir.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var listing []fogplan.File
	for _, e := range entries {
		info, _ := e.Info()
		listing = append(listing, fogplan.File{Name: e.Name(), Size: info.Size()})
	}
	img, err := fogplan.Load(ctx, folder, listing, task)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := fogplan.NewPlan(img, task, disks, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range plan.Warnings {
		t.Logf("warning: %s", w)
	}
	for _, dp := range plan.Disks {
		f, err := os.OpenFile(dp.Disk.Path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if dp.Table != nil {
			if err := dp.Table.WriteTable(f); err != nil {
				t.Fatal(err)
			}
		}
		for _, w := range dp.Writes {
			r := w.Image.Open(ctx, folder)
			res, err := restore.RestorePartition(ctx, r, restore.NewTarget(f, w.Offset, w.Size), restore.Options{
				Partition: w.Partition, IgnoreChecksums: true, Verify: w.Verify, InputSize: w.Image.Size(), Check: w.Check,
			})
			r.Close()
			if err != nil {
				t.Fatalf("%s: %v", w.Image.Name, err)
			}
			if plan.Compression != "" && res.Compression != plan.Compression {
				t.Errorf("%s is %s-compressed, imgFormat says %s", w.Image.Name, res.Compression, plan.Compression)
			}
			if w.Grow {
				growInPlace(t, f, w, res.Header.FSType)
			}
		}
		for _, sk := range dp.Skip {
			r := sk.Image.Open(ctx, folder)
			if _, err := io.Copy(io.Discard, r); err != nil {
				t.Errorf("draining %s: %v", sk.Image.Name, err)
			}
			r.Close()
		}
		if _, err := dp.Fixup(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	return plan
}

// growInPlace grows a partition's filesystem in a copy of its bytes (the
// tools want a device or a file of its own) and puts it back.
func growInPlace(t *testing.T, f *os.File, w *fogplan.Write, fs string) {
	t.Helper()
	part := extract(t, f, w.Offset, w.Size)
	res, err := growfs.Grow(context.Background(), part, fs, growfs.Options{Logf: t.Logf})
	if err != nil {
		t.Fatalf("growing partition %d: %v", w.Partition, err)
	}
	if !res.Grown || res.After < w.Size-2<<20 {
		t.Errorf("partition %d: %+v (partition %d bytes)", w.Partition, res, w.Size)
	}
	b, err := os.ReadFile(part)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, w.Offset); err != nil {
		t.Fatal(err)
	}
}

// extract copies bytes [off, off+size) of f into a file of their own.
func extract(t *testing.T, f io.ReaderAt, off, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "part")
	out, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, io.NewSectionReader(f, off, size)); err != nil {
		t.Fatal(err)
	}
	out.Close()
	return p
}

func open(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func table(t *testing.T, disk string) *sfdisk.Dump {
	t.Helper()
	d, err := sfdisk.Parse(strings.NewReader(fogtest.Run(t, "sfdisk", "-d", disk)))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func partBytes(t *testing.T, disk string, d *sfdisk.Dump, n int) (off, size int64) {
	t.Helper()
	p, ok := d.Partition(n)
	if !ok {
		t.Fatalf("%s has no partition %d", disk, n)
	}
	return int64(p.Start) * 512, int64(p.Size) * 512
}

// samePartition compares partition n of two disks byte for byte.
func samePartition(t *testing.T, got, want string, n int) {
	t.Helper()
	go1, gs := partBytes(t, got, table(t, got), n)
	wo, ws := partBytes(t, want, table(t, want), n)
	if gs != ws {
		t.Fatalf("partition %d: %d bytes, reference %d", n, gs, ws)
	}
	a, _ := io.ReadAll(io.NewSectionReader(open(t, got), go1, gs))
	b, _ := io.ReadAll(io.NewSectionReader(open(t, want), wo, ws))
	if !bytes.Equal(a, b) {
		t.Errorf("partition %d differs from the reference", n)
	}
}

// TestResizableOntoLargerDisk: fog-n (captured from 64 MiB) onto a
// 160 MiB disk: the table is filled, ext4 and NTFS grown to their
// partitions and clean, every file intact, swap remade with its UUID,
// the GPT identifiers those of the image.
func TestResizableOntoLargerDisk(t *testing.T) {
	store, ref := build(t)
	d := newDisk(t, "sda", 160<<20)
	deploy(t, store, fogplan.Task{Image: Resizable, Type: "n", PartitionType: "all", Format: "5", OSID: 50}, d)

	out := fogtest.Run(t, "sgdisk", "-v", d.Path)
	if !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", out)
	}
	got, orig := table(t, d.Path), table(t, filepath.Join(ref, "fog-n.raw"))
	if got.ID != orig.ID {
		t.Errorf("disk GUID %s, image %s", got.ID, orig.ID)
	}
	for _, p := range orig.Partitions {
		q, _ := got.Partition(p.Number)
		if q.UUID != p.UUID || q.Type != p.Type || q.Name != p.Name {
			t.Errorf("partition %d: %+v, image %+v", p.Number, q, p)
		}
	}
	p1, _ := got.Partition(1)
	p2, _ := got.Partition(2)
	p3, _ := got.Partition(3)
	if p2.Size != 16384 || p1.Size <= 49152 || p3.Size <= 49152 || p3.End() > uint64(160<<20)/512-34 {
		t.Errorf("filled table: %+v", got.Partitions)
	}
	disk := open(t, d.Path)
	refDisk := open(t, filepath.Join(ref, "fog-n.raw"))

	root := extract(t, disk, int64(p1.Start)*512, int64(p1.Size)*512)
	fogtest.Run(t, "e2fsck", "-fn", root)
	refRoot := extract(t, refDisk, 2048*512, 49152*512)
	for _, file := range Files {
		if a, b := fogtest.Run(t, "debugfs", "-R", "cat /"+file, root), fogtest.Run(t, "debugfs", "-R", "cat /"+file, refRoot); a != b || a == "" {
			t.Errorf("ext4 %s differs from the source disk's", file)
		}
	}
	if size, _ := growfs.ExtSize(open(t, root)); size < int64(p1.Size)*512-64<<10 {
		t.Errorf("ext4 is %d bytes in a %d-byte partition", size, p1.Size*512)
	}

	win := extract(t, disk, int64(p3.Start)*512, int64(p3.Size)*512)
	if out := fogtest.Run(t, "ntfsfix", "-n", win); !strings.Contains(out, "processed successfully") {
		t.Errorf("ntfsfix -n:\n%s", out)
	}
	refWin := extract(t, refDisk, 67584*512, 49152*512)
	for _, file := range []string{"README.txt", "random.bin", "lines.txt"} {
		if a, b := fogtest.Run(t, "ntfscat", win, file), fogtest.Run(t, "ntfscat", refWin, file); a != b || a == "" {
			t.Errorf("NTFS %s differs from the source disk's", file)
		}
	}
	if size, _ := growfs.NTFSSize(open(t, win)); size < int64(p3.Size)*512-2<<20 {
		t.Errorf("NTFS is %d bytes in a %d-byte partition", size, p3.Size*512)
	}

	uuid, label, err := mkswap.Read(disk, int64(p2.Start)*512, 0)
	if err != nil || uuid != SwapUUID {
		t.Errorf("swap: %q %q %v", uuid, label, err)
	}
	if tab, err := gptid.Read(disk, 512); err != nil || tab.Entries[2].UUID != "1E2D3C4B-5A69-4788-97A6-B5C4D3E2F102" {
		t.Errorf("GPT after the fix-ups: %+v %v", tab, err)
	}
}

// TestMultiPart: fog-mps onto a larger disk: table as captured, p1 and
// p2 byte-identical to the source, the extended partition's image
// received and dropped.
func TestMultiPart(t *testing.T) {
	store, ref := build(t)
	d := newDisk(t, "sda", 64<<20)
	plan := deploy(t, store, fogplan.Task{Image: MultiPart, Type: "mps", PartitionType: "all", Format: "0", OSID: 50}, d)
	if len(plan.Disks[0].Skip) != 1 || plan.Disks[0].Skip[0].Image.Name != "d1p3.img" {
		t.Errorf("skipped %+v", plan.Disks[0].Skip)
	}
	for n := 1; n <= 2; n++ {
		samePartition(t, d.Path, filepath.Join(ref, "fog-mps.raw"), n)
	}
	fat := extract(t, open(t, d.Path), 43008*512, 32768*512)
	fogtest.Run(t, "fsck.vfat", "-n", fat)
	if got := fogtest.Run(t, "mtype", "-i", fat, "::/etc/hostname"); got != "fog-mps-fat\n" {
		t.Errorf("FAT file: %q", got)
	}
}

// TestMultiAll: fog-mpa onto two disks listed in the other order: each
// image disk lands on the disk of its dN.size; split pieces are joined.
func TestMultiAll(t *testing.T) {
	store, ref := build(t)
	a, b := newDisk(t, "sda", 24<<20), newDisk(t, "sdb", 40<<20)
	plan := deploy(t, store, fogplan.Task{Image: MultiAll, Type: "mpa", PartitionType: "all", Format: "6", OSID: 50}, a, b)
	if plan.Disks[0].Disk.Path != b.Path || plan.Disks[1].Disk.Path != a.Path {
		t.Fatalf("d1 on %s, d2 on %s", plan.Disks[0].Disk.Path, plan.Disks[1].Disk.Path)
	}
	if len(plan.Disks[0].Writes[0].Image.Pieces) < 2 {
		t.Errorf("d1p1.img is not split: %+v", plan.Disks[0].Writes[0].Image.Pieces)
	}
	samePartition(t, b.Path, filepath.Join(ref, "fog-mpa-d1.raw"), 1)
	samePartition(t, a.Path, filepath.Join(ref, "fog-mpa-d2.raw"), 1)
}

// TestWholeDisk: fog-dd onto a larger disk: the source disk's bytes
// followed by the untouched rest.
func TestWholeDisk(t *testing.T) {
	store, ref := build(t)
	d := newDisk(t, "sda", 64<<20)
	deploy(t, store, fogplan.Task{Image: WholeDisk, Type: "dd", Format: "5", OSID: 50}, d)
	got, _ := os.ReadFile(d.Path)
	want, _ := os.ReadFile(filepath.Join(ref, "fog-mps.raw"))
	if !bytes.Equal(got[:len(want)], want) {
		t.Error("the disk differs from the source disk")
	}
	if bytes.ContainsFunc(got[len(want):], func(r rune) bool { return r != 0 }) {
		t.Error("bytes past the image were written")
	}
}
