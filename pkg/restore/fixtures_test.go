package restore_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imgcast/imgcast/internal/testtools"
)

// Fixtures are made at test time with the Debian tools (scripts/deps.sh
// installs them). A missing tool fails the test; IMGCAST_QUICK=1 skips it.
func needTools(t testing.TB, tools ...string) {
	t.Helper()
	testtools.Require(t, tools...)
}

var fixtureDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "imgcast-restore-")
	if err != nil {
		panic(err)
	}
	fixtureDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

const pattern = 0x77

// patterned writes a file of size bytes of a non-zero pattern, so that
// "unused blocks are left untouched" can be seen.
func patterned(t testing.TB, path string, size int64) string {
	t.Helper()
	if err := os.WriteFile(path, bytes.Repeat([]byte{pattern}, int(size)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func digest(t testing.TB, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// sourceTree is a directory of files to put on the filesystems: one larger
// than 1 MiB, several small ones, in a subdirectory too.
func sourceTree(t testing.TB) string {
	dir := filepath.Join(fixtureDir, "tree")
	if _, err := os.Stat(dir); err == nil {
		return dir
	}
	rng := rand.New(rand.NewPCG(42, 42))
	write := func(name string, n int) {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tmp := dir + ".tmp"
	write(filepath.Join(tmp, "big.bin"), 3<<20+123)
	for i := range 12 {
		write(filepath.Join(tmp, fmt.Sprintf("small%02d.txt", i)), 500+i*4099)
	}
	write(filepath.Join(tmp, "sub", "nested.bin"), 200000)
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// fixture is a filesystem image and its partclone image.
type fixture struct {
	name   string
	fs     string // the filesystem image the partclone image was made from
	pcl    string // partclone image, uncompressed
	size   int64  // device size
	fsck   []string
	clone  string // partclone tool that made pcl
	fsType string
}

var (
	fixMu    sync.Mutex
	fixtures = map[string]*fixture{}
)

// getFixture builds (once per test binary) the named fixture:
// ext4-4k, ext4-1k, fat16, fat32, ntfs, imager.
func getFixture(t testing.TB, name string) *fixture {
	t.Helper()
	fixMu.Lock()
	defer fixMu.Unlock()
	if f, ok := fixtures[name]; ok {
		return f
	}
	needTools(t, "partclone.restore", "partclone.ext4", "mkfs.ext4", "e2fsck")
	dir := filepath.Join(fixtureDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f := &fixture{name: name, fs: filepath.Join(dir, "fs.img"), pcl: filepath.Join(dir, "fs.pcl")}
	tree := sourceTree(t)
	log := filepath.Join(dir, "log")
	switch name {
	case "ext4-4k", "ext4-1k":
		f.size = 32 << 20
		patterned(t, f.fs, f.size)
		args := []string{"-q", "-F", "-E", "nodiscard", "-d", tree}
		if name == "ext4-4k" {
			args = append(args, "-b", "4096")
		}
		run(t, "mkfs.ext4", append(args, f.fs)...)
		f.clone, f.fsck = "partclone.ext4", []string{"e2fsck", "-fn"}
	case "fat16", "fat32":
		needTools(t, "mkfs.vfat", "mcopy", "fsck.vfat", "partclone.fat32")
		f.size = 16 << 20
		if name == "fat32" {
			f.size = 64 << 20
		}
		patterned(t, f.fs, f.size)
		run(t, "mkfs.vfat", "-F", strings.TrimPrefix(name, "fat"), f.fs)
		run(t, "mcopy", "-s", "-i", f.fs, filepath.Join(tree, "big.bin"), filepath.Join(tree, "sub"), filepath.Join(tree, "small03.txt"), "::/")
		f.clone, f.fsck = "partclone."+name, []string{"fsck.vfat", "-n"}
	case "ntfs":
		needTools(t, "mkntfs", "ntfscp", "ntfsfix", "partclone.ntfs")
		f.size = 32 << 20
		patterned(t, f.fs, f.size)
		run(t, "mkntfs", "-F", "-Q", "-q", f.fs)
		run(t, "ntfscp", "-f", f.fs, filepath.Join(tree, "big.bin"), "big.bin")
		run(t, "ntfscp", "-f", f.fs, filepath.Join(tree, "small05.txt"), "small05.txt")
		f.clone, f.fsck = "partclone.ntfs", []string{"ntfsfix", "-n"}
	case "imager":
		needTools(t, "partclone.imager")
		// Not a multiple of 512: padding bits in the bitmap, a lost tail.
		f.size = 4<<20 + 1636
		b := make([]byte, f.size)
		rng := rand.New(rand.NewPCG(5, 5))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if err := os.WriteFile(f.fs, b, 0o644); err != nil {
			t.Fatal(err)
		}
		f.clone = "partclone.imager"
	default:
		t.Fatalf("no fixture %q", name)
	}
	run(t, f.clone, "-c", "-s", f.fs, "-o", f.pcl, "-L", log, "-q")
	fixtures[name] = f
	return f
}

// variant makes another partclone image of the fixture with extra options
// (e.g. -a0, -k17 -K) and returns its path.
func (f *fixture) variant(t testing.TB, tag string, opts ...string) string {
	t.Helper()
	fixMu.Lock()
	defer fixMu.Unlock()
	out := filepath.Join(filepath.Dir(f.pcl), "fs."+tag+".pcl")
	if _, err := os.Stat(out); err == nil {
		return out
	}
	args := append([]string{"-c", "-s", f.fs, "-o", out, "-L", out + ".log", "-q"}, opts...)
	run(t, f.clone, args...)
	return out
}

// compressed returns a compressed copy of an image: "pigz", "gzip2" (two
// gzip members), "zstd" (zstd -T0 -3), or "" (the file itself).
func compressed(t testing.TB, path, how string) string {
	t.Helper()
	if how == "" {
		return path
	}
	fixMu.Lock()
	defer fixMu.Unlock()
	out := path + "." + how
	if _, err := os.Stat(out); err == nil {
		return out
	}
	var script string
	switch how {
	case "pigz":
		script = `pigz -c -p 2 "$1" > "$2"`
	case "zstd":
		script = `zstd -q -c -T0 -3 "$1" > "$2"`
	case "gzip2":
		script = `n=$(stat -c %s "$1"); head -c $((n/2)) "$1" | gzip -c > "$2"; tail -c +$((n/2+1)) "$1" | gzip -c >> "$2"`
	default:
		t.Fatalf("no compression %q", how)
	}
	needTools(t, "pigz", "zstd", "gzip")
	run(t, "bash", "-euo", "pipefail", "-c", script, "bash", path, out)
	return out
}

// reference is what partclone.restore makes of an image on a pattern-filled
// file of the device size.
func reference(t testing.TB, img string, size int64) string {
	t.Helper()
	fixMu.Lock()
	defer fixMu.Unlock()
	out := img + ".ref"
	if _, err := os.Stat(out); err == nil {
		return out
	}
	patterned(t, out+".tmp", size)
	run(t, "partclone.restore", "-s", img, "-O", out+".tmp", "-C", "-L", out+".log", "-q")
	if err := os.Rename(out+".tmp", out); err != nil {
		t.Fatal(err)
	}
	return out
}

func sameFiles(t testing.TB, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(x) != len(y) {
		t.Fatalf("%s is %d bytes, %s is %d", a, len(x), b, len(y))
	}
	for i := range x {
		if x[i] != y[i] {
			t.Fatalf("%s and %s differ first at byte %d (block 4096×%d)", a, b, i, i/4096)
		}
	}
}
