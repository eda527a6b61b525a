package qemutests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/dnsmasq"
	"github.com/imgcast/imgcast/internal/fogimages"
	"github.com/imgcast/imgcast/internal/fogserver"
	"github.com/imgcast/imgcast/internal/lab"
	"github.com/imgcast/imgcast/internal/nfsserver"
	"github.com/imgcast/imgcast/pkg/restore/growfs"
	"github.com/imgcast/imgcast/pkg/restore/sfdisk"
	"github.com/imgcast/imgcast/qemu-tests/vm"
)

// A FOG lab is what an unmodified FOG server gives its hosts: the fake
// FOG web server (FOG's PHP answers and its iPXE boot menu, serving our
// kernel and initramfs under FOG's file names), a storage node exporting
// the image store over NFSv3 (nfs-ganesha), FOG's multicast manager
// running the real udp-sender as FOG does, and dnsmasq chaining iPXE to
// FOG's boot.php. Machines PXE-boot and get FOG's kernel command line
// verbatim.
type fogLab struct {
	t      *testing.T
	lab    *vm.Lab
	server *fogserver.Server
	store  string // the exported image store
	ref    string // the disks the images were captured from
	ip     string
}

func newFogLab(t *testing.T, octet int, cfg fogserver.Config) *fogLab {
	t.Helper()
	lab.Require(t, "qemu-system-x86_64", "dnsmasq", "udp-sender", "e2fsck", "debugfs", "ntfsfix", "ntfscat", "sfdisk")
	lab.Require(t, nfsserver.Commands...)
	img := vm.BuildImage(t)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	store, ref := filepath.Join(dir, "images"), filepath.Join(dir, "reference")
	if err := fogimages.Build(store, ref); err != nil {
		t.Fatal(err)
	}
	ip := fmt.Sprintf("10.%d.0.1", octet)
	tftp := t.TempDir()
	if err := os.Chmod(tftp, 0o755); err != nil {
		t.Fatal(err)
	}
	// FOG's default.ipxe chains to boot.php with the MAC.
	script := "#!ipxe\nchain http://" + ip + "/fog/service/ipxe/boot.php?mac=${net0/mac}\n"
	if err := os.WriteFile(filepath.Join(tftp, "default.ipxe"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	l := vm.NewLab(t, octet, vm.LabOptions{DHCP: dnsmasq.Options{
		IPXEScript: "default.ipxe",
		Extra:      []string{"--enable-tftp", "--tftp-root=" + tftp},
	}})
	cfg.Boot = fogserver.Boot{
		Kernel: "imgcast-bzImage", Init: "imgcast-init.xz",
		Files:      map[string]string{"imgcast-bzImage": img.Kernel, "imgcast-init.xz": img.Initramfs},
		KernelArgs: "console=ttyS0 panic=-1 imgcast.failwait=1s imgcast.starttimeout=3m",
	}
	srv := fogserver.New(cfg)
	ln, err := vm.ListenInNamespace(l.Switch.NS, "tcp4", ip+":80")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go srv.Serve(ctx, ln)
	t.Cleanup(cancel)
	nfsserver.Start(t, l.Switch, store)
	return &fogLab{t: t, lab: l, server: srv, store: store, ref: ref, ip: ip}
}

// sender starts FOG's multicast manager's udp-sender chain for an image.
func (f *fogLab) sender(form fogserver.Form, image, imgType string, format, clients, port int) *lab.Output {
	f.t.Helper()
	s := fogserver.Sender{Form: form, Dir: filepath.Join(f.store, image), ImageType: fogserver.ImageTypeID(imgType), OSID: 50,
		Format: format, Interface: f.lab.Bridge, Clients: clients, Port: port, MaxWait: 2}
	log := &lab.Output{}
	run, err := s.Start(context.Background(), f.lab.Switch.Command, log)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() {
		run.Stop()
		if f.t.Failed() {
			f.t.Logf("udp-sender chain log:\n%s", log.String())
		}
	})
	return log
}

// boot registers a host with its task and PXE-boots it with empty disks.
func (f *fogLab) boot(name, mac string, task *fogserver.Task, diskMiB ...int) (*vm.VM, []string) {
	f.t.Helper()
	f.server.AddHost(fogserver.Host{Name: name, MAC: mac, Task: task})
	var disks []string
	for _, mib := range diskMiB {
		disks = append(disks, vm.NewDisk(f.t, mib))
	}
	v := vm.Start(f.t, f.lab, vm.Config{Name: name, NICs: []vm.NIC{{MAC: mac}}, Disks: disks, Timeout: 6 * time.Minute})
	return v, disks
}

// calls lists the service scripts a host called with its MAC, in order
// (progress.php left out; getversion.php and inventory.php carry none).
func (f *fogLab) calls(mac string) []string {
	var out []string
	for _, c := range f.server.Calls() {
		if !strings.EqualFold(c.Form.Get("mac"), mac) || strings.HasPrefix(c.Script, "service/ipxe/") {
			continue
		}
		if s := strings.TrimPrefix(c.Script, "service/"); s != "progress.php" {
			out = append(out, s)
		}
	}
	return out
}

// TestFOG runs FOG-mode scenarios on one FOG lab: two machines multicast
// the resizable image onto larger disks; then a machine whose export has
// no .mntcheck.
func TestFOG(t *testing.T) {
	f := newFogLab(t, 57, fogserver.Config{MaxLatency: 2 * time.Second})

	t.Run("multicast n onto larger disks", func(t *testing.T) {
		f.t = t
		const port = 9000
		f.server.AddSession(fogserver.Session{Name: "lab", Port: port, MaxWait: 2})
		f.sender(fogserver.Form15, fogimages.Resizable, "n", 5, 2, port)
		start := time.Now()
		type machine struct {
			v    *vm.VM
			disk string
			mac  string
		}
		var ms []machine
		for i := range 2 {
			mac := fmt.Sprintf("52:54:00:57:00:%02x", i+1)
			task := &fogserver.Task{Type: fogserver.Multicast, Session: "lab",
				Image: fogserver.Image{Name: fogimages.Resizable, Type: "n", Format: 5, OSID: 50}, Shutdown: true}
			v, disks := f.boot(fmt.Sprintf("fogpc%d", i+1), mac, task, 160)
			ms = append(ms, machine{v, disks[0], mac})
		}
		for _, m := range ms {
			m.v.Expect(`FOG server 1\.5\.10`, 3*time.Minute)
			m.v.Expect(`FOG has the task completed`, 4*time.Minute)
			if err := m.v.Wait(time.Minute); err != nil {
				t.Fatalf("%s did not power off (shutdown=1): %v", m.v.Name, err)
			}
		}
		t.Logf("FOG-mode multicast: 2 machines from first boot to both done in %s", time.Since(start).Round(time.Second))
		if n := len(f.server.Calls("service/inventory.php")); n < 2 {
			t.Errorf("%d inventory.php calls, want one per machine", n)
		}
		for _, m := range ms {
			got := strings.Join(f.calls(m.mac), " ")
			if !strings.HasPrefix(got, "mc_checkin.php") || !strings.HasSuffix(got, "Post_Stage3.php") || strings.Count(got, "Post_Stage3.php") != 1 {
				t.Errorf("%s: calls %q", m.v.Name, got)
			}
			checkProgress(t, f.server, m.mac)
			checkResized(t, m.disk, filepath.Join(f.ref, "fog-n.raw"))
		}
	})

	t.Run("export without .mntcheck", func(t *testing.T) {
		f.t = t
		if err := os.Remove(filepath.Join(f.store, ".mntcheck")); err != nil {
			t.Fatal(err)
		}
		mac := "52:54:00:57:00:10"
		task := &fogserver.Task{Type: fogserver.Deploy, Image: fogserver.Image{Name: fogimages.MultiPart, Type: "mps", Format: 0, OSID: 50}, Shutdown: true}
		v, disks := f.boot("fognomark", mac, task, 64)
		v.Expect(`\*\*\* imgcast FAILED \*\*\*`, 4*time.Minute)
		v.Expect(`\.mntcheck`, 10*time.Second)
		if err := v.Wait(time.Minute); err != nil {
			t.Fatalf("did not power off: %v", err)
		}
		got := strings.Join(f.calls(mac), " ")
		if !strings.Contains(got, "blame.php") || !strings.Contains(got, "taskerror.php") || strings.Contains(got, "Post_Stage3") {
			t.Errorf("calls %q", got)
		}
		if st := f.server.Status(mac); st.NodeFailures == 0 || len(st.Errors) == 0 {
			t.Errorf("FOG has %+v", st)
		}
		b, err := os.ReadFile(disks[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range b {
			if c != 0 {
				t.Fatal("the disk was written")
			}
		}
	})
}

// checkProgress checks the host's progress.php posts: each parses into
// FOG's seven fields and, within a partition, the copied size never
// shrinks.
func checkProgress(t *testing.T, srv *fogserver.Server, mac string) {
	t.Helper()
	n := 0
	last := map[string]float64{}
	for _, c := range srv.Calls("service/progress.php") {
		if !strings.EqualFold(c.Form.Get("mac"), mac) || strings.HasPrefix(c.Script, "service/ipxe/") {
			continue
		}
		n++
		if len(c.Status) != 7 {
			t.Errorf("progress %q: %d fields, want 7", strings.Join(c.Status, "@"), len(c.Status))
			continue
		}
		total := c.Status[6]
		pct, err := strconv.ParseFloat(strings.TrimSpace(c.Status[5]), 64)
		if err != nil {
			t.Errorf("progress %q: percent: %v", strings.Join(c.Status, "@"), err)
			continue
		}
		if pct < last[total] {
			t.Errorf("progress went back from %.2f to %.2f %% for a partition of %s bytes", last[total], pct, total)
		}
		last[total] = pct
	}
	if n == 0 {
		t.Errorf("%s posted no progress", mac)
	}
}

// checkResized checks a disk imaged from fog-n: the table filled to the
// disk, ext4 and NTFS grown and clean, every file as on the source disk.
func checkResized(t *testing.T, disk, ref string) {
	t.Helper()
	out, err := exec.Command("sfdisk", "-d", disk).Output()
	if err != nil {
		t.Fatalf("sfdisk -d %s: %v", disk, err)
	}
	d, err := sfdisk.Parse(strings.NewReader(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := d.Partition(1)
	p3, _ := d.Partition(3)
	if p1.Size <= 49152 || p3.Size <= 49152 {
		t.Errorf("the table was not filled to the disk: %+v", d.Partitions)
	}
	dir := t.TempDir()
	extract := func(name string, f string, start, size uint64) string {
		p := filepath.Join(dir, name)
		cmd := exec.Command("dd", "if="+f, "of="+p, "bs=512", fmt.Sprintf("skip=%d", start), fmt.Sprintf("count=%d", size), "status=none")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("dd: %v %s", err, out)
		}
		return p
	}
	root := extract("root", disk, p1.Start, p1.Size)
	refRoot := extract("refroot", ref, 2048, 49152)
	if out, err := exec.Command("e2fsck", "-fn", root).CombinedOutput(); err != nil {
		t.Errorf("e2fsck: %v\n%s", err, out)
	}
	for _, file := range fogimages.Files {
		a, _ := exec.Command("debugfs", "-R", "cat /"+file, root).Output()
		b, _ := exec.Command("debugfs", "-R", "cat /"+file, refRoot).Output()
		if len(a) == 0 || string(a) != string(b) {
			t.Errorf("ext4 /%s differs from the source disk's", file)
		}
	}
	if fr, err := os.Open(root); err == nil {
		if size, _ := growfs.ExtSize(fr); size < int64(p1.Size)*512-64<<10 {
			t.Errorf("ext4 is %d bytes in a %d-byte partition: not grown", size, p1.Size*512)
		}
		fr.Close()
	}
	win := extract("win", disk, p3.Start, p3.Size)
	if out, _ := exec.Command("ntfsfix", "-n", win).CombinedOutput(); !strings.Contains(string(out), "processed successfully") {
		t.Errorf("ntfsfix -n:\n%s", out)
	}
	if a, _ := exec.Command("ntfscat", win, "README.txt").Output(); len(a) == 0 {
		t.Error("NTFS README.txt is missing")
	}
	if fw, err := os.Open(win); err == nil {
		if size, _ := growfs.NTFSSize(fw); size < int64(p3.Size)*512-2<<20 {
			t.Errorf("NTFS is %d bytes in a %d-byte partition: not grown", size, p3.Size*512)
		}
		fw.Close()
	}
}
