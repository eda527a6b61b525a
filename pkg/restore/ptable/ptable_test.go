package ptable_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/internal/testtools"
	"github.com/imgcast/imgcast/pkg/restore/ptable"
	"github.com/imgcast/imgcast/pkg/restore/sfdisk"
)

const dosDump = `label: dos
label-id: 0x5eed1234
device: /dev/sda
unit: sectors
sector-size: 512

/dev/sda1 : start=        2048, size=       32768, type=83, bootable
/dev/sda2 : start=       34816, size=       16384, type=7
/dev/sda4 : start=       51200, size=       79872, type=b
`

const gptDump = `label: gpt
label-id: 8D8A0E1B-1111-2222-3333-444455556666
device: /dev/sda
unit: sectors
first-lba: 2048
last-lba: 131038
sector-size: 512

/dev/sda1 : start=        2048, size=       32768, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=F853D6BF-5E3E-414C-8364-5F1068B3D8DB, name="EFI System"
/dev/sda2 : start=       34816, size=       16384, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=BADD8055-13E4-4342-938F-ACD167E5B16F, name="root \x22fs\x22", attrs="RequiredPartition LegacyBIOSBootable GUID:60,63"
/dev/sda5 : start=       51200, size=       77824, type=E3C9E316-0B5C-4DB8-817D-F92DF00215AE, uuid=4BF6FA3A-C79A-6045-95CB-76D2B0D74C07
`

const gpt4kDump = `label: gpt
label-id: 11111111-2222-3333-4444-555555555555
unit: sectors
first-lba: 256
last-lba: 16378
sector-size: 4096

/dev/sdb1 : start=         256, size=        4096, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=21111111-2222-3333-4444-555555555555, name="data"
/dev/sdb2 : start=        4352, size=       12026, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=31111111-2222-3333-4444-555555555555
`

func need(t *testing.T, cmds ...string) {
	t.Helper()
	testtools.Require(t, cmds...)
}

// patterned makes a disk image whose first and last 2 MiB (where tables
// live) are full of 0x77, as a used disk would be; the rest is sparse.
func patterned(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fill := bytes.Repeat([]byte{0x77}, 2<<20)
	if _, err := f.WriteAt(fill, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(fill, size-int64(len(fill))); err != nil {
		t.Fatal(err)
	}
	return p
}

func parse(t *testing.T, s string) *sfdisk.Dump {
	t.Helper()
	d, err := sfdisk.Parse(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func writeOurs(t *testing.T, path string, d *sfdisk.Dump, boot []byte) error {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g, err := ptable.ReadGeometry(f, int64(d.SectorSize))
	if err != nil {
		t.Fatal(err)
	}
	return ptable.Write(f, d, g, boot)
}

func sfdiskDump(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("sfdisk", "-d", path).CombinedOutput()
	if err != nil {
		t.Fatalf("sfdisk -d: %v\n%s", err, out)
	}
	// The device line names the file.
	return strings.ReplaceAll(string(out), path, "DISK")
}

// The table area we write must equal what sfdisk writes from the same dump.
func TestMatchesSfdisk(t *testing.T) {
	need(t, "sfdisk", "sgdisk")
	for _, tc := range []struct {
		name string
		dump string
		size int64
	}{
		{"dos", dosDump, 64 << 20},
		{"gpt", gptDump, 64 << 20},
		{"gpt on a larger disk", gptDump, 96 << 20},
		{"dos on a disk past the CHS limit", strings.Replace(dosDump, "/dev/sda4", "/dev/sda3 : start=    16777216, size=     1048576, type=83\n/dev/sda4", 1), 9 << 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := parse(t, tc.dump)
			theirs, ours := patterned(t, tc.size), patterned(t, tc.size)
			cmd := exec.Command("sfdisk", "-q", theirs)
			cmd.Stdin = strings.NewReader(tc.dump)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("sfdisk: %v\n%s", err, out)
			}
			if err := writeOurs(t, ours, d, nil); err != nil {
				t.Fatal(err)
			}
			a, b := sfdiskDump(t, theirs), sfdiskDump(t, ours)
			if a != b {
				t.Errorf("sfdisk -d differs:\nsfdisk wrote:\n%s\nwe wrote:\n%s", a, b)
			}
			ss := int64(d.SectorSize)
			for _, area := range []struct {
				name     string
				off, len int64
			}{
				{"sector 0", 0, 512},
				{"primary GPT", ss, 33 * 512},
				{"backup GPT", tc.size - 33*512, 33 * 512},
				{"first partition", 2048 * 512, 4096},
			} {
				if !bytes.Equal(readAt(t, theirs, area.off, area.len), readAt(t, ours, area.off, area.len)) {
					t.Errorf("%s differs from sfdisk's", area.name)
				}
			}
			if d.Label == "gpt" && d.SectorSize == 512 {
				for _, n := range []string{"1", "2", "5"} {
					x, _ := exec.Command("sgdisk", "-i", n, theirs).Output()
					y, _ := exec.Command("sgdisk", "-i", n, ours).Output()
					if !bytes.Equal(x, y) || len(x) == 0 {
						t.Errorf("sgdisk -i %s differs:\n%s\n%s", n, x, y)
					}
				}
				if out, err := exec.Command("sgdisk", "-v", ours).CombinedOutput(); err != nil || !bytes.Contains(out, []byte("No problems found")) {
					t.Errorf("sgdisk -v: %v\n%s", err, out)
				}
			}
		})
	}
}

func readAt(t *testing.T, path string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func sum(t *testing.T, path string) [32]byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestBootArea(t *testing.T) {
	need(t, "sfdisk", "sgdisk")
	// dos: the whole area before the first partition comes back, with the
	// new table and disk id on top of it.
	d := parse(t, dosDump)
	boot := bytes.Repeat([]byte{0xB0, 0x07}, 1024*512)
	boot[510], boot[511] = 0x55, 0xAA
	disk := patterned(t, 64<<20)
	if err := writeOurs(t, disk, d, boot); err != nil {
		t.Fatal(err)
	}
	got := readAt(t, disk, 0, int64(len(boot)))
	if !bytes.Equal(got[:440], boot[:440]) || !bytes.Equal(got[512:], boot[512:]) {
		t.Error("boot area not restored")
	}
	if !bytes.Contains([]byte(sfdiskDump(t, disk)), []byte("label-id: 0x5eed1234")) {
		t.Error("disk id not written")
	}

	// gpt: the boot code of the protective MBR in an sgdisk backup.
	src := patterned(t, 64<<20)
	cmd := exec.Command("sfdisk", "-q", src)
	cmd.Stdin = strings.NewReader(gptDump)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	backup := filepath.Join(t.TempDir(), "d1.mbr")
	if out, err := exec.Command("sgdisk", "-b", backup, src).CombinedOutput(); err != nil {
		t.Fatalf("sgdisk -b: %v\n%s", err, out)
	}
	bk, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	copy(bk, bytes.Repeat([]byte{0xC0, 0xDE}, 220)) // boot code in the saved protective MBR
	disk = make0(t, 64<<20)
	if err := writeOurs(t, disk, parse(t, gptDump), bk); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAt(t, disk, 0, 440), bk[:440]) {
		t.Error("protective MBR boot code not restored")
	}
	if a, b := sfdiskDump(t, src), sfdiskDump(t, disk); a != b {
		t.Errorf("table differs:\n%s\n%s", a, b)
	}
}

func make0(t *testing.T, size int64) string {
	p := filepath.Join(t.TempDir(), "zero.img")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// A dos table over an old GPT removes the GPT headers, so nothing finds a
// stale table.
func TestDosOverGPT(t *testing.T) {
	need(t, "sfdisk", "sgdisk")
	disk := patterned(t, 64<<20)
	if err := writeOurs(t, disk, parse(t, gptDump), nil); err != nil {
		t.Fatal(err)
	}
	if err := writeOurs(t, disk, parse(t, dosDump), nil); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(readAt(t, disk, 512, 512), []byte("EFI PART")) || bytes.Contains(readAt(t, disk, 64<<20-512, 512), []byte("EFI PART")) {
		t.Error("stale GPT header left")
	}
	if d := sfdiskDump(t, disk); !strings.Contains(d, "label: dos") {
		t.Errorf("sfdisk sees:\n%s", d)
	}
}

// Refusals write nothing at all.
func TestRefusals(t *testing.T) {
	small := `label: gpt
unit: sectors
sector-size: 512

/dev/sda1 : start=2048, size=2097152, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4
`
	logical := dosDump + "/dev/sda3 : start=140000, size=10000, type=5\n/dev/sda5 : start=142048, size=2000, type=83\n"
	goodBoot := make([]byte, 512)
	goodBoot[510], goodBoot[511] = 0x55, 0xAA
	for _, tc := range []struct {
		name string
		dump string
		ss   int64
		boot []byte
		want error
	}{
		{"too small", small, 512, nil, ptable.ErrDoesNotFit},
		{"gpt backup header does not fit", strings.Replace(small, "2097152", "129024", 1), 512, nil, ptable.ErrDoesNotFit},
		{"sector size", gpt4kDump, 512, nil, ptable.ErrSectorSize},
		{"logical partitions", logical, 512, nil, ptable.ErrUnsupported},
		{"boot area over partition 1", dosDump, 512, make([]byte, 2048*512+1), ptable.ErrBootArea},
		{"boot area without signature", dosDump, 512, make([]byte, 512), ptable.ErrBootArea},
		{"gpt with an MBR boot area", gptDump, 512, goodBoot, ptable.ErrBootArea},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := patterned(t, 64<<20)
			before := sum(t, disk)
			f, err := os.OpenFile(disk, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			d := parse(t, tc.dump)
			g := ptable.Geometry{Size: 64 << 20, LogicalSectorSize: tc.ss, PhysicalSectorSize: tc.ss}
			err = ptable.Write(f, d, g, tc.boot)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			t.Log(err)
			if sum(t, disk) != before {
				t.Error("the disk was changed")
			}
		})
	}
	var fe *ptable.FitError
	err := ptable.Check(parse(t, small), ptable.Geometry{Size: 64 << 20, LogicalSectorSize: 512}, nil)
	if !errors.As(err, &fe) || fe.Partition != 1 || fe.Need != (2048+2097152+33)*512 || fe.Have != 64<<20 {
		t.Errorf("FitError %+v", fe)
	}
}
