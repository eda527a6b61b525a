package mkswap_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/internal/fogtest"
	"github.com/imgcast/imgcast/pkg/restore/mkswap"
)

// file makes a file of size bytes filled with a pattern.
func file(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "part")
	if err := os.WriteFile(p, bytes.Repeat([]byte{0x5A}, int(size)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const uuid = "3f2c7b9e-41d8-4c0a-9b6e-2a1f0d5c8e74"

// TestSameAsMkswap: the header page is byte for byte what util-linux's
// mkswap writes for the same size, UUID and label.
func TestSameAsMkswap(t *testing.T) {
	fogtest.Need(t, "mkswap")
	for _, size := range []int64{40960, 8<<20 + 1234, 64 << 20} {
		ref := filepath.Join(t.TempDir(), "ref")
		if err := os.WriteFile(ref, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
		fogtest.Run(t, "mkswap", "-U", uuid, "-L", "imgcast-swap", "-p", "4096", ref)
		want, err := os.ReadFile(ref)
		if err != nil {
			t.Fatal(err)
		}
		got, err := mkswap.Header(size, mkswap.Options{UUID: uuid, Label: "imgcast-swap", PageSize: 4096})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want[:4096]) {
			t.Errorf("size %d: header differs from mkswap's", size)
		}
	}
}

// TestBlkidSeesIt: blkid and swaplabel read the area, its UUID and label,
// and nothing else (stale signatures are gone); bytes outside the
// range are untouched.
func TestBlkidSeesIt(t *testing.T) {
	fogtest.Need(t, "blkid", "swaplabel", "mkfs.ext4")
	const size = 16 << 20
	disk := file(t, size+2<<20)
	part := file(t, size)
	fogtest.Run(t, "mkfs.ext4", "-q", "-F", part)
	b, _ := os.ReadFile(part)
	d, _ := os.ReadFile(disk)
	copy(d[1<<20:], b)
	// A stale ISO 9660 volume descriptor beyond the first page (blkid
	// finds one from its magic alone), as btrfs keeps its at 64 KiB.
	copy(d[1<<20+32768:], "\x01CD001\x01")
	copy(d[1<<20+34816:], "\xffCD001\x01")
	if err := os.WriteFile(disk, d, 0o644); err != nil {
		t.Fatal(err)
	}

	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := mkswap.Make(f, 1<<20, size, mkswap.Options{UUID: uuid, Label: "swap0"}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	d, _ = os.ReadFile(disk)
	for _, r := range [][2]int{{0, 1 << 20}, {1<<20 + size, len(d)}} {
		if i := bytes.IndexFunc(d[r[0]:r[1]], func(c rune) bool { return c != 0x5A }); i >= 0 {
			t.Fatalf("byte %d outside the swap area was changed", r[0]+i)
		}
	}
	if err := os.WriteFile(part, d[1<<20:1<<20+size], 0o644); err != nil {
		t.Fatal(err)
	}
	out := fogtest.Run(t, "blkid", "-p", "-o", "export", part)
	for _, want := range []string{"TYPE=swap", "UUID=" + uuid, "LABEL=swap0", "VERSION=1"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("blkid -p does not say %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "ext4") || strings.Contains(out, "iso9660") || strings.Contains(out, "ambivalent") {
		t.Errorf("blkid still sees an old signature:\n%s", out)
	}
	if out := fogtest.Run(t, "swaplabel", part); !strings.Contains(out, "UUID:  "+uuid) && !strings.Contains(out, uuid) {
		t.Errorf("swaplabel: %s", out)
	}
	gotUUID, label, err := mkswap.Read(bytes.NewReader(d), 1<<20, 0)
	if err != nil || gotUUID != uuid || label != "swap0" {
		t.Errorf("Read = %q %q %v", gotUUID, label, err)
	}
}

func TestRandomUUID(t *testing.T) {
	a, err := mkswap.Header(1<<20, mkswap.Options{PageSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := mkswap.Header(1<<20, mkswap.Options{PageSize: 4096})
	u, _, err := mkswap.Read(bytes.NewReader(a), 0, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, b) || u[14] != '4' || !strings.ContainsAny(u[19:20], "89ab") {
		t.Errorf("random UUID %s is not a fresh version-4 UUID", u)
	}
}

func TestRefuses(t *testing.T) {
	for name, tc := range map[string]struct {
		size int64
		opts mkswap.Options
	}{
		"too small":     {9 * 4096, mkswap.Options{PageSize: 4096}},
		"bad uuid":      {1 << 20, mkswap.Options{UUID: "3f2c7b9e-41d8-4c0a-9b6e-2a1f0d5c8e7", PageSize: 4096}},
		"uuid not hex":  {1 << 20, mkswap.Options{UUID: "3f2c7b9e-41d8-4c0a-9b6e-2a1f0d5c8e7z", PageSize: 4096}},
		"long label":    {1 << 20, mkswap.Options{Label: "seventeen-bytes!!", PageSize: 4096}},
		"odd page size": {1 << 20, mkswap.Options{PageSize: 5000}},
	} {
		if _, err := mkswap.Header(tc.size, tc.opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, _, err := mkswap.Read(bytes.NewReader(make([]byte, 4096)), 0, 4096); err != mkswap.ErrNotSwap {
		t.Errorf("Read of zeros: %v", err)
	}
}
