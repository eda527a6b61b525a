package gptid_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/internal/fogtest"
	"github.com/imgcast/imgcast/pkg/restore/gptid"
	"github.com/imgcast/imgcast/pkg/restore/ptable"
	"github.com/imgcast/imgcast/pkg/restore/sfdisk"
)

const dump = `label: gpt
label-id: 3B8E4C2A-1D5F-4E6A-9C7B-8A0F2E1D3C4B
device: /dev/sda
unit: sectors
first-lba: 2048
sector-size: 512

/dev/sda1 : start=2048, size=20480, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=0B6E3F1A-2C4D-4E5F-8A9B-1C2D3E4F5A6B, name="efi"
/dev/sda2 : start=22528, size=40960, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=7D1E2F3A-4B5C-4D6E-9F0A-1B2C3D4E5F6A, name="root"
/dev/sda4 : start=63488, size=8192, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, uuid=9A8B7C6D-5E4F-4A3B-8C2D-1E0F9A8B7C6D
`

// sfdiskDisk writes dump onto a 40 MiB file with the real sfdisk.
func sfdiskDisk(t *testing.T, d string) string {
	t.Helper()
	fogtest.Need(t, "sfdisk")
	p := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 40<<20); err != nil {
		t.Fatal(err)
	}
	fogtest.RunStdin(t, d, "sfdisk", "-q", "--no-reread", "--no-tell-kernel", p)
	return p
}

func open(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestRead(t *testing.T) {
	f := open(t, sfdiskDisk(t, dump))
	tab, err := gptid.Read(f, 512)
	if err != nil {
		t.Fatal(err)
	}
	want := &gptid.Table{DiskGUID: "3B8E4C2A-1D5F-4E6A-9C7B-8A0F2E1D3C4B", Entries: map[int]gptid.Entry{
		1: {"C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "0B6E3F1A-2C4D-4E5F-8A9B-1C2D3E4F5A6B", 2048, 22527},
		2: {"0FC63DAF-8483-4772-8E79-3D69D8477DE4", "7D1E2F3A-4B5C-4D6E-9F0A-1B2C3D4E5F6A", 22528, 63487},
		4: {"0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "9A8B7C6D-5E4F-4A3B-8C2D-1E0F9A8B7C6D", 63488, 71679},
	}}
	if g, w := sprint(tab), sprint(want); g != w {
		t.Errorf("got  %s\nwant %s", g, w)
	}
}

func sprint(t *gptid.Table) string {
	var b strings.Builder
	b.WriteString(t.DiskGUID)
	for n := 1; n <= 128; n++ {
		if e, ok := t.Entries[n]; ok {
			b.WriteString(" " + string(rune('0'+n%10)) + ":" + e.Type + "/" + e.UUID)
		}
	}
	return b.String()
}

// TestSet changes the disk GUID and one partition's IDs; sgdisk finds
// both tables sound and sfdisk reads the new values back.
func TestSet(t *testing.T) {
	fogtest.Need(t, "sgdisk")
	p := sfdiskDisk(t, dump)
	f := open(t, p)
	log, err := gptid.Set(f, 512, "11111111-2222-4333-8444-555555555555", map[int]gptid.IDs{
		2: {Type: "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", UUID: "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"},
		1: {UUID: "0B6E3F1A-2C4D-4E5F-8A9B-1C2D3E4F5A6B"}, // unchanged
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(log, "; "); got != "disk GUID 11111111-2222-4333-8444-555555555555; partition 2 type EBD0A0A2-B9E5-4433-87C0-68B6B72699C7; partition 2 uuid AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE" {
		t.Errorf("log: %s", got)
	}
	if out := fogtest.RunStdin(t, "", "sgdisk", "-v", p); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", out)
	}
	d, err := sfdisk.Parse(strings.NewReader(fogtest.RunStdin(t, "", "sfdisk", "-d", p)))
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := d.Partition(2)
	if d.ID != "11111111-2222-4333-8444-555555555555" || p2.Type != "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" || p2.UUID != "AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE" {
		t.Errorf("sfdisk reads back %+v", d)
	}
	again, err := gptid.Set(f, 512, "11111111-2222-4333-8444-555555555555", map[int]gptid.IDs{2: {UUID: "AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE"}})
	if err != nil || len(again) != 0 {
		t.Errorf("setting the same IDs again: %v %v", again, err)
	}
}

// TestBackupUpdated damages the primary table after Set: sgdisk then
// recovers from the backup, which must carry the new IDs.
func TestBackupUpdated(t *testing.T) {
	fogtest.Need(t, "sgdisk")
	p := sfdiskDisk(t, dump)
	f := open(t, p)
	if _, err := gptid.Set(f, 512, "11111111-2222-4333-8444-555555555555", map[int]gptid.IDs{4: {UUID: "12345678-9abc-4def-8123-456789abcdef"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 512), 512); err != nil { // destroy the primary header
		t.Fatal(err)
	}
	out := fogtest.RunStdin(t, "", "sgdisk", "-i", "4", p)
	if !strings.Contains(out, "12345678-9ABC-4DEF-8123-456789ABCDEF") {
		t.Errorf("the backup table does not have the new partition GUID:\n%s", out)
	}
}

// TestWriterPreservesIDs: imgcast's table writer already writes the disk
// GUID and every type and partition GUID of the dump (on 512-byte and
// 4Kn disks), so after a table restore the fix-up finds nothing to do.
func TestWriterPreservesIDs(t *testing.T) {
	for _, ss := range []int64{512, 4096} {
		d, err := sfdisk.Parse(strings.NewReader(strings.Replace(dump, "sector-size: 512", "sector-size: "+strconv.FormatInt(ss, 10), 1)))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "disk")
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		size := int64(80000) * ss
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
		f := open(t, p)
		g := ptable.Geometry{Size: size, LogicalSectorSize: ss, PhysicalSectorSize: ss}
		if err := ptable.Write(f, d, g, nil); err != nil {
			t.Fatal(err)
		}
		tab, err := gptid.Read(f, ss)
		if err != nil {
			t.Fatal(err)
		}
		if tab.DiskGUID != d.ID {
			t.Errorf("%d: disk GUID %s, dump %s", ss, tab.DiskGUID, d.ID)
		}
		ids := map[int]gptid.IDs{}
		for _, dp := range d.Partitions {
			e := tab.Entries[dp.Number]
			if e.Type != dp.Type || e.UUID != dp.UUID || e.First != dp.Start || e.Last != dp.End() {
				t.Errorf("%d: partition %d written as %+v, dump %+v", ss, dp.Number, e, dp)
			}
			ids[dp.Number] = gptid.IDs{Type: dp.Type, UUID: dp.UUID}
		}
		if log, err := gptid.Set(f, ss, d.ID, ids); err != nil || len(log) != 0 {
			t.Errorf("%d: fix-up after the writer: %v %v", ss, log, err)
		}
	}
}

func TestRefuses(t *testing.T) {
	p := sfdiskDisk(t, dump)
	f := open(t, p)
	before := sum(t, p)
	for name, tc := range map[string]struct {
		disk  string
		parts map[int]gptid.IDs
	}{
		"missing partition": {"", map[int]gptid.IDs{3: {UUID: "12345678-9abc-4def-8123-456789abcdef"}}},
		"beyond the table":  {"", map[int]gptid.IDs{129: {UUID: "12345678-9abc-4def-8123-456789abcdef"}}},
		"bad guid":          {"", map[int]gptid.IDs{2: {UUID: "12345678-9abc-4def-8123-456789abcde"}}},
		"empty type":        {"", map[int]gptid.IDs{2: {Type: "00000000-0000-0000-0000-000000000000"}}},
		"bad disk guid":     {"nope", nil},
	} {
		if _, err := gptid.Set(f, 512, tc.disk, tc.parts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if sum(t, p) != before {
		t.Error("a refused Set changed the disk")
	}

	dos := sfdiskDisk(t, "label: dos\nstart=2048, size=4096, type=83\n")
	if _, err := gptid.Read(open(t, dos), 512); !errors.Is(err, gptid.ErrNoGPT) {
		t.Errorf("dos disk: %v", err)
	}
	// A flipped byte in the entries fails their CRC.
	b, _ := os.ReadFile(p)
	b[1024+40] ^= 1
	if _, err := gptid.Read(bytes.NewReader(b), 512); !errors.Is(err, gptid.ErrNoGPT) {
		t.Errorf("damaged entries: %v", err)
	}
}

func sum(t *testing.T, p string) [32]byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func FuzzRead(f *testing.F) {
	b, err := os.ReadFile(sfdiskDiskForFuzz(f))
	if err == nil {
		f.Add(b[:34*512])
	}
	f.Fuzz(func(t *testing.T, disk []byte) {
		tab, err := gptid.Read(bytes.NewReader(disk), 512)
		if err == nil && tab == nil {
			t.Fatal("no table and no error")
		}
	})
}

// sfdiskDiskForFuzz is a seed disk whose backup table is at the start
// too (the seed is cut short), so mutations reach the entries.
func sfdiskDiskForFuzz(f *testing.F) string {
	p := filepath.Join(f.TempDir(), "disk")
	os.WriteFile(p, make([]byte, 64<<10), 0o644)
	cmd := exec.Command("sfdisk", "-q", "--no-reread", "--no-tell-kernel", p)
	cmd.Stdin = strings.NewReader("label: gpt\nfirst-lba: 34\nstart=34, size=40, type=L\n")
	cmd.Run()
	return p
}
