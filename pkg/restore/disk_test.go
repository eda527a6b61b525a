package restore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcast/imgcast/pkg/restore"
	"github.com/imgcast/imgcast/pkg/restore/imagedir"
	"github.com/imgcast/imgcast/pkg/restore/ptable"
	"github.com/imgcast/imgcast/pkg/restore/sfdisk"
)

const diskSize = 64 << 20

// A FOG-style MBR image: boot code and GRUB-like data before partition 1,
// ext4 (pigz) in 1, FAT16 (zstd, split FOG-style into 3 pieces) in 2, a
// swap entry without an image in 3, and d1.sha256.
func mbrFolder(t *testing.T) (dir string, dump string, boot []byte) {
	ext4, fat := getFixture(t, "ext4-4k"), getFixture(t, "fat16")
	dir = t.TempDir()
	dump = `label: dos
label-id: 0x0badcafe
device: /dev/sda
unit: sectors
sector-size: 512

/dev/sda1 : start=        2048, size=       65536, type=83, bootable
/dev/sda2 : start=       67584, size=       32768, type=e
/dev/sda3 : start=      100352, size=        2048, type=82
`
	boot = make([]byte, 2048*512)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range boot {
		boot[i] = byte(rng.Uint32())
	}
	boot[510], boot[511] = 0x55, 0xAA
	write(t, filepath.Join(dir, "d1.partitions"), []byte(dump))
	write(t, filepath.Join(dir, "d1.mbr"), boot)
	copyFile(t, compressed(t, ext4.pcl, "pigz"), filepath.Join(dir, "d1p1.img"))
	// FOG splits with split -a 3 -d and renames .000 to the bare name.
	run(t, "split", "-a", "3", "-d", "-b", "20000", compressed(t, fat.pcl, "zstd"), filepath.Join(dir, "d1p2.img."))
	if err := os.Rename(filepath.Join(dir, "d1p2.img.000"), filepath.Join(dir, "d1p2.img")); err != nil {
		t.Fatal(err)
	}
	sums(t, dir)
	return dir, dump, boot
}

// A GPT image: ext4 with 1 KiB blocks in 1, a partclone.imager image in 2,
// the sgdisk backup (with boot code in its protective MBR) as d1.mbr.
func gptFolder(t *testing.T) (dir string, dump string, boot []byte) {
	ext4, raw := getFixture(t, "ext4-1k"), getFixture(t, "imager")
	dir = t.TempDir()
	dump = `label: gpt
label-id: 0E5D6B52-1A2B-4C3D-8E9F-001122334455
device: /dev/sda
unit: sectors
first-lba: 2048
last-lba: 131038
sector-size: 512

/dev/sda1 : start=        2048, size=       65536, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=A1B2C3D4-0000-4000-8000-000000000001, name="root"
/dev/sda2 : start=       67584, size=       10240, type=21686148-6449-6E6F-744E-656564454649, uuid=A1B2C3D4-0000-4000-8000-000000000002, name="bios boot", attrs="LegacyBIOSBootable"
`
	src := filepath.Join(dir, "src.img")
	patterned(t, src, diskSize)
	sfdiskWrite(t, src, dump)
	code := bytes.Repeat([]byte{0xEB, 0x63}, 220)
	f, err := os.OpenFile(src, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(code, 0)
	f.Close()
	run(t, "sgdisk", "-b", filepath.Join(dir, "d1.mbr"), src)
	os.Remove(src)
	boot = mustRead(t, filepath.Join(dir, "d1.mbr"))
	write(t, filepath.Join(dir, "d1.partitions"), []byte(dump))
	copyFile(t, compressed(t, ext4.pcl, "zstd"), filepath.Join(dir, "d1p1.img.000"))
	copyFile(t, raw.pcl, filepath.Join(dir, "d1p2.img"))
	return dir, dump, boot
}

func write(t testing.TB, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t testing.TB, from, to string) { t.Helper(); write(t, to, mustRead(t, from)) }

func sums(t testing.TB, dir string) {
	t.Helper()
	run(t, "bash", "-euo", "pipefail", "-c", `cd "$1" && sha256sum d1.partitions d1.mbr d1p*.img* > d1.sha256`, "bash", dir)
}

func sfdiskWrite(t testing.TB, disk, dump string) {
	t.Helper()
	cmd := exec.Command("sfdisk", "-q", disk)
	cmd.Stdin = strings.NewReader(dump)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
}

func sfdiskDump(t testing.TB, disk string) string {
	t.Helper()
	return strings.ReplaceAll(run(t, "sfdisk", "-d", disk), disk, "DISK")
}

func restoreDisk(t testing.TB, location, disk string) error {
	t.Helper()
	ctx := context.Background()
	folder, err := imagedir.Open(location)
	if err != nil {
		return err
	}
	if h, ok := folder.(*imagedir.HTTPFolder); ok {
		_ = h
		folder, err = imagedir.NewHTTP(location, imagedir.HTTPOptions{Backoff: 10 * time.Millisecond, IdleTimeout: 5 * time.Second})
		if err != nil {
			return err
		}
	}
	di, err := restore.LoadDiskImage(ctx, folder, 1)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g, err := ptable.ReadGeometry(f, 0)
	if err != nil {
		t.Fatal(err)
	}
	return restore.RestoreDisk(ctx, di, f, g, restore.DiskOptions{})
}

// checkDisk compares a restored disk with what sfdisk and partclone.restore
// make of the same folder.
func checkDisk(t *testing.T, disk, dump string, boot []byte, parts map[int]*fixture) {
	t.Helper()
	ref := patterned(t, filepath.Join(t.TempDir(), "ref.img"), diskSize)
	sfdiskWrite(t, ref, dump)
	if a, b := sfdiskDump(t, ref), sfdiskDump(t, disk); a != b {
		t.Errorf("partition table differs from sfdisk's:\n%s\n%s", a, b)
	}
	got := mustRead(t, disk)
	d, err := sfdisk.Parse(strings.NewReader(dump))
	if err != nil {
		t.Fatal(err)
	}
	if d.Label == "dos" {
		if !bytes.Equal(got[:440], boot[:440]) || !bytes.Equal(got[512:len(boot)], boot[512:]) {
			t.Error("boot area not restored")
		}
		if !bytes.Equal(got[440:512], mustRead(t, ref)[440:512]) {
			t.Error("sector 0 table differs from sfdisk's")
		}
	} else if !bytes.Equal(got[:440], boot[:440]) {
		t.Error("protective MBR boot code not restored")
	}
	for n, fx := range parts {
		p, _ := d.Partition(n)
		want := mustRead(t, reference(t, fx.pcl, fx.size))
		off := int(p.Start) * 512
		if !bytes.Equal(got[off:off+len(want)], want) {
			t.Errorf("partition %d differs from partclone.restore's output", n)
		}
		if end := int(p.End()+1) * 512; off+len(want) < end && got[off+len(want)] != pattern {
			t.Errorf("partition %d: bytes past the image's device size were written", n)
		}
		if fx.fsck != nil && fx.name != "ntfs" {
			part := filepath.Join(t.TempDir(), "part.img")
			write(t, part, got[off:off+len(want)])
			run(t, fx.fsck[0], append(fx.fsck[1:], part)...)
		}
	}
}

func TestRestoreDiskFolder(t *testing.T) {
	needTools(t, "sfdisk", "sgdisk", "split", "sha256sum")
	t.Run("mbr", func(t *testing.T) {
		dir, dump, boot := mbrFolder(t)
		disk := patterned(t, filepath.Join(t.TempDir(), "disk.img"), diskSize)
		if err := restoreDisk(t, dir, disk); err != nil {
			t.Fatal(err)
		}
		checkDisk(t, disk, dump, boot, map[int]*fixture{1: getFixture(t, "ext4-4k"), 2: getFixture(t, "fat16")})
	})
	t.Run("gpt", func(t *testing.T) {
		dir, dump, boot := gptFolder(t)
		disk := patterned(t, filepath.Join(t.TempDir(), "disk.img"), diskSize)
		if err := restoreDisk(t, dir, disk); err != nil {
			t.Fatal(err)
		}
		checkDisk(t, disk, dump, boot, map[int]*fixture{1: getFixture(t, "ext4-1k"), 2: getFixture(t, "imager")})
	})
}

// flaky serves a folder but breaks the second GET of every image file
// half-way (the first one only reads the header, to check it);
// with noRange it also ignores Range headers, as some servers do.
type flaky struct {
	dir     string
	noRange bool
	mu      sync.Mutex
	gets    map[string]int
	ranges  int
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Range") != "" {
		f.mu.Lock()
		f.ranges++
		f.mu.Unlock()
		if f.noRange {
			r.Header.Del("Range")
		}
	}
	f.mu.Lock()
	if r.Method == http.MethodGet {
		f.gets[r.URL.Path]++
	}
	breakIt := strings.Contains(r.URL.Path, ".img") && f.gets[r.URL.Path] == 2
	f.mu.Unlock()
	if breakIt {
		b, err := os.ReadFile(filepath.Join(f.dir, filepath.Base(r.URL.Path)))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b[:len(b)/2])
		panic(http.ErrAbortHandler) // cut the connection
	}
	http.FileServer(http.Dir(f.dir)).ServeHTTP(w, r)
}

func TestRestoreDiskHTTP(t *testing.T) {
	needTools(t, "sfdisk", "sgdisk", "split", "sha256sum")
	dir, dump, boot := mbrFolder(t)
	for _, noRange := range []bool{false, true} {
		t.Run(fmt.Sprintf("noRange=%v", noRange), func(t *testing.T) {
			h := &flaky{dir: dir, noRange: noRange, gets: map[string]int{}}
			srv := httptest.NewServer(h)
			defer srv.Close()
			disk := patterned(t, filepath.Join(t.TempDir(), "disk.img"), diskSize)
			if err := restoreDisk(t, srv.URL+"/", disk); err != nil {
				t.Fatal(err)
			}
			if h.ranges == 0 {
				t.Error("no transfer was resumed")
			}
			checkDisk(t, disk, dump, boot, map[int]*fixture{1: getFixture(t, "ext4-4k"), 2: getFixture(t, "fat16")})
		})
	}
	t.Run("server gone", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		}))
		defer srv.Close()
		disk := patterned(t, filepath.Join(t.TempDir(), "disk.img"), diskSize)
		err := restoreDisk(t, srv.URL+"/", disk)
		if err == nil || !strings.Contains(err.Error(), "503") {
			t.Fatalf("got %v", err)
		}
		t.Log(err)
	})
}

// Refusals before anything is written, and failures during the restore.
func TestRestoreDiskBad(t *testing.T) {
	needTools(t, "sfdisk", "sgdisk", "split", "sha256sum")
	dir, dump, _ := mbrFolder(t)
	clone := func(t *testing.T, edit func(dir string)) string {
		d := t.TempDir()
		run(t, "cp", "-a", dir+"/.", d)
		edit(d)
		return d
	}
	for _, tc := range []struct {
		name         string
		folder       func(t *testing.T) string
		size         int64
		want         error
		writeNothing bool
	}{
		{"too small a disk", func(t *testing.T) string { return dir }, 48 << 20, restore.ErrDoesNotFit, true},
		{"garbage dump", func(t *testing.T) string {
			return clone(t, func(d string) { write(t, filepath.Join(d, "d1.partitions"), []byte("\x00\x01garbage\n")); sums(t, d) })
		}, diskSize, sfdisk.ErrSyntax, true},
		{"image larger than its partition", func(t *testing.T) string {
			return clone(t, func(d string) {
				write(t, filepath.Join(d, "d1.partitions"), []byte(strings.Replace(dump, "size=       65536", "size=       32768", 1)))
				sums(t, d)
			})
		}, diskSize, restore.ErrDoesNotFit, true},
		{"damaged image header", func(t *testing.T) string {
			return clone(t, func(d string) {
				b := mustRead(t, getFixture(t, "ext4-4k").pcl)
				b[70] ^= 1
				write(t, filepath.Join(d, "d1p1.img"), b)
				sums(t, d)
			})
		}, diskSize, restore.ErrCorrupt, true},
		{"sha256 mismatch", func(t *testing.T) string {
			return clone(t, func(d string) {
				s := mustRead(t, filepath.Join(d, "d1.sha256"))
				i := bytes.Index(s, []byte("  d1p2.img.001")) - 1
				s[i] ^= 1
				write(t, filepath.Join(d, "d1.sha256"), s)
			})
		}, diskSize, restore.ErrDigest, false},
		{"truncated piece", func(t *testing.T) string {
			return clone(t, func(d string) {
				p := filepath.Join(d, "d1p2.img.002")
				os.Remove(p)
				sums(t, d)
			})
		}, diskSize, restore.ErrTruncated, true}, // the header check before the table already fails
		{"d1.sha256 does not list d1.partitions", func(t *testing.T) string {
			return clone(t, func(d string) {
				run(t, "bash", "-euo", "pipefail", "-c", `cd "$1" && sha256sum d1.mbr d1p*.img* > d1.sha256`, "bash", d)
			})
		}, diskSize, restore.ErrDigest, true},
		{"d1.sha256 does not list d1.mbr", func(t *testing.T) string {
			return clone(t, func(d string) {
				run(t, "bash", "-euo", "pipefail", "-c", `cd "$1" && sha256sum d1.partitions d1p*.img* > d1.sha256`, "bash", d)
			})
		}, diskSize, restore.ErrDigest, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := patterned(t, filepath.Join(t.TempDir(), "disk.img"), tc.size)
			before := digest(t, disk)
			err := restoreDisk(t, tc.folder(t), disk)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			t.Log(err)
			if tc.writeNothing && digest(t, disk) != before {
				t.Error("the disk was written")
			}
			if !tc.writeNothing {
				if !strings.Contains(err.Error(), "the disk was wiped") {
					t.Errorf("the error does not tell of the wipe: %v", err)
				}
				checkWiped(t, disk, dump)
			}
		})
	}
}
