package qemutests

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/defaultimage"
	"github.com/imgcast/imgcast/qemu-tests/vm"
)

// The machines labs have, two at a time (one vCPU each on the two cores),
// imaged by multicast from one session each.

// TestDisksAndNICs: an NVMe machine with an Intel e1000e NIC and a USB
// stick larger than the image, which must never be chosen; and a SATA
// (AHCI) machine with two NICs of which the first has no cable: the second
// must be up without waiting for the first one's link timeout.
func TestDisksAndNICs(t *testing.T) {
	s := newSession(t, sessionOptions{octet: 86, clients: 2})

	nvme := vm.NewDisk(t, defaultimage.DiskSize>>20)
	stick := filledDisk(t, 128)
	stickSum := fileSum(t, stick)
	pcNVMe := s.bootWith(vm.Config{Name: "nvme-usb-e1000e", NICs: []vm.NIC{{Model: "e1000e"}},
		Drives: []vm.Drive{{Path: nvme, Bus: "nvme"}, {Path: stick, Bus: "usb"}}})
	pcNVMe.disk, pcNVMe.target = nvme, "nvme0n1"

	sata := vm.NewDisk(t, defaultimage.DiskSize>>20)
	const linkTimeout = 20 * time.Second
	pcSATA := s.bootDirect(vm.Config{Name: "sata-2nics", NICs: []vm.NIC{{NoCarrier: true}, {}},
		Drives: []vm.Drive{{Path: sata, Bus: "ahci"}}}, fmt.Sprintf("imgcast.linktimeout=%s", linkTimeout))
	pcSATA.disk, pcSATA.target, pcSATA.mac = sata, "sda", pcSATA.MACs[1]

	var wg sync.WaitGroup
	for _, c := range []*client{pcNVMe, pcSATA} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c == pcSATA {
				expectReadyOn(t, c, c.MACs[1], linkTimeout)
			}
			rates, took := s.expectDone(c, "multicast")
			logImaging(t, c, rates, took)
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, c := range []*client{pcNVMe, pcSATA} {
		s.checkDisk(c)
	}
	if got := fileSum(t, stick); got != stickSum {
		t.Errorf("the USB stick was written to")
	}
	if out := pcNVMe.Console.Output(); !strings.Contains(out, "driver e1000e") {
		t.Errorf("%s: the e1000e NIC was not used", pcNVMe.Name)
	}
}

// TestFourKnAndTwoDisks: a 4Kn image (captured from a disk with 4096-byte
// sectors) restored onto a 4Kn NVMe disk; and a machine with two 4Kn disks
// where imgcast.disk names the second drive by its serial (the kernel's
// probe order has called it vda as well as vdb), whose first NIC sits on
// a network where nobody answers DHCP.
func TestFourKnAndTwoDisks(t *testing.T) {
	img := fourKnImage(t)
	s := newSession(t, sessionOptions{octet: 87, clients: 2, images: img.dir})

	nvme := vm.NewDisk(t, defaultimage.DiskSize>>20)
	pc4Kn := s.bootWith(vm.Config{Name: "nvme-4kn", Drives: []vm.Drive{{Path: nvme, Bus: "nvme", SectorSize: 4096}}})
	pc4Kn.disk, pc4Kn.target = nvme, "nvme0n1"

	first := filledDisk(t, defaultimage.DiskSize>>20)
	firstSum := fileSum(t, first)
	second := vm.NewDisk(t, defaultimage.DiskSize>>20)
	const dhcpTimeout = 30 * time.Second
	pcTwo := s.bootDirect(vm.Config{Name: "two-disks", NICs: []vm.NIC{{Isolated: true}, {}},
		Drives: []vm.Drive{{Path: first, SectorSize: 4096}, {Path: second, SectorSize: 4096}}},
		fmt.Sprintf("imgcast.disk=serial:imgcast0001 imgcast.dhcptimeout=%s", dhcpTimeout)) // any case
	pcTwo.disk, pcTwo.mac = second, pcTwo.MACs[1]

	var wg sync.WaitGroup
	for _, c := range []*client{pc4Kn, pcTwo} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c == pcTwo {
				expectReadyOn(t, c, c.MACs[1], dhcpTimeout)
				c.target = c.Expect(`imgcast: disk: /dev/(vd[ab]) .*serial IMGCAST0001\)`, 2*time.Minute)[1]
			}
			rates, took := s.expectDone(c, "multicast")
			logImaging(t, c, rates, took)
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, c := range []*client{pc4Kn, pcTwo} {
		img.check(t, c)
	}
	if fileSum(t, first) != firstSum {
		t.Errorf("the first drive (serial IMGCAST0000) was written to although imgcast.disk named serial IMGCAST0001")
	}
}

// expectReadyOn waits for the network to be ready on the NIC with the MAC
// address mac, sooner than the other NIC's timeout.
func expectReadyOn(t *testing.T, c *client, mac string, otherTimeout time.Duration) {
	t.Helper()
	nic := c.Expect(`imgcast: (eth\d) \(`+mac+`, driver`, 2*time.Minute)[1]
	m := c.Expect(`network ready: (eth\d) \S+ .* in ([0-9.]+) s since init started`, 2*time.Minute)
	if m[1] != nic {
		t.Errorf("%s: network ready on %s, want %s (%s)", c.Name, m[1], nic, mac)
	}
	took, _ := strconv.ParseFloat(m[2], 64)
	t.Logf("%s: network ready on %s %.2f s after init started (the other NIC's timeout: %s)", c.Name, nic, took, otherTimeout)
	if time.Duration(took*float64(time.Second)) >= otherTimeout {
		t.Errorf("%s: network ready only after %.2f s: it waited for the other NIC's %s timeout", c.Name, took, otherTimeout)
	}
}

// logImaging logs each partition's time on the client's disk (first byte
// to fsync, by the client's own account) and power-on to done.
func logImaging(t *testing.T, c *client, rates []partitionRate, took time.Duration) {
	t.Helper()
	var parts []string
	for _, r := range rates {
		parts = append(parts, fmt.Sprintf("%s %s (disk %.1f MB/s)", r.file, r.took, r.disk))
	}
	t.Logf("imaging on /dev/%s (%s): %s; power-on to done %s", c.target, c.Name, strings.Join(parts, ", "), took.Round(100*time.Millisecond))
}

// filledDisk is a disk of sizeMiB whose first and last MiB are random,
// to tell whether anything wrote there.
func filledDisk(t *testing.T, sizeMiB int) string {
	t.Helper()
	p := vm.NewDisk(t, sizeMiB)
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for _, off := range []int64{0, int64(sizeMiB-1) << 20} {
		rand.Read(buf)
		if _, err := f.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Clean(p)
}

func fileSum(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// A 4Kn image: the default image's layout on a disk with 4096-byte
// sectors, captured as FOG would from such a disk. Partition 1 is the
// default image's ext4 (its partclone image does not depend on the sector
// size); partition 2 is a FAT16 with 4096-byte sectors (FAT32 would need
// 65525 clusters, 256 MiB at that sector size). There is no d1.mbr (it is
// optional). The table is in 4096-byte sectors: partition 1 at 1 MiB.
type fourKn struct {
	dir        string // the image folder
	p1FS, p2FS string // the filesystems the partitions must hold
}

const (
	fourKnP1Start, fourKnP1Size = 256, 10240 // sectors of 4096 bytes: 40 MiB at 1 MiB
	fourKnP2Start, fourKnP2Size = 10496, 9216
)

var fourKnOnce struct {
	sync.Once
	img fourKn
	err error
}

func fourKnImage(t *testing.T) fourKn {
	t.Helper()
	_, images, ref := buildArtifacts(t)
	o := &fourKnOnce
	o.Do(func() {
		root, err := vm.RepoRoot()
		if err != nil {
			o.err = err
			return
		}
		work := filepath.Join(root, "build", "image-4kn")
		o.img, o.err = buildFourKn(work, images, ref)
	})
	if o.err != nil {
		t.Fatal(o.err)
	}
	return o.img
}

func buildFourKn(work, images, ref string) (fourKn, error) {
	img := fourKn{dir: filepath.Join(work, "default-4kn"), p1FS: filepath.Join(work, "p1.fs"), p2FS: filepath.Join(work, "p2.fs")}
	if err := os.RemoveAll(work); err != nil {
		return img, err
	}
	if err := os.MkdirAll(img.dir, 0o755); err != nil {
		return img, err
	}
	if err := defaultimage.Partitions[0].Extract(ref, img.p1FS); err != nil {
		return img, err
	}
	src := filepath.Join(work, "fat")
	if err := os.MkdirAll(filepath.Join(src, "EFI", "BOOT"), 0o755); err != nil {
		return img, err
	}
	random := make([]byte, 1<<20+77)
	rand.Read(random)
	if err := os.WriteFile(filepath.Join(src, "EFI", "BOOT", "README.TXT"), []byte("imgcast 4Kn image, FAT16 with 4096-byte sectors\r\n"), 0o644); err != nil {
		return img, err
	}
	if err := os.WriteFile(filepath.Join(src, "RANDOM.BIN"), random, 0o644); err != nil {
		return img, err
	}
	dump := fmt.Sprintf(`label: gpt
label-id: 3B8E4C2A-1D5F-4E6A-9C7B-8A0F2E1D3C4B
device: /dev/sda
unit: sectors
first-lba: %d
last-lba: %d
sector-size: 4096

/dev/sda1 : start=%12d, size=%12d, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=0B6E3F1A-2C4D-4E5F-8A9B-1C2D3E4F5A6B, name="imgcast-root"
/dev/sda2 : start=%12d, size=%12d, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=7D1E2F3A-4B5C-4D6E-9F0A-1B2C3D4E5F6A, name="imgcast-efi"
`, fourKnP1Start, defaultimage.DiskSize/4096-6, fourKnP1Start, fourKnP1Size, fourKnP2Start, fourKnP2Size)
	if err := os.WriteFile(filepath.Join(img.dir, "d1.partitions"), []byte(dump), 0o644); err != nil {
		return img, err
	}
	p1, err := os.ReadFile(filepath.Join(images, "d1p1.img"))
	if err != nil {
		return img, err
	}
	if err := os.WriteFile(filepath.Join(img.dir, "d1p1.img"), p1, 0o644); err != nil {
		return img, err
	}
	pcl := filepath.Join(work, "p2.pcl")
	for _, c := range [][]string{
		{"mkfs.vfat", "-F", "16", "-S", "4096", "-s", "1", "-n", "IMGCAST-EFI", "-i", "1A2B3C4D", "-C", img.p2FS, strconv.Itoa(fourKnP2Size * 4)},
		{"sh", "-c", `MTOOLS_SKIP_CHECK=1 mcopy -s -i "$0" "$1"/* ::/`, img.p2FS, src},
		{"fsck.vfat", "-n", img.p2FS},
		{"partclone.fat16", "-q", "-c", "-a0", "-s", img.p2FS, "-O", pcl, "-L", filepath.Join(work, "p2.log")},
		{"sh", "-c", `pigz -c "$0" > "$1"`, pcl, filepath.Join(img.dir, "d1p2.img")},
		{"sh", "-c", `cd "$0" && sha256sum d1.partitions d1p1.img d1p2.img > d1.sha256`, img.dir},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			return img, fmt.Errorf("4Kn image: %s: %v\n%s", strings.Join(c, " "), err, out)
		}
	}
	return img, nil
}

// check verifies a disk restored from the 4Kn image: GPT headers where a
// 4096-byte-sector disk has them, both partitions at their 4Kn offsets
// holding exactly the captured filesystems, and fsck clean.
func (img fourKn) check(t *testing.T, c *client) {
	t.Helper()
	disk, err := os.ReadFile(c.disk)
	if err != nil {
		t.Fatal(err)
	}
	if len(disk) != defaultimage.DiskSize {
		t.Fatalf("%s: disk is %d bytes", c.Name, len(disk))
	}
	if string(disk[4096:4104]) != "EFI PART" || string(disk[len(disk)-4096:len(disk)-4088]) != "EFI PART" {
		t.Errorf("%s: no GPT header at LBA 1 and at the last LBA of 4096 bytes", c.Name)
	}
	for _, p := range []struct {
		n           int
		start, size int64
		fs, fsck    string
	}{{1, fourKnP1Start, fourKnP1Size, img.p1FS, "e2fsck"}, {2, fourKnP2Start, fourKnP2Size, img.p2FS, "fsck.vfat"}} {
		want, err := os.ReadFile(p.fs)
		if err != nil {
			t.Fatal(err)
		}
		got := disk[p.start*4096 : (p.start+p.size)*4096]
		if !bytes.Equal(got, want) {
			t.Errorf("%s: partition %d differs from the captured filesystem", c.Name, p.n)
			continue
		}
		part := filepath.Join(t.TempDir(), "part")
		if err := os.WriteFile(part, got, 0o644); err != nil {
			t.Fatal(err)
		}
		args := []string{"-n", part}
		if p.fsck == "e2fsck" {
			args = []string{"-fn", part}
		}
		if out, err := exec.Command(p.fsck, args...).CombinedOutput(); err != nil {
			t.Errorf("%s: %s of partition %d: %v\n%s", c.Name, p.fsck, p.n, err, out)
		}
	}
}
