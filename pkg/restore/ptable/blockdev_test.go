package ptable_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/lab"
	"github.com/imgcast/imgcast/pkg/restore/ptable"
)

// loop attaches a fresh image file of size bytes as a loop device with the
// given logical sector size and returns the device path.
func loop(t *testing.T, size int64, ss int) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "loop.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", "-P", "-b", strconv.Itoa(ss), img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v\n%s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// On block devices (loop devices here) the geometry comes from the kernel,
// a 4096-byte-sector table matches sfdisk's, and the kernel re-reads the
// table at once (partition nodes appear).
func TestBlockDevice(t *testing.T) {
	lab.Require(t, "losetup", "sfdisk")
	for _, tc := range []struct {
		name string
		dump string
		ss   int
	}{
		{"gpt 4096-byte sectors", gpt4kDump, 4096},
		{"dos", dosDump, 512},
	} {
		t.Run(tc.name, func(t *testing.T) {
			theirs, ours := loop(t, 64<<20, tc.ss), loop(t, 64<<20, tc.ss)
			cmd := exec.Command("sfdisk", "-q", theirs)
			cmd.Stdin = strings.NewReader(tc.dump)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("sfdisk: %v\n%s", err, out)
			}
			f, err := os.OpenFile(ours, os.O_RDWR|os.O_EXCL, 0)
			if err != nil {
				t.Fatal(err)
			}
			g, err := ptable.ReadGeometry(f, 0)
			if err != nil {
				t.Fatal(err)
			}
			if g.LogicalSectorSize != int64(tc.ss) || g.Size != 64<<20 {
				t.Fatalf("geometry %+v", g)
			}
			err = ptable.Write(f, parse(t, tc.dump), g, nil)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			a, _ := exec.Command("sfdisk", "-d", theirs).Output()
			b, _ := exec.Command("sfdisk", "-d", ours).Output()
			if x, y := strings.ReplaceAll(string(a), theirs, "D"), strings.ReplaceAll(string(b), ours, "D"); x != y || x == "" {
				t.Errorf("sfdisk -d differs:\n%s\n%s", x, y)
			}
			if !bytes.Equal(readAt(t, theirs, 0, 64<<10), readAt(t, ours, 0, 64<<10)) {
				t.Error("table area differs from sfdisk's")
			}
			if !kernelParsesTables() {
				t.Log("this kernel has no MSDOS/EFI partition parsers: not checking that partitions appear")
				return
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				if _, err := os.Stat("/sys/class/block/" + filepath.Base(ours) + "p2"); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%sp2 did not appear in sysfs after the re-read", ours)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// kernelParsesTables reports whether the running kernel reads dos and gpt
// tables (the machines CI runs on may have neither built in).
func kernelParsesTables() bool {
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return true
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return true
	}
	b, _ := io.ReadAll(z)
	return bytes.Contains(b, []byte("CONFIG_MSDOS_PARTITION=y")) && bytes.Contains(b, []byte("CONFIG_EFI_PARTITION=y"))
}
