package qemutests

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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
//
// Two FOG servers share the lab's web server: a 1.5 one at /fog/ and a
// 1.6 one (stream headers advertised) at /fog16/; each host boots from
// the one that has its task.
type fogLab struct {
	lab *vm.Lab
	// server is FOG 1.5 (web root /fog/), server16 FOG 1.6 (/fog16/).
	server, server16 *fogserver.Server
	store            string // the exported image store
	ref              string // the disks the images were captured from
	ip               string

	mu    sync.Mutex
	homes map[string]*fogserver.Server // host MAC -> its server
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
	// FOG's default.ipxe chains to boot.php with the MAC (here through
	// home.ipxe, which picks the host's server).
	script := "#!ipxe\nchain http://" + ip + "/home.ipxe?mac=${net0/mac}\n"
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
	f := &fogLab{lab: l, server: fogserver.New(cfg), store: store, ref: ref, ip: ip, homes: map[string]*fogserver.Server{}}
	cfg16 := cfg
	cfg16.Caps, cfg16.Prefix = true, "/fog16/"
	f.server16 = fogserver.New(cfg16)
	mux := http.NewServeMux()
	mux.Handle("/fog/", f.server.Handler())
	mux.Handle("/fog16/", f.server16.Handler())
	mux.HandleFunc("/home.ipxe", func(w http.ResponseWriter, r *http.Request) {
		prefix := "/fog/"
		f.mu.Lock()
		if f.homes[strings.ToLower(r.FormValue("mac"))] == f.server16 {
			prefix = "/fog16/"
		}
		f.mu.Unlock()
		fmt.Fprintf(w, "#!ipxe\nchain http://%s%sservice/ipxe/boot.php?mac=%s\n", ip, prefix, r.FormValue("mac"))
	})
	ln, err := vm.ListenInNamespace(l.Switch.NS, "tcp4", ip+":80")
	if err != nil {
		t.Fatal(err)
	}
	web := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go web.Serve(ln)
	t.Cleanup(func() { web.Close() })
	nfsserver.Start(t, l.Switch, store)
	return f
}

// sender starts FOG's multicast manager's udp-sender chain for an image.
func (f *fogLab) sender(t *testing.T, form fogserver.Form, image, imgType string, format, clients, port int) *lab.Output {
	t.Helper()
	s := fogserver.Sender{Form: form, Dir: filepath.Join(f.store, image), ImageType: fogserver.ImageTypeID(imgType), OSID: 50,
		Format: format, Interface: f.lab.Bridge, Clients: clients, Port: port, MaxWait: 2}
	log := &lab.Output{}
	run, err := s.Start(context.Background(), f.lab.Switch.Command, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		run.Stop()
		if t.Failed() {
			t.Logf("udp-sender chain log:\n%s", log.String())
		}
	})
	return log
}

// boot registers a host with its task on server srv and PXE-boots it
// with empty disks.
func (f *fogLab) boot(t *testing.T, srv *fogserver.Server, name, mac string, task *fogserver.Task, diskMiB ...int) (*vm.VM, []string) {
	t.Helper()
	srv.AddHost(fogserver.Host{Name: name, MAC: mac, Task: task})
	f.mu.Lock()
	f.homes[mac] = srv
	f.mu.Unlock()
	var disks []string
	for _, mib := range diskMiB {
		disks = append(disks, vm.NewDisk(t, mib))
	}
	v := vm.Start(t, f.lab, vm.Config{Name: name, NICs: []vm.NIC{{MAC: mac}}, Disks: disks, Timeout: 6 * time.Minute})
	return v, disks
}

// calls lists the service scripts a host called with its MAC, in order
// (progress.php left out; getversion.php and inventory.php carry none).
func (f *fogLab) calls(mac string) []string {
	f.mu.Lock()
	srv := f.homes[mac]
	f.mu.Unlock()
	var out []string
	for _, c := range srv.Calls() {
		if !strings.EqualFold(c.Form.Get("mac"), mac) || strings.HasPrefix(c.Script, "service/ipxe/") {
			continue
		}
		if s := strings.TrimPrefix(c.Script, "service/"); s != "progress.php" {
			out = append(out, s)
		}
	}
	return out
}

// TestFOG runs the FOG-mode scenarios on one FOG lab: two machines
// multicast the resizable image onto larger disks (FOG 1.5); then, side
// by side, a unicast deploy queued twice (1.5), the mps image by
// multicast with FOG 1.6's stream headers including the stream of a
// partition the client does not write, and the mpa image onto two disks
// (1.6, split pieces); last, an export without .mntcheck.
func TestFOG(t *testing.T) {
	f := newFogLab(t, 57, fogserver.Config{MaxLatency: 2 * time.Second})

	t.Run("multicast n onto larger disks", func(t *testing.T) {
		took := f.multicastResizable(t, 9000, 2)
		t.Logf("FOG-mode multicast: 2 machines from first boot to both done in %s", took.Round(time.Second))
	})

	t.Run("group", func(t *testing.T) {
		t.Run("unicast queued twice", func(t *testing.T) {
			t.Parallel()
			mac := "52:54:00:57:00:20"
			task := &fogserver.Task{Type: fogserver.Deploy, Queue: []string{fogserver.QueueFull, fogserver.QueueFull}, Shutdown: true,
				Image: fogserver.Image{Name: fogimages.MultiPart, Type: "mps", Format: 0, OSID: 50}}
			v, disks := f.boot(t, f.server, "fogqueued", mac, task, 64)
			for range 2 {
				v.Expect(`No open slots, There are 0 before me\. \(in line for \d+s\)`, 3*time.Minute)
			}
			v.Expect(`FOG has the task completed`, 4*time.Minute)
			if err := v.Wait(time.Minute); err != nil {
				t.Fatalf("did not power off: %v", err)
			}
			if got := strings.Join(f.calls(mac), " "); got != "Pre_Stage1.php Pre_Stage1.php Pre_Stage1.php Post_Stage3.php" {
				t.Errorf("calls %q", got)
			}
			ref := filepath.Join(f.ref, "fog-mps.raw")
			samePartitions(t, disks[0], ref, 1, 2)
		})
		t.Run("mps with 1.6 headers and a dropped stream", func(t *testing.T) {
			t.Parallel()
			const port = 9002
			f.server16.AddSession(fogserver.Session{Name: "mps", Port: port, MaxWait: 2})
			f.sender(t, fogserver.Form16, fogimages.MultiPart, "mps", 0, 1, port)
			mac := "52:54:00:57:00:21"
			task := &fogserver.Task{Type: fogserver.Multicast, Session: "mps", Shutdown: true,
				Image: fogserver.Image{Name: fogimages.MultiPart, Type: "mps", Format: 0, OSID: 50}}
			v, disks := f.boot(t, f.server16, "fogmps", mac, task, 64)
			v.Expect(`FOG 1\.6 multicast streams`, 3*time.Minute)
			v.Expect(`stream 3 \(d1p3\.img\): receiving and discarding it`, 3*time.Minute)
			v.Expect(`FOG has the task completed`, 2*time.Minute)
			if err := v.Wait(time.Minute); err != nil {
				t.Fatalf("did not power off: %v", err)
			}
			samePartitions(t, disks[0], filepath.Join(f.ref, "fog-mps.raw"), 1, 2)
			checkProgress(t, f.server16, mac)
		})
		t.Run("mpa onto two disks", func(t *testing.T) {
			t.Parallel()
			const port = 9004
			f.server16.AddSession(fogserver.Session{Name: "mpa", Port: port, MaxWait: 2})
			f.sender(t, fogserver.Form16, fogimages.MultiAll, "mpa", 6, 1, port)
			mac := "52:54:00:57:00:22"
			task := &fogserver.Task{Type: fogserver.Multicast, Session: "mpa", Shutdown: true,
				Image: fogserver.Image{Name: fogimages.MultiAll, Type: "mpa", Format: 6, OSID: 50}}
			// The disks in the other order than the image's: each image
			// disk goes to the disk of its dN.size.
			v, disks := f.boot(t, f.server16, "fogmpa", mac, task, 24, 40)
			v.Expect(`FOG has the task completed`, 5*time.Minute)
			if err := v.Wait(time.Minute); err != nil {
				t.Fatalf("did not power off: %v", err)
			}
			samePartitions(t, disks[1], filepath.Join(f.ref, "fog-mpa-d1.raw"), 1)
			samePartitions(t, disks[0], filepath.Join(f.ref, "fog-mpa-d2.raw"), 1)
		})
	})

	t.Run("export without .mntcheck", func(t *testing.T) {
		if err := os.Remove(filepath.Join(f.store, ".mntcheck")); err != nil {
			t.Fatal(err)
		}
		mac := "52:54:00:57:00:10"
		task := &fogserver.Task{Type: fogserver.Deploy, Image: fogserver.Image{Name: fogimages.MultiPart, Type: "mps", Format: 0, OSID: 50}, Shutdown: true}
		v, disks := f.boot(t, f.server, "fognomark", mac, task, 64)
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

// multicastResizable multicasts fog-n from FOG 1.5 to n machines with
// 160 MiB disks (the image comes from a 64 MiB one) and checks each: the
// table filled, the filesystems grown, fsck-clean, the files intact,
// progress posts that parse and only grow, one Post_Stage3. It returns
// the time from the first machine's power-on to the last one's end.
func (f *fogLab) multicastResizable(t *testing.T, port, n int) time.Duration {
	t.Helper()
	f.server.AddSession(fogserver.Session{Name: "lab", Port: port, MaxWait: 2})
	f.sender(t, fogserver.Form15, fogimages.Resizable, "n", 5, n, port)
	start := time.Now()
	type machine struct {
		v    *vm.VM
		disk string
		mac  string
	}
	var ms []machine
	for i := range n {
		mac := fmt.Sprintf("52:54:00:57:00:%02x", i+1)
		task := &fogserver.Task{Type: fogserver.Multicast, Session: "lab",
			Image: fogserver.Image{Name: fogimages.Resizable, Type: "n", Format: 5, OSID: 50}, Shutdown: true}
		v, disks := f.boot(t, f.server, fmt.Sprintf("fogpc%d", i+1), mac, task, 160)
		ms = append(ms, machine{v, disks[0], mac})
	}
	for _, m := range ms {
		m.v.Expect(`FOG server 1\.5\.10`, 3*time.Minute)
		m.v.Expect(`FOG has the task completed`, 4*time.Minute)
		if err := m.v.Wait(time.Minute); err != nil {
			t.Fatalf("%s did not power off (shutdown=1): %v", m.v.Name, err)
		}
	}
	took := time.Since(start)
	if got := len(f.server.Calls("service/inventory.php")); got < n {
		t.Errorf("%d inventory.php calls, want one per machine", got)
	}
	for _, m := range ms {
		got := strings.Join(f.calls(m.mac), " ")
		if !strings.HasPrefix(got, "mc_checkin.php") || !strings.HasSuffix(got, "Post_Stage3.php") || strings.Count(got, "Post_Stage3.php") != 1 {
			t.Errorf("%s: calls %q", m.v.Name, got)
		}
		checkProgress(t, f.server, m.mac)
		checkResized(t, m.disk, filepath.Join(f.ref, "fog-n.raw"))
	}
	return took
}

// samePartitions compares partitions of a disk with the same partitions
// of a reference disk, byte for byte.
func samePartitions(t *testing.T, disk, ref string, parts ...int) {
	t.Helper()
	got, want := readTable(t, disk), readTable(t, ref)
	for _, n := range parts {
		p, ok := got.Partition(n)
		q, ok2 := want.Partition(n)
		if !ok || !ok2 || p.Size != q.Size {
			t.Errorf("%s partition %d: %+v, reference %+v", disk, n, p, q)
			continue
		}
		a, b := readRange(t, disk, p.Start*512, p.Size*512), readRange(t, ref, q.Start*512, q.Size*512)
		if !bytes.Equal(a, b) {
			t.Errorf("%s partition %d differs from the reference", disk, n)
		}
	}
}

func readTable(t *testing.T, disk string) *sfdisk.Dump {
	t.Helper()
	out, err := exec.Command("sfdisk", "-d", disk).Output()
	if err != nil {
		t.Fatalf("sfdisk -d %s: %v", disk, err)
	}
	d, err := sfdisk.Parse(strings.NewReader(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func readRange(t *testing.T, file string, off, size uint64) []byte {
	t.Helper()
	fh, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	b := make([]byte, size)
	if _, err := fh.ReadAt(b, int64(off)); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return b
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
	d := readTable(t, disk)
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

// TestFOGTimeVsImgcastServer measures a two-machine multicast of the
// same image (fog-n) in FOG mode (fake FOG 1.5, NFS, FOG's udp-sender
// chain) and through imgcast-server: wall time from the first machine's
// power-on to both done. It only measures (README, "Using imgcast with
// FOG"); set IMGCAST_FOG_MEASURE=1 to run it.
func TestFOGTimeVsImgcastServer(t *testing.T) {
	if os.Getenv("IMGCAST_FOG_MEASURE") != "1" {
		t.Skip("a measurement: set IMGCAST_FOG_MEASURE=1")
	}
	f := newFogLab(t, 58, fogserver.Config{MaxLatency: 2 * time.Second})
	fogTook := f.multicastResizable(t, 9000, 2)

	s := newSession(t, sessionOptions{octet: 59, clients: 2, images: filepath.Join(f.store, fogimages.Resizable)})
	start := time.Now()
	a, b := s.boot("srvpc1"), s.boot("srvpc2")
	s.expectDone(a, "multicast")
	s.expectDone(b, "multicast")
	srvTook := time.Since(start)
	t.Logf("two machines, fog-n by multicast, first power-on to both done: FOG mode %s (with fill and grow), imgcast-server %s (captured layout)",
		fogTook.Round(time.Second), srvTook.Round(time.Second))
}
