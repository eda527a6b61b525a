package qemutests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/defaultimage"
	"github.com/imgcast/imgcast/internal/dnsmasq"
	"github.com/imgcast/imgcast/internal/lab"
	"github.com/imgcast/imgcast/pkg/status"
	"github.com/imgcast/imgcast/qemu-tests/vm"
)

// A session is the lab as a school's IT room has it: imgcast-server (which
// drives udpcast's udp-sender) serving the default image and the boot
// files, dnsmasq giving addresses and, over TFTP, the iPXE script that
// chains to the server's boot.ipxe, and machines that PXE-boot from it.

// artifacts are what `make server default-image` builds (once per test
// binary; make skips what is up to date): the imgcast-server binary, the
// default image folder and the raw disk it was captured from.
var artifacts struct {
	once                sync.Once
	server, images, ref string
	err                 error
}

func buildArtifacts(t *testing.T) (server, images, ref string) {
	t.Helper()
	a := &artifacts
	a.once.Do(func() {
		root, err := vm.RepoRoot()
		if err != nil {
			a.err = err
			return
		}
		mk := exec.Command("make", "--no-print-directory", "server", "default-image")
		mk.Dir = root
		if out, err := mk.CombinedOutput(); err != nil {
			a.err = fmt.Errorf("make server default-image: %v\n%s", err, out)
			return
		}
		a.server = filepath.Join(root, "build", "imgcast-server")
		a.images = filepath.Join(root, "build", "images", "default")
		a.ref = filepath.Join(root, "build", "reference", "default.raw")
	})
	if a.err != nil {
		t.Fatal(a.err)
	}
	return a.server, a.images, a.ref
}

type sessionOptions struct {
	octet   int
	clients int    // --clients
	mode    string // --mode: multicast (default) or unicast
	// appendArgs are more kernel arguments for the clients.
	appendArgs string
	serverArgs []string
	// damage changes the session's copy of the image folder.
	damage func(t *testing.T, dir string)
	// images is the image folder to serve (default: the default image).
	images string
	// initramfs is the clients' initramfs (default: the built one).
	initramfs string
}

type session struct {
	t      *testing.T
	img    vm.Image
	lab    *vm.Lab
	server string // http://IP:8080
	ref    string
	log    *lab.Output
	start  time.Time
	// serverPID is imgcast-server's process (`ip netns exec` execs it in
	// place), the parent of every udp-sender of the session.
	serverPID int
}

func newSession(t *testing.T, o sessionOptions) *session {
	t.Helper()
	lab.Require(t, "qemu-system-x86_64", "dnsmasq", "udp-sender", "curl", "cmp", "e2fsck", "fsck.vfat")
	img := vm.BuildImage(t)
	serverBin, images, ref := buildArtifacts(t)
	if o.images != "" {
		images, ref = o.images, ""
	}

	// The session's own copy of the image, so a test may damage it.
	served := filepath.Join(t.TempDir(), "images")
	dir := filepath.Join(served, "default")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(images)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(images, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if o.damage != nil {
		o.damage(t, dir)
	}

	ip := fmt.Sprintf("10.%d.0.1", o.octet)
	server := "http://" + ip + ":8080"
	// dnsmasq serves over TFTP what a lab's PXE server does: iPXE for PXE
	// firmware that is not iPXE (ipxe.efi for UEFI, undionly.kpxe for
	// BIOS), and for iPXE a script that chains to the server's boot.ipxe,
	// as FOG's default.ipxe does.
	tftp := t.TempDir()
	if err := os.Chmod(tftp, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"imgcast.ipxe": []byte("#!ipxe\nchain " + server + "/boot.ipxe\n")}
	for _, f := range []string{"ipxe.efi", "undionly.kpxe"} {
		b, err := os.ReadFile(filepath.Join("/usr/lib/ipxe", f))
		if err != nil {
			t.Fatalf("%v (scripts/deps.sh installs Debian's ipxe)", err)
		}
		files[f] = b
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(tftp, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l := vm.NewLab(t, o.octet, vm.LabOptions{DHCP: dnsmasq.Options{
		IPXEScript:   "imgcast.ipxe",
		UEFIBootFile: "ipxe.efi",
		BIOSBootFile: "undionly.kpxe",
		Extra:        []string{"--enable-tftp", "--tftp-root=" + tftp},
	}})

	mode := o.mode
	if mode == "" {
		mode = "multicast"
	}
	if o.initramfs != "" {
		img.Initramfs = o.initramfs
	}
	args := []string{
		"--images", served, "--interface", l.Bridge, "--listen", ip + ":8080",
		"--kernel", img.Kernel, "--initrd", img.Initramfs,
		"--mode", mode, "--clients", strconv.Itoa(max(1, o.clients)), "--max-wait", "3m",
		"--after", "poweroff", "--console", "tty0,ttyS0",
		"--append", strings.TrimSpace("imgcast.failwait=1s " + o.appendArgs),
	}
	args = append(args, o.serverArgs...)
	s := &session{t: t, img: img, lab: l, server: server, ref: ref, log: &lab.Output{}, start: time.Now()}
	ctx, cancel := context.WithCancel(context.Background())
	srv := l.Switch.Command(ctx, serverBin, args...)
	srv.Stdout, srv.Stderr = s.log, s.log
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	s.serverPID = srv.Process.Pid
	t.Cleanup(func() {
		cancel()
		srv.Wait()
		if t.Failed() {
			t.Logf("imgcast-server log:\n%s", s.log.String())
		}
	})
	s.waitFor("the server to serve", 20*time.Second, func() bool {
		return l.Switch.Run("curl", "-sf", "-o", "/dev/null", server+"/api/session") == nil
	})
	return s
}

// client is one machine of the session.
type client struct {
	*vm.VM
	disk string // the file of the disk to be imaged
	// target is the kernel's name of that disk (default vda).
	target string
	// mac is the address of the NIC the client reports from (default
	// its first).
	mac   string
	start time.Time
}

// boot powers on a machine with an empty disk of the reference's size; it
// network-boots through dnsmasq and imgcast-server.
func (s *session) boot(name string) *client {
	s.t.Helper()
	return s.bootWith(vm.Config{Name: name})
}

// bootWith powers on a machine configured by cfg: with no disk given, an
// empty virtio disk of the reference's size, the one to image. Without an
// Image it network-boots.
func (s *session) bootWith(cfg vm.Config) *client {
	s.t.Helper()
	disk := ""
	if len(cfg.Disks) == 0 && len(cfg.Drives) == 0 {
		disk = vm.NewDisk(s.t, defaultimage.DiskSize>>20)
		cfg.Disks = []string{disk}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Minute
	}
	start := time.Now()
	v := vm.Start(s.t, s.lab, cfg)
	return &client{VM: v, disk: disk, target: "vda", mac: v.MACs[0], start: start}
}

// bootDirect powers on a machine that boots the session's kernel and
// initramfs directly (no PXE: for machines whose first NIC cannot PXE-boot)
// with the kernel command line the server's boot.ipxe gives, less
// imgcast.mac (iPXE fills it in), plus extra.
func (s *session) bootDirect(cfg vm.Config, extra string) *client {
	s.t.Helper()
	out, err := s.lab.Switch.Command(context.Background(), "curl", "-sf", s.server+"/boot.ipxe").Output()
	if err != nil {
		s.t.Fatalf("GET /boot.ipxe: %v", err)
	}
	var args []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "kernel" {
			continue
		}
		for _, a := range f[2:] {
			switch {
			case strings.Contains(a, "${"), strings.HasPrefix(a, "initrd="), strings.HasPrefix(a, "console="), strings.HasPrefix(a, "panic="):
			default:
				args = append(args, a)
			}
		}
	}
	if len(args) == 0 {
		s.t.Fatalf("no kernel line in boot.ipxe:\n%s", out)
	}
	cfg.Image = &s.img
	cfg.Cmdline = strings.TrimSpace(strings.Join(args, " ") + " " + extra)
	return s.bootWith(cfg)
}

// statusOf returns what the server knows about a machine.
func (s *session) statusOf(mac string) (status.Client, bool) {
	s.t.Helper()
	out, err := s.lab.Switch.Command(context.Background(), "curl", "-sf", s.server+"/api/status").Output()
	if err != nil {
		s.t.Fatalf("GET /api/status: %v", err)
	}
	var list []status.Client
	if err := json.Unmarshal(out, &list); err != nil {
		s.t.Fatalf("/api/status: %v\n%s", err, out)
	}
	for _, c := range list {
		if strings.EqualFold(c.MAC, mac) {
			return c, true
		}
	}
	return status.Client{}, false
}

func (s *session) session() status.Session {
	s.t.Helper()
	out, err := s.lab.Switch.Command(context.Background(), "curl", "-sf", s.server+"/api/session").Output()
	if err != nil {
		s.t.Fatalf("GET /api/session: %v", err)
	}
	var ses status.Session
	if err := json.Unmarshal(out, &ses); err != nil {
		s.t.Fatalf("/api/session: %v\n%s", err, out)
	}
	return ses
}

// killSenders kills the session's udp-sender processes by PID: the
// children of this session's imgcast-server. (A network namespace does not
// isolate PIDs: killing by name would kill every udp-sender on the host.)
func (s *session) killSenders() {
	s.t.Helper()
	pids, err := childrenNamed(s.serverPID, "udp-sender")
	if err != nil {
		s.t.Fatal(err)
	}
	if len(pids) == 0 {
		s.t.Fatalf("imgcast-server (pid %d) has no udp-sender to kill", s.serverPID)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			s.t.Fatalf("kill udp-sender %d: %v", pid, err)
		}
		s.t.Logf("killed udp-sender, pid %d", pid)
	}
}

// childrenNamed lists the processes whose parent is ppid and whose command
// name (/proc/PID/comm) is comm.
func childrenNamed(ppid int, comm string) ([]int, error) {
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the process has gone
		}
		// pid (comm) state ppid ...; comm may contain spaces and parentheses.
		open, close := strings.IndexByte(string(b), '('), strings.LastIndexByte(string(b), ')')
		if open < 0 || close < open {
			continue
		}
		fields := strings.Fields(string(b[close+1:]))
		if len(fields) < 2 || string(b[open+1:close]) != comm || fields[1] != strconv.Itoa(ppid) {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b[:open])))
		if err == nil {
			out = append(out, pid)
		}
	}
	return out, nil
}

// waitFor polls cond until it holds.
func (s *session) waitFor(what string, timeout time.Duration, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// partitionRE matches the agent's line for each restored partition.
var partitionRE = `partition (\d) \((d1p\d\.img), (multicast|unicast)\): (\d+) bytes received in (\S+), wire ([0-9.]+) MB/s, disk ([0-9.]+) MB/s`

// partitionRate is one partition's figures from the client's console.
type partitionRate struct {
	part, file, mode string
	bytes            int64
	took             string
	wire, disk       float64
}

// expectDone waits for the client to image itself and power off, and
// returns its figures.
func (s *session) expectDone(c *client, mode string) (rates []partitionRate, took time.Duration) {
	s.t.Helper()
	// The kernel re-read the table the client wrote (BLKRRPART).
	c.Expect(`The kernel sees the new partitions: `+partName(c.target, 1)+" "+partName(c.target, 2), 4*time.Minute)
	for range 2 {
		m := c.Expect(partitionRE, time.Minute)
		n, _ := strconv.ParseInt(m[4], 10, 64)
		w, _ := strconv.ParseFloat(m[6], 64)
		d, _ := strconv.ParseFloat(m[7], 64)
		rates = append(rates, partitionRate{part: m[1], file: m[2], mode: m[3], bytes: n, took: m[5], wire: w, disk: d})
		if m[3] != mode {
			s.t.Errorf("%s: partition %s arrived by %s, want %s", c.Name, m[1], m[3], mode)
		}
	}
	c.Expect(`image written to /dev/`+c.target+` in \S+ \(`+mode+`\)`, time.Minute)
	took = time.Since(c.start)
	if m := regexp.MustCompile(`network ready: .* in ([0-9.]+) s since init started`).FindStringSubmatch(c.Console.Output()); m != nil {
		s.t.Logf("%s: network ready %s s after init started (guest clock)", c.Name, m[1])
	}
	if err := c.Wait(time.Minute); err != nil {
		s.t.Fatalf("%s did not power off: %v", c.Name, err)
	}
	if st, ok := s.statusOf(c.mac); !ok || st.State != status.Done {
		s.t.Errorf("%s: the server has %+v, want state done", c.Name, st)
	}
	return rates, took
}

// partName is the kernel's name of a disk's n-th partition.
func partName(disk string, n int) string {
	if last := disk[len(disk)-1]; last >= '0' && last <= '9' {
		return fmt.Sprintf("%sp%d", disk, n) // nvme0n1p1, mmcblk0p1
	}
	return fmt.Sprintf("%s%d", disk, n)
}

// expectFailed waits for the client to fail with a message matching re,
// report it, and power off; it must never have reported done.
func (s *session) expectFailed(c *client, re string) status.Client {
	s.t.Helper()
	c.Expect(`\*\*\* imgcast FAILED \*\*\*`, 4*time.Minute)
	c.Expect(re, 10*time.Second)
	if err := c.Wait(time.Minute); err != nil {
		s.t.Fatalf("%s did not power off after the failure: %v", c.Name, err)
	}
	if strings.Contains(c.Console.Output(), "Imaging done") {
		s.t.Errorf("%s printed done although it failed", c.Name)
	}
	st, ok := s.statusOf(c.mac)
	if !ok || st.State != status.Failed || !regexp.MustCompile(re).MatchString(st.Error) {
		s.t.Errorf("%s: the server has state %q error %q, want failed matching %q", c.Name, st.State, st.Error, re)
	}
	return st
}

// checkDisk compares the client's disk with the reference byte for byte
// and runs fsck on both filesystems.
func (s *session) checkDisk(c *client) {
	s.t.Helper()
	if out, err := exec.Command("cmp", c.disk, s.ref).CombinedOutput(); err != nil {
		s.t.Errorf("%s: disk differs from the reference: %v %s", c.Name, err, out)
	}
	dir := s.t.TempDir()
	fsck := map[string][]string{"ext4": {"e2fsck", "-fn"}, "vfat": {"fsck.vfat", "-n"}}
	for _, p := range defaultimage.Partitions {
		part := filepath.Join(dir, p.FS)
		if err := p.Extract(c.disk, part); err != nil {
			s.t.Fatal(err)
		}
		cmd := fsck[p.FS]
		if out, err := exec.Command(cmd[0], append(cmd[1:], part)...).CombinedOutput(); err != nil {
			s.t.Errorf("%s: %s of partition %d: %v\n%s", c.Name, cmd[0], p.Number, err, out)
		}
	}
}
