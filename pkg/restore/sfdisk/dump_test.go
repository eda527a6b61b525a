package sfdisk_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/internal/testtools"
	"github.com/imgcast/imgcast/pkg/restore/sfdisk"
)

const gptDump = `label: gpt
label-id: 8D8A0E1B-1111-2222-3333-444455556666
device: /dev/sda
unit: sectors
first-lba: 2048
last-lba: 131038
sector-size: 512

/dev/sda1 : start=        2048, size=       32768, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=F853D6BF-5E3E-414C-8364-5F1068B3D8DB, name="EFI System"
/dev/sda2 : start=       34816, size=       16384, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=badd8055-13e4-4342-938f-acd167e5b16f, name="root, \x22fs\x22", attrs="RequiredPartition LegacyBIOSBootable GUID:60,63"
/dev/sda3 : start=       51200, size=       77824, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=4BF6FA3A-C79A-6045-95CB-76D2B0D74C07
`

const dosDump = `label: dos
label-id: 0x1234abcd
device: /dev/nvme0n1
unit: sectors
sector-size: 512

/dev/nvme0n1p1 : start=        2048, size=       32768, type=83, bootable
/dev/nvme0n1p2 : start=       34816, size=       16384, type=7
/dev/nvme0n1p3 : start=       51200, size=       79872, type=5
/dev/nvme0n1p5 : start=       53248, size=        8192, type=82
/dev/nvme0n1p6 : start=       63488, size=       67584, type=b
`

func TestParse(t *testing.T) {
	d, err := sfdisk.Parse(strings.NewReader(gptDump))
	if err != nil {
		t.Fatal(err)
	}
	if d.Label != "gpt" || d.ID != "8D8A0E1B-1111-2222-3333-444455556666" || d.FirstLBA != 2048 || d.LastLBA != 131038 || d.SectorSize != 512 || len(d.Partitions) != 3 {
		t.Fatalf("header: %+v", d)
	}
	want := sfdisk.Partition{Number: 2, Node: "/dev/sda2", Start: 34816, Size: 16384, Type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
		UUID: "BADD8055-13E4-4342-938F-ACD167E5B16F", Name: `root, "fs"`, Attrs: 1<<0 | 1<<2 | 1<<60 | 1<<63}
	if !reflect.DeepEqual(d.Partitions[1], want) {
		t.Errorf("partition 2:\n got %+v\nwant %+v", d.Partitions[1], want)
	}

	d, err = sfdisk.Parse(strings.NewReader(dosDump))
	if err != nil {
		t.Fatal(err)
	}
	if d.Label != "dos" || d.ID != "0x1234abcd" || len(d.Partitions) != 5 {
		t.Fatalf("header: %+v", d)
	}
	p1, p6 := d.Partitions[0], d.Partitions[4]
	if !p1.Bootable || p1.Type != "83" || p6.Number != 6 || p6.Type != "b" || !d.Partitions[2].Extended() {
		t.Errorf("partitions: %+v", d.Partitions)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, dump string }{
		{"empty", ""},
		{"garbage", "\x7fELF\x02\x01\x01 binary junk\n"},
		{"no label", "unit: sectors\n/dev/sda1 : start=2048, size=10, type=83\n"},
		{"unknown label", "label: sun\n"},
		{"unknown header", "label: dos\nfoo: bar\n"},
		{"bytes unit", "label: dos\nunit: bytes\n"},
		{"unknown field", "label: dos\n/dev/sda1 : start=2048, size=10, type=83, colour=red\n"},
		{"missing size", "label: dos\n/dev/sda1 : start=2048, type=83\n"},
		{"zero size", "label: dos\n/dev/sda1 : start=2048, size=0, type=83\n"},
		{"bad number", "label: dos\n/dev/sda1 : start=20x48, size=10, type=83\n"},
		{"bad dos type", "label: dos\n/dev/sda1 : start=2048, size=10, type=zz\n"},
		{"gpt type not guid", "label: gpt\n/dev/sda1 : start=2048, size=10, type=83\n"},
		{"bad uuid", "label: gpt\n/dev/sda1 : start=2048, size=10, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=nope\n"},
		{"overlap", "label: dos\n/dev/sda1 : start=2048, size=100, type=83\n/dev/sda2 : start=2100, size=100, type=83\n"},
		{"twice", "label: dos\n/dev/sda1 : start=2048, size=100, type=83\n/dev/sda1 : start=4096, size=100, type=83\n"},
		{"logical outside", "label: dos\n/dev/sda1 : start=2048, size=100, type=5\n/dev/sda5 : start=4096, size=100, type=83\n"},
		{"logical without extended", "label: dos\n/dev/sda5 : start=4096, size=100, type=83\n"},
		{"unterminated quote", "label: gpt\n/dev/sda1 : start=2048, size=10, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"abc\n"},
		{"bad attrs", "label: gpt\n/dev/sda1 : start=2048, size=10, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, attrs=\"GUID:7\"\n"},
		{"outside usable", "label: gpt\nfirst-lba: 2048\n/dev/sda1 : start=34, size=10, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n"},
		{"sector zero", "label: dos\n/dev/sda1 : start=0, size=10, type=83\n"},
		{"header after partitions", "label: dos\n/dev/sda1 : start=2048, size=10, type=83\nlabel-id: 0x1\n"},
		{"past 2^32 in dos", "label: dos\n/dev/sda1 : start=4294967295, size=10, type=83\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sfdisk.Parse(strings.NewReader(tc.dump))
			if !errors.Is(err, sfdisk.ErrSyntax) {
				t.Fatalf("got %v", err)
			}
			t.Log(err)
		})
	}
}

// Dumps written by the real sfdisk parse to what sfdisk was told.
func TestParseRealDumps(t *testing.T) {
	testtools.Require(t, "sfdisk")
	for _, script := range []string{dosDump, gptDump} {
		img := filepath.Join(t.TempDir(), "disk.img")
		if err := os.WriteFile(img, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 64<<20); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sfdisk", "-q", img)
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sfdisk: %v\n%s", err, out)
		}
		out, err := exec.Command("sfdisk", "-d", img).Output()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := sfdisk.Parse(strings.NewReader(script))
		got, err := sfdisk.Parse(strings.NewReader(string(out)))
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for i := range got.Partitions {
			got.Partitions[i].Node, want.Partitions[i].Node = "", ""
		}
		if !reflect.DeepEqual(got.Partitions, want.Partitions) || got.ID != want.ID {
			t.Errorf("sfdisk -d gave\n%s\nparsed %+v\nwant %+v", out, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(gptDump)
	f.Add(dosDump)
	f.Add("label: dos\n,,83\n")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := sfdisk.Parse(strings.NewReader(s))
		if err != nil {
			return
		}
		if d.Label != "dos" && d.Label != "gpt" {
			t.Fatalf("accepted label %q", d.Label)
		}
		for _, p := range d.Partitions {
			if p.Size == 0 || p.Start == 0 || p.End() < p.Start {
				t.Fatalf("accepted partition %+v", p)
			}
		}
	})
}
