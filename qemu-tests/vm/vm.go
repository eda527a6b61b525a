// Package vm boots imgcast clients in QEMU for tests: the boot image built
// once per test binary, a lab network (internal/lab) with dnsmasq and
// optionally PXE (QEMU's iPXE ROM, dnsmasq, an HTTP boot script), VMs on
// taps of the lab bridge with virtio disk files, and a serial console to
// wait on with regular expressions and to type into.
//
// QEMU runs with software emulation (TCG) unless IMGCAST_KVM=1, one CPU and
// 256 MiB per VM: the client must work on small machines. Each VM's console
// is logged to build/vm-logs/<test>/<vm>.log (or $IMGCAST_VM_LOGS); the logs
// of a failed test are kept and their tail printed, those of a passing test
// removed (IMGCAST_KEEP_LOGS=1 keeps them).
package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/lab"
)

// Image is a kernel and initramfs to boot.
type Image struct {
	Kernel, Initramfs string
	// Summary is what `make initramfs` said about the sizes.
	Summary string
}

var (
	buildOnce sync.Once
	built     Image
	buildErr  error
)

// BuildImage runs `make initramfs` in the repository (once per test binary:
// make itself skips the work when nothing changed) and returns the boot
// image. IMGCAST_INITRAMFS=path boots that initramfs instead (e.g. one with
// extra debugging tools appended).
func BuildImage(t testing.TB) Image {
	t.Helper()
	if os.Getenv(lab.QuickEnv) != "" {
		t.Skipf("%s is set: skipping a test that boots VMs", lab.QuickEnv)
	}
	buildOnce.Do(func() {
		if p := os.Getenv("IMGCAST_INITRAMFS"); p != "" {
			root, err := RepoRoot()
			if err != nil {
				buildErr = err
				return
			}
			built = Image{Kernel: filepath.Join(root, "build", "vmlinuz"), Initramfs: p, Summary: "IMGCAST_INITRAMFS=" + p}
			if _, err := os.Stat(built.Kernel); err != nil {
				buildErr = fmt.Errorf("IMGCAST_INITRAMFS is set, but there is no kernel: %w (run make initramfs)", err)
			}
			return
		}
		root, err := RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		start := time.Now()
		out, err := exec.Command("make", "-C", root, "--no-print-directory", "initramfs").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("make initramfs: %v\n%s", err, out)
			return
		}
		var sizes []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "initramfs: ") {
				sizes = append(sizes, l)
			}
		}
		built = Image{
			Kernel:    filepath.Join(root, "build", "vmlinuz"),
			Initramfs: filepath.Join(root, "build", "initramfs.img"),
			Summary:   fmt.Sprintf("%s (make took %s)", strings.Join(sizes, "\n"), time.Since(start).Round(time.Second)),
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	t.Log(built.Summary)
	return built
}

// RepoRoot finds the module root (the directory with go.mod) above the
// working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// NIC is a network card of a VM, on a new tap of the lab bridge.
type NIC struct {
	// Model is QEMU's device name (default virtio-net-pci; e1000e,
	// rtl8139, ne2k_pci, ...).
	Model string
	// MAC is the card's address (default: derived from the VM's index).
	MAC string
	// NoCarrier starts the card with its link down, as with no cable.
	NoCarrier bool
	// Isolated puts the card on a network of its own with nothing on it
	// (it has carrier, but nobody answers DHCP), instead of the lab.
	Isolated bool
	// ROM is the card's option ROM: "" is QEMU's (iPXE, BIOS and EFI);
	// "none" gives it none, so UEFI firmware drives the card and PXE-boots
	// with its own network stack, as a real machine's firmware does.
	ROM string
}

// Drive is a disk of a VM on a given bus.
type Drive struct {
	// Path is the raw image file.
	Path string
	// Bus is virtio (default), nvme, ahci (SATA) or usb (a USB stick).
	Bus string
	// SectorSize is the logical and physical block size (default 512;
	// 4096 for a 4Kn disk).
	SectorSize int
}

// Config describes one VM.
type Config struct {
	// Name names the VM in logs.
	Name string
	// Image boots the kernel and initramfs directly. When nil the VM
	// boots from the network (the lab must serve PXE).
	Image *Image
	// Cmdline is added to "console=ttyS0 panic=-1" for a direct boot.
	Cmdline string
	// MemoryMiB defaults to 256.
	MemoryMiB int
	// NICs default to one virtio-net NIC.
	NICs []NIC
	// Disks are raw image files attached as virtio disks (vda, vdb, ...).
	Disks []string
	// Drives are more disks, on any bus, after Disks.
	Drives []Drive
	// UEFI boots the VM with OVMF (UEFI firmware) instead of SeaBIOS.
	UEFI bool
	// VGA gives the VM a standard VGA card (its screen readable with
	// ScreenText and Screendump) and the kernel a console on it (tty0)
	// besides the serial port. QEMU then stays up, stopped, when the guest
	// powers off, so the last screen can still be read; Wait returns then.
	VGA bool
	// CPU is QEMU's -cpu model ("" is QEMU's default, which has no RDRAND:
	// the client must seed the kernel RNG itself).
	CPU string
	// Timeout bounds the VM's whole life (default 3 minutes).
	Timeout time.Duration
	// Extra are more QEMU arguments.
	Extra []string
}

// VM is a running QEMU.
type VM struct {
	Name    string
	Console *Console
	// MACs are the NICs' addresses, in order.
	MACs []string

	t          testing.TB
	qmp        *qmp
	keepScreen bool
	cmd        *exec.Cmd
	cancel     context.CancelFunc
	exited     chan struct{}
	waitErr    error
}

var vmSeq struct {
	sync.Mutex
	n int
}

// Start boots a VM on the lab network (nil: QEMU's user network, no root
// needed, no multicast) and stops it when the test ends.
func Start(t testing.TB, l *Lab, cfg Config) *VM {
	t.Helper()
	vmSeq.Lock()
	vmSeq.n++
	idx := vmSeq.n
	vmSeq.Unlock()
	if cfg.Name == "" {
		cfg.Name = fmt.Sprintf("vm%d", idx)
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 256
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 3 * time.Minute
	}
	if len(cfg.NICs) == 0 {
		cfg.NICs = []NIC{{}}
	}
	qmpDir, err := os.MkdirTemp("", "imgcast-qmp-") // short: a socket path has at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(qmpDir) })
	qmpSock := filepath.Join(qmpDir, "qmp.sock")
	vga := "none"
	if cfg.VGA {
		vga = "std"
	}
	args := []string{
		"-nodefaults", "-machine", "q35", "-m", fmt.Sprint(cfg.MemoryMiB), "-smp", "1",
		"-display", "none", "-vga", vga, "-serial", "stdio", "-monitor", "none", "-no-reboot",
		"-qmp", "unix:" + qmpSock + ",server=on,wait=off",
	}
	if cfg.VGA {
		args = append(args, "-no-shutdown")
	}
	if cfg.UEFI {
		args = append(args, uefiArgs(t)...)
	}
	if os.Getenv("IMGCAST_KVM") == "1" {
		args = append(args, "-accel", "kvm", "-cpu", "host")
	} else {
		args = append(args, "-accel", "tcg")
		if cfg.CPU != "" {
			args = append(args, "-cpu", cfg.CPU)
		}
	}
	v := &VM{Name: cfg.Name, t: t, exited: make(chan struct{}), keepScreen: cfg.VGA}
	var linksDown []int
	for i, nic := range cfg.NICs {
		if nic.Model == "" {
			nic.Model = "virtio-net-pci"
		}
		if nic.MAC == "" {
			nic.MAC = fmt.Sprintf("52:54:00:%02x:%02x:%02x", idx>>8&0xff, idx&0xff, i)
		}
		v.MACs = append(v.MACs, nic.MAC)
		netdev := fmt.Sprintf("user,id=n%d", i)
		switch {
		case nic.Isolated:
			// A hub port with no other port: frames go nowhere.
			netdev = fmt.Sprintf("hubport,id=n%d,hubid=%d", i, 100+i)
		case l != nil:
			tap, err := l.AddTap()
			if err != nil {
				t.Fatalf("%s: %v", cfg.Name, err)
			}
			netdev = fmt.Sprintf("tap,id=n%d,ifname=%s,script=no,downscript=no", i, tap)
		}
		dev := fmt.Sprintf("%s,id=nic%d,netdev=n%d,mac=%s", nic.Model, i, i, nic.MAC)
		if i == 0 && cfg.Image == nil {
			dev += ",bootindex=1" // UEFI firmware boots by bootindex, not -boot
		}
		switch nic.ROM {
		case "":
		case "none":
			dev += ",romfile="
		default:
			dev += ",romfile=" + nic.ROM
		}
		args = append(args, "-netdev", netdev, "-device", dev)
		if nic.NoCarrier {
			linksDown = append(linksDown, i)
		}
	}
	for i, d := range cfg.Disks {
		args = append(args, "-drive", fmt.Sprintf("file=%s,if=none,id=d%d,format=raw,cache=unsafe", d, i),
			"-device", fmt.Sprintf("virtio-blk-pci,drive=d%d", i))
	}
	args = append(args, driveArgs(cfg.Drives, len(cfg.Disks))...)
	consoles := "console=ttyS0"
	if cfg.VGA {
		consoles = "console=tty0 console=ttyS0" // the last one is /dev/console
	}
	if cfg.Image != nil {
		args = append(args, "-kernel", cfg.Image.Kernel, "-initrd", cfg.Image.Initramfs,
			"-append", strings.TrimSpace(consoles+" panic=-1 "+cfg.Cmdline))
	} else {
		if l == nil || !l.servesPXE {
			t.Fatalf("%s: no Image to boot and no PXE on the lab", cfg.Name)
		}
		args = append(args, "-boot", "n")
	}
	if len(linksDown) > 0 {
		args = append(args, "-S") // paused until the links are down
	}
	args = append(args, cfg.Extra...)

	logFile := logPath(t, cfg.Name)
	console, err := newConsole(logFile)
	if err != nil {
		t.Fatal(err)
	}
	v.Console = console
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	v.cancel = cancel
	if l != nil {
		v.cmd = l.Switch.Command(ctx, "qemu-system-x86_64", args...)
	} else {
		v.cmd = exec.CommandContext(ctx, "qemu-system-x86_64", args...)
		v.cmd.WaitDelay = 5 * time.Second
	}
	v.cmd.Stdout, v.cmd.Stderr = console, console
	stdin, err := v.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	console.stdin = stdin
	t.Logf("%s: qemu-system-x86_64 %s", cfg.Name, strings.Join(args, " "))
	console.note(fmt.Sprintf("qemu-system-x86_64 %s", strings.Join(args, " ")))
	if err := v.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("%s: start qemu: %v", cfg.Name, err)
	}
	go func() {
		v.waitErr = v.cmd.Wait()
		console.close(v.waitErr)
		close(v.exited)
	}()
	t.Cleanup(func() {
		v.Kill()
		if v.qmp != nil {
			v.qmp.close()
		}
		console.finish(t, cfg.Name)
	})
	if v.qmp, err = dialQMP(qmpSock, 10*time.Second); err != nil {
		t.Fatalf("%s: %v", cfg.Name, err)
	}
	if len(linksDown) > 0 {
		for _, i := range linksDown {
			if err := v.SetLink(i, false); err != nil {
				t.Fatalf("%s: %v", cfg.Name, err)
			}
		}
		if _, err := v.qmp.do("cont", nil); err != nil {
			t.Fatalf("%s: %v", cfg.Name, err)
		}
	}
	return v
}

// driveArgs attaches drives; first is the index of the first one (after
// the virtio Disks).
func driveArgs(drives []Drive, first int) []string {
	var args []string
	sata, usb := 0, false
	for j, d := range drives {
		i := first + j
		args = append(args, "-drive", fmt.Sprintf("file=%s,if=none,id=d%d,format=raw,cache=unsafe", d.Path, i))
		blocks := ""
		if d.SectorSize != 0 {
			blocks = fmt.Sprintf(",logical_block_size=%d,physical_block_size=%d", d.SectorSize, d.SectorSize)
		}
		switch d.Bus {
		case "", "virtio":
			args = append(args, "-device", fmt.Sprintf("virtio-blk-pci,drive=d%d,serial=IMGCAST%04d%s", i, i, blocks))
		case "nvme":
			args = append(args, "-device", fmt.Sprintf("nvme,drive=d%d,serial=IMGCAST%04d%s", i, i, blocks))
		case "ahci":
			// q35's own AHCI controller (ICH9) has ports ide.0 to ide.5.
			args = append(args, "-device", fmt.Sprintf("ide-hd,drive=d%d,bus=ide.%d,serial=IMGCAST%04d%s", i, sata, i, blocks))
			sata++
		case "usb":
			if !usb {
				args = append(args, "-device", "qemu-xhci,id=xhci")
				usb = true
			}
			args = append(args, "-device", fmt.Sprintf("usb-storage,bus=xhci.0,drive=d%d,serial=IMGCAST%04d%s", i, i, blocks))
		default:
			panic("vm: unknown drive bus " + d.Bus)
		}
	}
	return args
}

// OVMF, Debian's UEFI firmware for QEMU (package ovmf).
const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// uefiArgs gives the VM OVMF's code (read-only) and its own copy of the
// variable store.
func uefiArgs(t testing.TB) []string {
	t.Helper()
	vars, err := os.ReadFile(ovmfVars)
	if err != nil {
		t.Fatalf("UEFI firmware: %v (scripts/deps.sh installs Debian's ovmf)", err)
	}
	varsCopy := filepath.Join(t.TempDir(), "OVMF_VARS.fd")
	if err := os.WriteFile(varsCopy, vars, 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + ovmfCode,
		"-drive", "if=pflash,format=raw,unit=1,file=" + varsCopy,
	}
}

// Expect waits until the console shows a match of the regular expression
// after what earlier Expects consumed, and returns the match and its
// groups. It fails the test if the time runs out or the VM exits first.
func (v *VM) Expect(re string, timeout time.Duration) []string {
	v.t.Helper()
	m, err := v.Console.Expect(regexp.MustCompile(re), timeout)
	if err != nil {
		v.t.Fatalf("%s: %v", v.Name, err)
	}
	return m
}

// Type sends a line to the serial console, with the carriage return a
// terminal sends for Enter.
func (v *VM) Type(line string) {
	v.t.Helper()
	if err := v.Console.Type(line + "\r"); err != nil {
		v.t.Fatalf("%s: type %q: %v", v.Name, line, err)
	}
}

// Wait waits for QEMU to exit (the guest powered off or rebooted: QEMU
// runs with -no-reboot) and returns its error, or an error on timeout.
func (v *VM) Wait(timeout time.Duration) error {
	deadline := time.After(timeout)
	var poll <-chan time.Time
	if v.keepScreen {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		poll = tick.C
	}
	for {
		select {
		case <-v.exited:
			return v.waitErr
		case <-poll:
			// -no-shutdown: QEMU stops at the guest's power-off or reset.
			if st, err := v.status(); err == nil && (st == "shutdown" || st == "guest-panicked") {
				return nil
			}
		case <-deadline:
			return fmt.Errorf("%s still running after %s", v.Name, timeout)
		}
	}
}

// status is QEMU's run state (running, paused, shutdown, ...).
func (v *VM) status() (string, error) {
	raw, err := v.qmp.do("query-status", nil)
	if err != nil {
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	err = json.Unmarshal(raw, &st)
	return st.Status, err
}

// Kill stops QEMU at once and waits for it.
func (v *VM) Kill() {
	v.cancel()
	<-v.exited
}

func logPath(t testing.TB, name string) string {
	dir := os.Getenv("IMGCAST_VM_LOGS")
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			root = os.TempDir()
		}
		dir = filepath.Join(root, "build", "vm-logs")
	}
	dir = filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name+".log")
}

// NewDisk creates a sparse raw disk image of sizeMiB in the test's
// temporary directory.
func NewDisk(t testing.TB, sizeMiB int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), fmt.Sprintf("disk%d.img", sizeMiB))
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(sizeMiB) << 20); err != nil {
		t.Fatal(err)
	}
	return p
}
