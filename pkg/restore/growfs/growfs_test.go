package growfs_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/internal/fogtest"
	"github.com/imgcast/imgcast/pkg/restore/growfs"
)

func random(t testing.TB, path string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func grow(t testing.TB, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

// TestGrowExt: an ext4 shrunk to its minimum (as FOG captures it) in a
// 24 MiB file grown to 96 MiB: e2fsck -fn is clean and the files read
// back intact, for 4 KiB and 1 KiB blocks.
func TestGrowExt(t *testing.T) {
	fogtest.Need(t, "mkfs.ext4", "resize2fs", "e2fsck", "debugfs")
	for _, block := range []string{"4096", "1024"} {
		t.Run(block, func(t *testing.T) {
			dir := t.TempDir()
			tree := filepath.Join(dir, "tree")
			os.MkdirAll(filepath.Join(tree, "sub"), 0o755)
			big := random(t, filepath.Join(tree, "big.bin"), 3<<20+17)
			small := []byte("hello from imgcast\n")
			os.WriteFile(filepath.Join(tree, "sub", "small.txt"), small, 0o644)
			fs := filepath.Join(dir, "p1")
			fogtest.Run(t, "mkfs.ext4", "-q", "-F", "-b", block, "-E", "nodiscard", "-d", tree, fs, "24M")
			fogtest.Run(t, "resize2fs", "-M", fs)
			st, _ := os.Stat(fs)
			minSize := st.Size()
			grow(t, fs, 96<<20)

			var logs []string
			res, err := growfs.Grow(context.Background(), fs, "EXTFS", growfs.Options{Logf: func(f string, a ...any) { logs = append(logs, f) }})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Grown || res.Before > minSize || res.After < 96<<20-64<<10 || res.After > 96<<20 {
				t.Errorf("result %+v (minimum file was %d bytes)", res, minSize)
			}
			fogtest.Run(t, "e2fsck", "-fn", fs)
			if got := fogtest.Run(t, "debugfs", "-R", "cat /big.bin", fs); !bytes.Equal([]byte(got), big) {
				t.Error("big.bin differs after growing")
			}
			if got := fogtest.Run(t, "debugfs", "-R", "cat /sub/small.txt", fs); got != string(small) {
				t.Errorf("small.txt = %q", got)
			}
			// Growing again finds nothing to do.
			res, err = growfs.Grow(context.Background(), fs, "EXTFS", growfs.Options{})
			if err != nil || res.Grown || res.Skipped == "" {
				t.Errorf("second grow: %+v %v", res, err)
			}
		})
	}
}

// TestGrowNTFS: a 24 MiB NTFS in a file grown to 80 MiB: ntfsfix -n finds
// it clean, files intact, dirty flag cleared.
func TestGrowNTFS(t *testing.T) {
	fogtest.Need(t, "mkntfs", "ntfsresize", "ntfsfix", "ntfscp", "ntfscat", "ntfsinfo")
	dir := t.TempDir()
	fs := filepath.Join(dir, "p2")
	os.WriteFile(fs, nil, 0o644)
	grow(t, fs, 24<<20)
	fogtest.Run(t, "mkntfs", "-F", "-Q", "-q", "-L", "Windows", fs)
	big := random(t, filepath.Join(dir, "big.bin"), 5<<20+3)
	fogtest.Run(t, "ntfscp", "-f", fs, filepath.Join(dir, "big.bin"), "big.bin")
	grow(t, fs, 80<<20)

	res, err := growfs.Grow(context.Background(), fs, "NTFS", growfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Grown || res.Before > 24<<20 || res.After < 78<<20 || res.After > 80<<20 {
		t.Errorf("result %+v", res)
	}
	out := fogtest.Run(t, "ntfsfix", "-n", fs)
	if !strings.Contains(out, "NTFS partition "+fs+" was processed successfully") {
		t.Errorf("ntfsfix -n:\n%s", out)
	}
	if got := fogtest.Run(t, "ntfscat", fs, "big.bin"); !bytes.Equal([]byte(got), big) {
		t.Error("big.bin differs after growing")
	}
	// ntfsresize schedules a Windows disk check (ntfsinfo then refuses
	// the volume); ntfsfix -b -d took the flag away.
	if out := fogtest.Run(t, "ntfsinfo", "-m", fs); !strings.Contains(out, "Volume Flags: 0x0000") {
		t.Errorf("volume still dirty:\n%s", out)
	}
}

func TestNotGrown(t *testing.T) {
	for _, fs := range []string{"FAT32", "raw", "BTRFS", "XFS", ""} {
		res, err := growfs.Grow(context.Background(), "/nonexistent", fs, growfs.Options{})
		if err != nil || res.Grown || res.Skipped == "" {
			t.Errorf("%q: %+v %v", fs, res, err)
		}
	}
}

// TestToolFailure: a damaged filesystem fails with the tool's own words.
func TestToolFailure(t *testing.T) {
	fogtest.Need(t, "mkfs.ext4", "e2fsck", "resize2fs")
	fs := filepath.Join(t.TempDir(), "p1")
	// One block group, so no backup superblock to fall back on; then a
	// feature bit no e2fsck knows.
	fogtest.Run(t, "mkfs.ext4", "-q", "-F", "-b", "4096", fs, "16M")
	f, _ := os.OpenFile(fs, os.O_RDWR, 0)
	f.WriteAt([]byte{0, 0, 0, 0x80}, 1024+0x60)
	f.Close()
	grow(t, fs, 32<<20)
	_, err := growfs.Grow(context.Background(), fs, "EXTFS", growfs.Options{})
	var te *growfs.ToolError
	if !errors.As(err, &te) || te.Tool != "e2fsck" || te.Output == "" || !strings.Contains(err.Error(), "e2fsck") {
		t.Fatalf("err = %v", err)
	}
}

// fakeRunner answers each tool with a scripted exit code.
type exit int

func (e exit) Error() string { return "exit " + string(rune('0'+int(e))) }
func (e exit) ExitCode() int { return int(e) }

func TestFsckExitCodes(t *testing.T) {
	fogtest.Need(t, "mkfs.ext4", "resize2fs")
	for name, tc := range map[string]struct {
		codes   map[string][]int
		wantErr bool
		wantRan string
	}{
		"clean":             {map[string][]int{}, false, "e2fsck -fp|resize2fs|e2fsck -fp"},
		"corrected":         {map[string][]int{"e2fsck -fp": {1, 0}}, false, "e2fsck -fp|resize2fs|e2fsck -fp"},
		"needs -fy":         {map[string][]int{"e2fsck -fp": {4, 0}}, false, "e2fsck -fp|e2fsck -fy|resize2fs|e2fsck -fp"},
		"-fy cannot fix":    {map[string][]int{"e2fsck -fp": {4}, "e2fsck -fy": {8}}, true, "e2fsck -fp|e2fsck -fy"},
		"resize2fs failing": {map[string][]int{"resize2fs": {1}}, true, "e2fsck -fp|resize2fs"},
	} {
		fs := filepath.Join(t.TempDir(), "p1")
		fogtest.Run(t, "mkfs.ext4", "-q", "-F", fs, "8M")
		grow(t, fs, 16<<20)
		var ran []string
		fake := func(_ context.Context, _ string, name string, args ...string) ([]byte, error) {
			key := name
			if name == "e2fsck" {
				key += " " + args[0]
			}
			ran = append(ran, key)
			if c := tc.codes[key]; len(c) > 0 {
				code := c[0]
				tc.codes[key] = c[1:]
				if code != 0 {
					return []byte("scripted"), exit(code)
				}
			}
			if name == "resize2fs" {
				return exec.Command("/usr/sbin/resize2fs", args...).CombinedOutput()
			}
			return nil, nil
		}
		_, err := growfs.Grow(context.Background(), fs, "EXTFS", growfs.Options{Run: fake})
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: err = %v", name, err)
		}
		if got := strings.Join(ran, "|"); got != tc.wantRan {
			t.Errorf("%s: ran %s, want %s", name, got, tc.wantRan)
		}
	}
}

func TestMissingTool(t *testing.T) {
	dir := t.TempDir()
	fogtest.Need(t, "mkfs.ext4")
	fs := filepath.Join(dir, "p1")
	fogtest.Run(t, "mkfs.ext4", "-q", "-F", fs, "8M")
	grow(t, fs, 16<<20)
	notFound := func(context.Context, string, string, ...string) ([]byte, error) { return nil, exec.ErrNotFound }
	_, err := growfs.Grow(context.Background(), fs, "EXTFS", growfs.Options{Run: notFound})
	if !errors.Is(err, growfs.ErrMissingTool) || !strings.Contains(err.Error(), "e2fsck is not in this image") {
		t.Errorf("err = %v", err)
	}
}

func FuzzSizes(f *testing.F) {
	sb := make([]byte, 2048)
	copy(sb[1024+56:], []byte{0x53, 0xEF})
	f.Add(sb)
	nt := make([]byte, 512)
	copy(nt[3:], "NTFS    ")
	nt[11], nt[12] = 0, 2
	f.Add(nt)
	f.Fuzz(func(t *testing.T, b []byte) {
		if n, err := growfs.ExtSize(bytes.NewReader(b)); err == nil && n < 0 {
			t.Fatal("negative ext size")
		}
		if n, err := growfs.NTFSSize(bytes.NewReader(b)); err == nil && n < 0 {
			t.Fatal("negative NTFS size")
		}
	})
}
