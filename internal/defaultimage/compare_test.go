package defaultimage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestComparePartitions(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, pokes map[int64]byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, DiskSize); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for off, b := range pokes {
			if _, err := f.WriteAt([]byte{b}, off); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	ref := mk("ref", map[int64]byte{Part1Offset + 5: 1})
	for _, tc := range []struct {
		name  string
		pokes map[int64]byte
		want  string // "" = equal
	}{
		{"identical", map[int64]byte{Part1Offset + 5: 1}, ""},
		{"outside the partitions", map[int64]byte{Part1Offset + 5: 1, 0: 7, DiskSize - 1: 7}, ""},
		{"partition 1 byte missing", nil, "partition 1 (ext4): differs from the reference at partition byte 5"},
		{"last byte of partition 2", map[int64]byte{Part1Offset + 5: 1, Part2Offset + Part2Size - 1: 9},
			"partition 2 (vfat): differs from the reference at partition byte 37748735"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ComparePartitions(mk(strings.ReplaceAll(tc.name, " ", "-"), tc.pokes), ref)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("unexpected difference: %v", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}
