package restore_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/pkg/restore"
	"github.com/imgcast/imgcast/pkg/restore/ptable"
	"github.com/imgcast/imgcast/pkg/restore/sfdisk"
)

// VerifyTable reads back what WriteTable wrote, for both labels and both
// sector sizes (go-diskfs reads every MBR in 512-byte sectors), and notices
// a table that differs from the plan.
func TestPlanVerifyTable(t *testing.T) {
	for _, tc := range []struct {
		label      string
		sectorSize int64
	}{{"dos", 512}, {"dos", 4096}, {"gpt", 512}, {"gpt", 4096}} {
		t.Run(fmt.Sprintf("%s/%d", tc.label, tc.sectorSize), func(t *testing.T) {
			ss := tc.sectorSize
			dump := fmt.Sprintf("label: %s\nunit: sectors\nsector-size: %d\n\n/dev/sda1 : start=%d, size=%d, type=%s\n/dev/sda2 : start=%d, size=%d, type=%s\n",
				tc.label, ss, (1<<20)/ss, (8<<20)/ss, partType(tc.label), (9<<20)/ss, (4<<20)/ss, partType(tc.label))
			d, err := sfdisk.Parse(strings.NewReader(dump))
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "disk")
			if err := os.WriteFile(path, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, 32<<20); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			g := ptable.Geometry{Size: 32 << 20, LogicalSectorSize: ss, PhysicalSectorSize: ss}
			plan, err := restore.NewPlan(&restore.DiskImage{Dump: d}, g)
			if err != nil {
				t.Fatal(err)
			}
			if err := plan.WriteTable(f); err != nil {
				t.Fatal(err)
			}
			if err := plan.VerifyTable(f); err != nil {
				t.Fatalf("a table just written does not verify: %v", err)
			}
			plan.Partitions[1].Size += ss
			if err := plan.VerifyTable(f); err == nil || !strings.Contains(err.Error(), "partition 2 reads back") {
				t.Fatalf("a table differing from the plan verified: %v", err)
			}
		})
	}
}

func partType(label string) string {
	if label == "dos" {
		return "83"
	}
	return "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
}
