package restore_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/pkg/restore"
	"github.com/imgcast/imgcast/pkg/restore/imagedir"
	"github.com/imgcast/imgcast/pkg/restore/ptable"
	"github.com/imgcast/imgcast/pkg/restore/sfdisk"
)

// checkWiped asserts that nothing recognisable is left on a disk whose
// restore failed: sfdisk finds no table, blkid no signature on the disk or
// at any partition's start, and the first MiB of each partition is zero.
func checkWiped(t testing.TB, disk, dump string) {
	t.Helper()
	needTools(t, "sfdisk", "blkid")
	if out, err := exec.Command("sfdisk", "-d", disk).CombinedOutput(); err == nil {
		t.Errorf("sfdisk still reads a table:\n%s", out)
	}
	if out, err := exec.Command("blkid", "-p", disk).CombinedOutput(); err == nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("blkid recognises the disk: %s (%v)", out, err)
	}
	d, err := sfdisk.Parse(strings.NewReader(dump))
	if err != nil {
		t.Fatal(err)
	}
	b := mustRead(t, disk)
	for _, p := range d.Partitions {
		if p.Extended() {
			continue
		}
		off := int64(p.Start) * 512
		out, err := exec.Command("blkid", "-p", "-O", strconv.FormatInt(off, 10), disk).CombinedOutput()
		if err == nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("partition %d: blkid recognises %s (%v)", p.Number, out, err)
		}
		n := min(int64(p.Size)*512, restore.WipeSize)
		if !bytes.Equal(b[off:off+n], make([]byte, n)) {
			// Partitions that were never written still hold the pattern:
			// fine, as long as blkid sees nothing there.
			if b[off] != pattern {
				t.Errorf("partition %d: its first MiB is neither zeroed nor untouched", p.Number)
			}
		}
	}
}

// Wipe on correctly restored disks (dos and gpt): afterwards nothing on
// them is recognisable, and the report says what was zeroed.
func TestWipe(t *testing.T) {
	needTools(t, "sfdisk", "sgdisk", "split", "sha256sum", "blkid")
	for _, label := range []string{"dos", "gpt"} {
		t.Run(label, func(t *testing.T) {
			var dir, dump string
			if label == "dos" {
				dir, dump, _ = mbrFolder(t)
			} else {
				dir, dump, _ = gptFolder(t)
			}
			disk := patterned(t, filepath.Join(t.TempDir(), "disk.img"), diskSize)
			if err := restoreDisk(t, dir, disk); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("blkid", "-p", "-O", strconv.Itoa(2048*512), disk).CombinedOutput(); err != nil {
				t.Fatalf("fixture: blkid does not see partition 1 after the restore: %v %s", err, out)
			}
			folder, _ := imagedir.Open(dir)
			di, err := restore.LoadDiskImage(context.Background(), folder, 1)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(disk, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			g, _ := ptable.ReadGeometry(f, 0)
			plan, err := restore.NewPlan(di, g)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := plan.Wipe(f, true, []int{1, 2})
			if err != nil {
				t.Fatal(err)
			}
			t.Log(rep)
			if !strings.Contains(rep.String(), "partition 2") || (label == "gpt") != (rep.Table == "gpt (both copies)") {
				t.Errorf("report: %s", rep)
			}
			checkWiped(t, disk, dump)
		})
	}
}
