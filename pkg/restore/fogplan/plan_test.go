package fogplan_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/internal/fogtest"
	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/restore/decompress"
	"github.com/imgcast/imgcast/pkg/restore/fill"
	"github.com/imgcast/imgcast/pkg/restore/fogplan"
	"github.com/imgcast/imgcast/pkg/restore/gptid"
	"github.com/imgcast/imgcast/pkg/restore/imagedir"
	"github.com/imgcast/imgcast/pkg/restore/partclone"
	"github.com/imgcast/imgcast/pkg/restore/ptable"
	"github.com/imgcast/imgcast/pkg/restore/sfdisk"
)

const gib = uint64(1) << 30

// A Linux GPT image with swap (its UUID recorded at capture).
const linux = `label: gpt
label-id: 11111111-2222-4333-8444-555555555555
device: /dev/vda
unit: sectors
first-lba: 2048
last-lba: 131038
sector-size: 512

/dev/vda1 : start=        2048, size=       81920, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=A1111111-2222-4333-8444-555555555555, name="root"
/dev/vda2 : start=       83968, size=       20480, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, uuid=A2111111-2222-4333-8444-555555555555, name="swap"
/dev/vda3 : start=      104448, size=       26590, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=A3111111-2222-4333-8444-555555555555, name="home"
`

// A dos image: an empty extended partition that old FOG captures gave an
// image, and a swap partition.
const dosImage = `label: dos
label-id: 0x1234abcd
device: /dev/sda
unit: sectors

/dev/sda1 : start=        2048, size=      409600, type=83, bootable
/dev/sda2 : start=      411648, size=      204800, type=82
/dev/sda3 : start=      616448, size=      204800, type=5
`

// folder makes an image folder of files (name → contents) and returns it
// with its listing.
func folder(t *testing.T, files map[string]string) (imagedir.Folder, []fogplan.File) {
	t.Helper()
	dir := t.TempDir()
	var listing []fogplan.File
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		listing = append(listing, fogplan.File{Name: name, Size: int64(len(content))})
	}
	f, err := imagedir.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return f, listing
}

func disk(name string, size uint64, more ...func(*fogplan.Disk)) fogplan.Disk {
	d := fogplan.Disk{Disk: inventory.Disk{Name: name, Path: "/dev/" + name, SizeBytes: size, SectorSize: 512}}
	for _, f := range more {
		f(&d)
	}
	return d
}

func plan(t *testing.T, files map[string]string, task fogplan.Task, disks ...fogplan.Disk) (*fogplan.Plan, error) {
	t.Helper()
	f, listing := folder(t, files)
	img, err := fogplan.Load(context.Background(), f, listing, task)
	if err != nil {
		return nil, err
	}
	return fogplan.NewPlan(img, task, disks, nil)
}

func mustPlan(t *testing.T, files map[string]string, task fogplan.Task, disks ...fogplan.Disk) *fogplan.Plan {
	t.Helper()
	p, err := plan(t, files, task, disks...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// writes describes a disk plan's writes as "p3@offset+size(image)grow".
func writes(dp *fogplan.DiskPlan) string {
	var s []string
	for _, w := range dp.Writes {
		g := ""
		if w.Grow {
			g = " grow"
		}
		var pieces []string
		for _, pc := range w.Image.Pieces {
			pieces = append(pieces, pc.Name)
		}
		s = append(s, fmt.Sprintf("p%d@%d+%d(%s)%s", w.Partition, w.Offset, w.Size, strings.Join(pieces, ","), g))
	}
	return strings.Join(s, " ")
}

func skips(dp *fogplan.DiskPlan) string {
	var s []string
	for _, sk := range dp.Skip {
		s = append(s, sk.Image.Name)
	}
	return strings.Join(s, " ")
}

func win10Files() map[string]string {
	return map[string]string{
		"d1.partitions": fogtest.Win10, "d1.minimum.partitions": fogtest.Win10Min, "d1.fixed_size_partitions": "1:2:4",
		"d1.mbr": "gpt backup", "d1.original.swapuuids": "",
		"d1p1.img": "efi", "d1p2.img": "msr", "d1p3.img": "c-drive", "d1p3.img.001": "more", "d1p4.img": "recovery",
	}
}

// TestResizable: a Windows 10 image onto a 256 GiB disk: the filled
// table, every partition written, only C: grown, the GPT identifiers to
// reset, zstd forced by imgFormat=6 with split pieces.
func TestResizable(t *testing.T) {
	files := win10Files()
	files["d1.mbr"] = gptBackup(t, fogtest.Win10)
	p := mustPlan(t, files, fogplan.Task{Image: "Win10", Type: "n", PartitionType: "all", Format: "6", OSID: 9},
		disk("sda", 256*gib), disk("sdb", 512*gib))
	if p.Compression != decompress.Zstd || !p.Split || len(p.Disks) != 1 {
		t.Fatalf("plan %+v", p)
	}
	dp := p.Disks[0]
	if dp.Disk.Path != "/dev/sda" || dp.Table == nil {
		t.Fatalf("disk %s, table %v", dp.Disk.Path, dp.Table)
	}
	want := "p1@1048576+104857600(d1p1.img) p2@105906176+16777216(d1p2.img) " +
		"p3@122683392+274200264704(d1p3.img,d1p3.img.001) grow p4@274322948096+554696704(d1p4.img)"
	if got := writes(dp); got != want {
		t.Errorf("writes\n got %s\nwant %s", got, want)
	}
	if dp.GPT == nil || dp.GPT.DiskGUID != "5C0B3F6E-1E2D-4A61-9B4C-0D1E2F3A4B5C" || len(dp.GPT.Partitions) != 4 ||
		dp.GPT.Partitions[3] != (gptid.IDs{Type: "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", UUID: "2A1B2C3D-4E5F-4061-8273-849506172839"}) {
		t.Errorf("GPT fix-up %+v", dp.GPT)
	}
	if len(dp.Swaps) != 0 || len(dp.Skip) != 0 || len(p.Warnings) != 0 {
		t.Errorf("swaps %v, skip %v, warnings %v", dp.Swaps, dp.Skip, p.Warnings)
	}
	// The header check uses the new partition sizes.
	if err := dp.Writes[2].Check(&partclone.Header{DeviceSize: 124502016 * 512}); err != nil {
		t.Errorf("C: image of the captured size: %v", err)
	}
	if err := dp.Writes[3].Check(&partclone.Header{DeviceSize: 1083392*512 + 512}); !errors.Is(err, ptable.ErrDoesNotFit) {
		t.Errorf("recovery image larger than its partition: %v", err)
	}
}

// gptBackup makes a GPT the way sgdisk -b saves it: protective MBR, then
// the header with "EFI PART" at byte 512.
func gptBackup(t *testing.T, dump string) string {
	t.Helper()
	b := make([]byte, 512*34)
	b[510], b[511] = 0x55, 0xAA
	copy(b[512:], "EFI PART")
	return string(b)
}

func TestResizableTooSmall(t *testing.T) {
	files := win10Files()
	files["d1.mbr"] = gptBackup(t, fogtest.Win10)
	_, err := plan(t, files, fogplan.Task{Type: "n", OSID: 9}, disk("sda", 20*gib))
	var ts *fill.TooSmallError
	if !errors.As(err, &ts) {
		t.Fatalf("err = %v", err)
	}
}

// TestSkipped: images the client must receive and throw away — an old
// capture's image of an (empty) extended partition, and one for a
// partition the table does not have. Swap is remade; the rest written.
func TestSkipped(t *testing.T) {
	files := map[string]string{
		"d1.partitions": dosImage, "d1.mbr": string(mbrBoot()),
		"d1p1.img": "root", "d1p3.img": "old extended", "d1p9.img": "stray",
	}
	p := mustPlan(t, files, fogplan.Task{Type: "mps", Format: "0", OSID: 50}, disk("sda", 1*gib))
	dp := p.Disks[0]
	if got := writes(dp); got != "p1@1048576+209715200(d1p1.img)" {
		t.Errorf("writes %s", got)
	}
	if got := skips(dp); got != "d1p3.img d1p9.img" {
		t.Errorf("skipped %s", got)
	}
	if !strings.Contains(dp.Skip[0].Reason, "extended") || !strings.Contains(dp.Skip[1].Reason, "no partition 9") {
		t.Errorf("reasons %+v", dp.Skip)
	}
	if fmt.Sprint(dp.Swaps) != "[{2 210763776 104857600 }]" {
		t.Errorf("swaps %+v", dp.Swaps)
	}
	if dp.GPT != nil {
		t.Errorf("GPT fix-up on a dos disk: %+v", dp.GPT)
	}
	if p.Compression != decompress.Gzip || p.Split {
		t.Errorf("compression %s split %v", p.Compression, p.Split)
	}
}

func mbrBoot() []byte {
	b := make([]byte, 2048*512)
	b[510], b[511] = 0x55, 0xAA
	return b
}

// TestSwapAndGrowLinux: a Linux n image: root and home grown, swap fixed
// by its type and remade with its recorded UUID, and left out of the
// GPT fix-up as FOS does.
func TestSwapAndGrowLinux(t *testing.T) {
	files := map[string]string{
		"d1.partitions": linux, "d1.mbr": gptBackup(t, linux), "d1.fixed_size_partitions": "",
		"d1.original.swapuuids": "/dev/vda2 3f2c7b9e-41d8-4c0a-9b6e-2a1f0d5c8e74\n",
		"d1p1.img":              "root", "d1p3.img": "home",
	}
	p := mustPlan(t, files, fogplan.Task{Type: "n", Format: "5", OSID: 50}, disk("vda", 1*gib))
	dp := p.Disks[0]
	if got := writes(dp); !strings.Contains(got, "p1@1048576+") || !strings.Contains(got, "(d1p1.img) grow") || !strings.Contains(got, "(d1p3.img) grow") {
		t.Errorf("writes %s", got)
	}
	if len(dp.Swaps) != 1 || dp.Swaps[0].Partition != 2 || dp.Swaps[0].UUID != "3f2c7b9e-41d8-4c0a-9b6e-2a1f0d5c8e74" || dp.Swaps[0].Size != 20480*512 {
		t.Errorf("swaps %+v", dp.Swaps)
	}
	if _, ok := dp.GPT.Partitions[2]; ok || len(dp.GPT.Partitions) != 2 {
		t.Errorf("GPT fix-up %+v", dp.GPT)
	}
	sw, _ := dp.Table.Image.Dump.Partition(2)
	if sw.Size != 20480 {
		t.Errorf("swap resized to %d sectors", sw.Size)
	}
	// A warning for the missing minimum table.
	if len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "minimum.partitions") {
		t.Errorf("warnings %q", p.Warnings)
	}
}

// TestMultiDisk: an mpa image placed by dN.size, whatever the machine's
// disk order; ambiguous sizes fall back to the order with a warning; too
// few disks is refused.
func TestMultiDisk(t *testing.T) {
	small := strings.Replace(dosImage, "/dev/sda3", "#", 1)
	files := map[string]string{
		"d1.partitions": small, "d1.mbr": string(mbrBoot()), "d1.size": "1:2147483648", "d1p1.img": "a",
		"d2.partitions": small, "d2.mbr": string(mbrBoot()), "d2.size": "2:1073741824", "d2p1.img": "b",
	}
	task := fogplan.Task{Type: "mpa", Format: "0", OSID: 50}
	p := mustPlan(t, files, task, disk("sda", 1*gib), disk("sdb", 2*gib), disk("sdc", 4*gib))
	if len(p.Disks) != 2 || p.Disks[0].Disk.Path != "/dev/sdb" || p.Disks[1].Disk.Path != "/dev/sda" {
		t.Fatalf("disks %s %s", p.Disks[0].Disk.Path, p.Disks[1].Disk.Path)
	}
	if writes(p.Disks[0]) != "p1@1048576+209715200(d1p1.img)" || writes(p.Disks[1]) != "p1@1048576+209715200(d2p1.img)" {
		t.Errorf("writes %s / %s", writes(p.Disks[0]), writes(p.Disks[1]))
	}

	p = mustPlan(t, files, task, disk("sda", 2*gib), disk("sdb", 2*gib), disk("sdc", 4*gib))
	if p.Disks[0].Disk.Path != "/dev/sda" || p.Disks[1].Disk.Path != "/dev/sdb" || len(p.Warnings) != 1 {
		t.Errorf("ambiguous: %s %s %q", p.Disks[0].Disk.Path, p.Disks[1].Disk.Path, p.Warnings)
	}

	_, err := plan(t, files, task, disk("sda", 2*gib))
	if !errors.Is(err, fogplan.ErrTask) || !strings.Contains(err.Error(), "2 disks") {
		t.Errorf("one disk for two: %v", err)
	}
	// A USB stick is never taken for the second disk.
	_, err = plan(t, files, task, disk("sda", 2*gib), disk("sdb", 1*gib, func(d *fogplan.Disk) { d.USB = true }))
	if err == nil {
		t.Error("a USB disk was used for an mpa image")
	}
}

// TestFDrive: fdrive names the disk by path, size, serial or WWN; a
// comma list orders several; an unmatched spec is a warning, all
// unmatched an error.
func TestFDrive(t *testing.T) {
	files := map[string]string{"d1.partitions": dosImage, "d1.mbr": string(mbrBoot()), "d1p1.img": "root"}
	disks := []fogplan.Disk{
		disk("sda", 1*gib, func(d *fogplan.Disk) { d.Serial = "S1"; d.WWN = "naa.5000c500a1b2c3d4" }),
		disk("nvme0n1", 2*gib, func(d *fogplan.Disk) { d.Serial = "NVME-XYZ" }),
		disk("sdc", 4*gib, func(d *fogplan.Disk) { d.USB = true; d.Serial = "USBSTICK" }),
	}
	for spec, want := range map[string]string{
		"/dev/nvme0n1":         "/dev/nvme0n1",
		"2147483648":           "/dev/nvme0n1",
		"nvme-xyz":             "/dev/nvme0n1",
		"0x5000c500a1b2c3d4":   "/dev/sda",
		"naa.5000C500A1B2C3D4": "/dev/sda",
		"USBSTICK":             "/dev/sdc", // named explicitly: used
		"nothing, S1":          "/dev/sda",
		"/dev/disk/by-id/ata":  "/dev/nvme0n1",
	} {
		f, listing := folder(t, files)
		task := fogplan.Task{Type: "mps", OSID: 50, FDrive: spec}
		img, err := fogplan.Load(context.Background(), f, listing, task)
		if err != nil {
			t.Fatal(err)
		}
		resolve := func(p string) (string, error) {
			if p == "/dev/disk/by-id/ata" {
				return "/dev/nvme0n1", nil
			}
			return p, nil
		}
		p, err := fogplan.NewPlan(img, task, disks, resolve)
		if err != nil {
			t.Errorf("%q: %v", spec, err)
			continue
		}
		if got := p.Disks[0].Disk.Path; got != want {
			t.Errorf("fdrive %q chose %s, want %s", spec, got, want)
		}
		if strings.HasPrefix(spec, "nothing") != (len(p.Warnings) == 1) {
			t.Errorf("fdrive %q: warnings %q", spec, p.Warnings)
		}
	}
	if _, err := plan(t, files, fogplan.Task{Type: "mps", OSID: 50, FDrive: "/dev/sdz,123"}, disks...); !errors.Is(err, fogplan.ErrTask) {
		t.Errorf("no fdrive match: %v", err)
	}
	// Without fdrive: the first usable disk, or the largest.
	if p := mustPlan(t, files, fogplan.Task{Type: "mps", OSID: 50}, disks...); p.Disks[0].Disk.Path != "/dev/sda" {
		t.Errorf("default disk %s", p.Disks[0].Disk.Path)
	}
	if p := mustPlan(t, files, fogplan.Task{Type: "mps", OSID: 50, LargeSize: true}, disks...); p.Disks[0].Disk.Path != "/dev/nvme0n1" {
		t.Errorf("largesize chose %s (never the USB disk)", p.Disks[0].Disk.Path)
	}
}

// TestOnePartition: imgPartitionType=3 writes no table; the partition
// goes where the disk's table has it; only its IDs are reset.
func TestOnePartition(t *testing.T) {
	files := win10Files()
	moved := strings.Replace(fogtest.Win10, "start=   124741632", "start=   200000000", 1)
	cur, err := sfdisk.Parse(strings.NewReader(strings.Replace(moved, "last-lba: 125829086", "last-lba: 536870878", 1)))
	if err != nil {
		t.Fatal(err)
	}
	cur.Partitions[2].Size = 199000000 - 239616
	d := disk("sda", 256*gib, func(d *fogplan.Disk) { d.Table = cur })
	p := mustPlan(t, files, fogplan.Task{Type: "n", PartitionType: "3", Format: "5", OSID: 10}, d)
	dp := p.Disks[0]
	if dp.Table != nil {
		t.Error("a table is written for a single partition")
	}
	if got := writes(dp); got != "p3@122683392+101765316608(d1p3.img,d1p3.img.001) grow" {
		t.Errorf("writes %s", got)
	}
	if len(dp.GPT.Partitions) != 1 || dp.GPT.Partitions[3].UUID != "2A1B2C3D-4E5F-4061-8273-849506172839" {
		t.Errorf("GPT fix-up %+v", dp.GPT)
	}
	for name, task := range map[string]fogplan.Task{
		"no image":     {Type: "n", PartitionType: "5", OSID: 10},
		"no partition": {Type: "n", PartitionType: "4", OSID: 10},
	} {
		d := d
		if name == "no partition" {
			c := *cur
			c.Partitions = c.Partitions[:3]
			d.Table = &c
		}
		if _, err := plan(t, files, task, d); !errors.Is(err, fogplan.ErrTask) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := plan(t, files, fogplan.Task{Type: "n", PartitionType: "3", OSID: 10}, disk("sda", 256*gib)); !errors.Is(err, fogplan.ErrTask) {
		t.Errorf("no table on the disk: %v", err)
	}
}

// TestTableOnly: imgPartitionType=mbr writes the (filled) table and
// nothing else; every image is a stream to throw away.
func TestTableOnly(t *testing.T) {
	files := win10Files()
	files["d1.mbr"] = gptBackup(t, fogtest.Win10)
	p := mustPlan(t, files, fogplan.Task{Type: "n", PartitionType: "mbr", OSID: 9}, disk("sda", 256*gib))
	dp := p.Disks[0]
	if dp.Table == nil || len(dp.Writes) != 0 || dp.GPT != nil || skips(dp) != "d1p1.img d1p2.img d1p3.img d1p4.img" {
		t.Errorf("table %v writes %s gpt %v skip %s", dp.Table != nil, writes(dp), dp.GPT, skips(dp))
	}
}

// TestWholeDisk: a dd image is one stream of pieces named after the
// image, to the whole disk; other files in its folder are streamed by
// FOG 1.5 and so exposed.
func TestWholeDisk(t *testing.T) {
	files := map[string]string{"Lab.000": "a", "Lab.001": "b", "Lab.002": "c", "notes.txt": "x"}
	p := mustPlan(t, files, fogplan.Task{Image: "Lab", Type: "dd", Format: "6", OSID: 99}, disk("sda", 8*gib))
	dp := p.Disks[0]
	if got := writes(dp); got != "p0@0+8589934592(Lab.000,Lab.001,Lab.002)" {
		t.Errorf("writes %s", got)
	}
	if skips(dp) != "notes.txt" || dp.Table != nil {
		t.Errorf("skip %s", skips(dp))
	}
	if err := dp.Writes[0].Check(&partclone.Header{DeviceSize: 9 * gib}); !errors.Is(err, ptable.ErrDoesNotFit) || !strings.Contains(err.Error(), "the disk") {
		t.Errorf("a 9 GiB dd image onto 8 GiB: %v", err)
	}
	_, err := plan(t, map[string]string{"Other.000": "a"}, fogplan.Task{Image: "Lab", Type: "dd"}, disk("sda", 8*gib))
	if !errors.Is(err, fogplan.ErrTask) || !strings.Contains(err.Error(), "Other.000") {
		t.Errorf("no image: %v", err)
	}
}

// TestRefused: what imgcast cannot do is refused before anything is
// written, with a message that says so.
func TestRefused(t *testing.T) {
	base := map[string]string{"d1.partitions": dosImage, "d1.mbr": string(mbrBoot()), "d1p1.img": "root"}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range extra {
			if v == "" {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		return m
	}
	logical := strings.Replace(dosImage, "type=5\n", "type=5\n/dev/sda5 : start=618496, size=100000, type=83\n", 1)
	for name, tc := range map[string]struct {
		files map[string]string
		task  fogplan.Task
		disks []fogplan.Disk
		want  error
		words string
	}{
		"partimage":    {base, fogplan.Task{Type: "mps", Format: "1"}, nil, fogplan.ErrUnsupported, "partimage"},
		"legacy 1":     {base, fogplan.Task{Type: "mps", Format: "0", Legacy: "1"}, nil, fogplan.ErrUnsupported, "partimage"},
		"bad format":   {base, fogplan.Task{Type: "mps", Format: "9"}, nil, fogplan.ErrTask, "imgFormat"},
		"bad type":     {base, fogplan.Task{Type: "xyz"}, nil, fogplan.ErrTask, "imgType"},
		"bad parttype": {base, fogplan.Task{Type: "mps", PartitionType: "abc"}, nil, fogplan.ErrTask, "imgPartitionType"},
		"lvm":          {with(map[string]string{"d1p2.lvm": "vg"}), fogplan.Task{Type: "mps"}, nil, fogplan.ErrUnsupported, "LVM"},
		"legacy win7":  {map[string]string{"sys.img.000": "x", "rec.img.000": "y"}, fogplan.Task{Type: "n", OSID: 5}, nil, fogplan.ErrUnsupported, "legacy"},
		"xp one file":  {map[string]string{"Lab": "x"}, fogplan.Task{Type: "n", OSID: 1}, nil, fogplan.ErrUnsupported, "d1.partitions"},
		"osid for n":   {base, fogplan.Task{Type: "n", OSID: 99}, nil, fogplan.ErrTask, "osid=99"},
		"dd mbr":       {map[string]string{"Lab.000": "x"}, fogplan.Task{Image: "Lab", Type: "dd", PartitionType: "mbr"}, nil, fogplan.ErrTask, "dd image"},
		"4Kn disk": {base, fogplan.Task{Type: "mps"}, []fogplan.Disk{disk("sda", 8*gib, func(d *fogplan.Disk) { d.SectorSize = 4096 })},
			ptable.ErrSectorSize, "4096-byte sectors"},
		"too small":   {base, fogplan.Task{Type: "mps"}, []fogplan.Disk{disk("sda", 100<<20)}, ptable.ErrDoesNotFit, "needs a disk of at least"},
		"logicals":    {with(map[string]string{"d1.partitions": logical}), fogplan.Task{Type: "mps"}, nil, ptable.ErrUnsupported, "logical partition 5"},
		"no disks":    {base, fogplan.Task{Type: "mps"}, []fogplan.Disk{}, nil, "no block devices"},
		"bad fixed":   {with(map[string]string{"d1.fixed_size_partitions": "1:x"}), fogplan.Task{Type: "n", OSID: 50}, nil, fill.ErrInput, "not a partition number"},
		"bad size":    {with(map[string]string{"d1.size": "1:big"}), fogplan.Task{Type: "mpa"}, nil, nil, "d1.size"},
		"bad minimum": {with(map[string]string{"d1.minimum.partitions": "garbage"}), fogplan.Task{Type: "n", OSID: 50}, nil, sfdisk.ErrSyntax, "minimum"},
	} {
		t.Run(name, func(t *testing.T) {
			disks := tc.disks
			if disks == nil {
				disks = []fogplan.Disk{disk("sda", 8*gib)}
			}
			if tc.task.Image == "" {
				tc.task.Image = "Lab"
			}
			_, err := plan(t, tc.files, tc.task, disks...)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.words) {
				t.Errorf("err = %v, want %v mentioning %q", err, tc.want, tc.words)
			}
		})
	}
}

// TestWarnings: what FOS does and imgcast does not is said up front.
func TestWarnings(t *testing.T) {
	files := map[string]string{
		"d1.partitions": dosImage, "d1.mbr": string(mbrBoot()), "d1p1.img": "root",
		"d1.original.swapuuids": "/dev/sda2 not-a-uuid\n",
	}
	// A Windows 7 dos image whose second partition moves when filled.
	win7 := "label: dos\nlabel-id: 0x9a8b7c6d\nunit: sectors\n\n/dev/sda1 : start=2048, size=204800, type=7, bootable\n/dev/sda2 : start=409600, size=8000000, type=7\n"
	p := mustPlan(t, files, fogplan.Task{Type: "mps", OSID: 9, HostEarly: true, Hostname: "lab-07",
		PostDownload: []byte("#!/bin/bash\n# comments only\n. ${postdownpath}drivers.sh\n")}, disk("sda", 1*gib))
	all := strings.Join(p.Warnings, "\n")
	for _, words := range []string{"not-a-uuid", "lab-07", "fog.postdownload"} {
		if !strings.Contains(all, words) {
			t.Errorf("no warning about %s:\n%s", words, all)
		}
	}
	p = mustPlan(t, map[string]string{"d1.partitions": linux, "d1.mbr": gptBackup(t, linux), "d1.grub.mbr": "grub", "d1p1.img": "root"},
		fogplan.Task{Type: "mps", OSID: 50}, disk("sda", 1*gib))
	if len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "d1.grub.mbr is not restored") {
		t.Errorf("warnings %q", p.Warnings)
	}
	p = mustPlan(t, map[string]string{"d1.partitions": win7, "d1.mbr": string(mbrBoot()), "d1p2.img": "c",
		"d1.fixed_size_partitions": "1", "d1.minimum.partitions": win7},
		fogplan.Task{Type: "n", OSID: 5, PostDownload: []byte("#!/bin/bash\n# nothing\n")}, disk("sda", 10*gib))
	if len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "partition 2 starts at sector 206848 instead of 409600") {
		t.Errorf("warnings %q", p.Warnings)
	}
}

// TestReadTable reads tables the real sfdisk wrote.
func TestReadTable(t *testing.T) {
	for _, dump := range []string{linux, strings.Replace(dosImage, "/dev/sda3", "#", 1)} {
		want, err := sfdisk.Parse(strings.NewReader(dump))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "disk")
		os.WriteFile(path, nil, 0o644)
		os.Truncate(path, 1<<30)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := ptable.Write(f, want, ptable.Geometry{Size: 1 << 30, LogicalSectorSize: 512, PhysicalSectorSize: 512}, nil); err != nil {
			t.Fatal(err)
		}
		got, err := fogplan.ReadTable(f, 512)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got.Label != want.Label || len(got.Partitions) != len(want.Partitions) {
			t.Fatalf("%+v", got)
		}
		for i, p := range want.Partitions {
			q := got.Partitions[i]
			if q.Number != p.Number || q.Start != p.Start || q.Size != p.Size || q.Type != p.Type || q.UUID != p.UUID {
				t.Errorf("partition %+v, want %+v", q, p)
			}
		}
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, make([]byte, 4096), 0o644)
	f, _ := os.Open(empty)
	defer f.Close()
	if d, err := fogplan.ReadTable(f, 512); d != nil || err != nil {
		t.Errorf("blank disk: %v %v", d, err)
	}
}

// TestCompression: imgFormat as FOS reads it.
func TestCompression(t *testing.T) {
	want := map[string]string{"": "/false", "0": "gzip/false", "2": "gzip/true", "3": "none/false", "4": "none/true", "5": "zstd/false", "6": "zstd/true"}
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, f := range keys {
		k, split, err := fogplan.Compression(fogplan.Task{Format: f})
		if got := fmt.Sprintf("%s/%v", k, split); err != nil || got != want[f] {
			t.Errorf("imgFormat=%q: %s %v", f, got, err)
		}
	}
	if k, _, _ := fogplan.Compression(fogplan.Task{Format: "0", Legacy: "5"}); k != decompress.Zstd {
		t.Errorf("imgLegacy does not override imgFormat: %s", k)
	}
}

func TestReadWWN(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "sys/block/sda/device"), 0o755)
	os.WriteFile(filepath.Join(root, "sys/block/sda/device/wwid"), []byte("naa.5000c500a1b2c3d4\n"), 0o644)
	if got := fogplan.ReadWWN(root, "sda"); got != "naa.5000c500a1b2c3d4" {
		t.Errorf("ReadWWN = %q", got)
	}
	if got := fogplan.ReadWWN(root, "sdb"); got != "" {
		t.Errorf("ReadWWN of a disk without = %q", got)
	}
}

// FuzzMetadata: the small metadata files are read from the server and
// must never crash the client.
func FuzzMetadata(f *testing.F) {
	f.Add("/dev/sda5 3f2c7b9e-41d8-4c0a-9b6e-2a1f0d5c8e74\n", "1:2147483648", "1:2:4")
	f.Fuzz(func(t *testing.T, swaps, size, fixed string) {
		dir := t.TempDir()
		files := map[string]string{"d1.partitions": linux, "d1.original.swapuuids": swaps, "d1.size": size, "d1.fixed_size_partitions": fixed, "d1p1.img": "x"}
		var listing []fogplan.File
		for n, c := range files {
			os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644)
			listing = append(listing, fogplan.File{Name: n, Size: int64(len(c))})
		}
		folder, _ := imagedir.Open(dir)
		for _, typ := range []string{"n", "mpa"} {
			task := fogplan.Task{Type: typ, OSID: 50}
			img, err := fogplan.Load(context.Background(), folder, listing, task)
			if err != nil {
				continue
			}
			fogplan.NewPlan(img, task, []fogplan.Disk{disk("sda", 1*gib), disk("sdb", 2*gib)}, nil)
		}
	})
}
