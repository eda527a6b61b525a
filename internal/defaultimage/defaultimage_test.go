package defaultimage

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/imgcast/imgcast/internal/testtools"
	"github.com/imgcast/imgcast/pkg/server"
)

// TestImageRestoresToTheReference builds the default image and restores it
// with the C tools (sgdisk, partclone.restore): the disk must come out
// byte-identical to the reference, which is what the demo's cmp relies on.
func TestImageRestoresToTheReference(t *testing.T) {
	testtools.Require(t, "sgdisk", "sfdisk", "partclone.extfs", "partclone.fat32", "partclone.restore", "mkfs.ext4", "mkfs.vfat", "mcopy", "zstd", "pigz", "sha256sum")
	dir := t.TempDir()
	img, ref := filepath.Join(dir, "images", "default"), filepath.Join(dir, "reference", "default.raw")
	if err := Build(img, ref); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(ref); err != nil || info.Size() != DiskSize {
		t.Fatalf("reference disk: %v, %v", info, err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, "images", ".*"))
	if len(leftovers) > 0 {
		t.Errorf("build left %v behind", leftovers)
	}

	streams, err := server.ScanImage(img)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range streams {
		ids = append(ids, s.ID)
	}
	if !reflect.DeepEqual(ids, []string{"d1p1.img", "d1p2.img"}) {
		t.Fatalf("streams %v", ids)
	}
	sh(t, img, "sha256sum", "--quiet", "-c", "d1.sha256")
	for _, f := range []struct {
		name  string
		magic []byte
	}{{"d1p1.img", []byte{0x28, 0xb5, 0x2f, 0xfd}}, {"d1p2.img", []byte{0x1f, 0x8b}}} {
		b, _ := os.ReadFile(filepath.Join(img, f.name))
		if !bytes.HasPrefix(b, f.magic) {
			t.Errorf("%s does not start with %x", f.name, f.magic)
		}
	}

	disk := filepath.Join(dir, "restored.raw")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, DiskSize); err != nil {
		t.Fatal(err)
	}
	sh(t, dir, "sgdisk", "--load-backup="+filepath.Join(img, "d1.mbr"), disk)
	for _, p := range []struct {
		file, decompress string
		offset           int
	}{{"d1p1.img", "zstd -dc", Part1Offset}, {"d1p2.img", "pigz -dc", Part2Offset}} {
		sh(t, dir, "bash", "-euo", "pipefail", "-c", fmt.Sprintf(
			"%s %s | partclone.restore -q -s - -o - -L %s/restore.log | dd of=%s bs=1M oflag=seek_bytes seek=%d conv=notrunc status=none",
			p.decompress, filepath.Join(img, p.file), dir, disk, p.offset))
	}
	sh(t, dir, "cmp", disk, ref)
}

func sh(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}
