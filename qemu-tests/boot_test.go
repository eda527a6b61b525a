package qemutests

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/lab"
	"github.com/imgcast/imgcast/qemu-tests/vm"
)

// bootTimes records the guest-clock time from init start to "network
// ready" of every VM that got there, for the log.
func logReady(t *testing.T, m []string) {
	t.Helper()
	took, err := strconv.ParseFloat(m[len(m)-2], 64)
	if err != nil {
		t.Fatalf("ready line %q: %v", m[0], err)
	}
	t.Logf("boot-to-network-ready: %s s after init started (guest uptime %s s)", m[len(m)-2], m[len(m)-1])
	if took > 30 {
		t.Errorf("network ready only %.2f s after init started", took)
	}
}

const readyRE = `network ready: eth0 (10\.\d+\.0\.\d+)/24 .* in ([0-9.]+) s since init started \(uptime ([0-9.]+) s\)`

// Scenario 1: PXE (QEMU's iPXE ROM, dnsmasq, HTTP) boots the client in
// debug mode; it gets a lease from dnsmasq and shows the banner; leaving
// the shell powers it off.
func TestDebugModeOverPXE(t *testing.T) {
	lab.Require(t, "qemu-system-x86_64", "dnsmasq")
	img := vm.BuildImage(t)
	l := vm.NewLab(t, 71, vm.LabOptions{
		PXE: &img,
		PXECmdline: func(mac string) string {
			return "imgcast.mode=debug imgcast.after=poweroff imgcast.server=10.71.0.1 imgcast.mac=" + mac
		},
	})
	start := time.Now()
	v := vm.Start(t, l, vm.Config{Name: "client", Disks: []string{vm.NewDisk(t, 64)}})
	// iPXE prints to the (absent) screen; the kernel's command line shows
	// it ran the per-MAC script from the lab's HTTP server.
	v.Expect(`Command line: console=ttyS0 panic=-1 imgcast.mode=debug .*imgcast.mac=`+v.MACs[0], 2*time.Minute)
	m := v.Expect(readyRE, 2*time.Minute)
	logReady(t, m)
	ip := m[1]
	v.Expect(`imgcast debug shell`, 30*time.Second)
	v.Expect(`Network:  eth0 `+strings.ReplaceAll(ip, ".", `\.`)+`/24 gw 10\.71\.0\.1 from DHCP server 10\.71\.0\.1`, 10*time.Second)
	v.Expect(`eth0 \(`+v.MACs[0]+`, driver virtio_net`, 10*time.Second)
	v.Expect(`/dev/vda 64 MiB`, 10*time.Second)
	v.Expect(`udp-receiver --nokbd --portbase 9000 --file /dev/vda`, 10*time.Second)
	v.Expect(`Type 'exit' to leave it; then the machine will power off`, 10*time.Second)

	leases := strings.Join(l.DHCP.Leases(), "\n")
	if !strings.Contains(leases, v.MACs[0]+" "+ip+" ") {
		t.Errorf("dnsmasq's leases do not give %s to %s:\n%s", ip, v.MACs[0], leases)
	}
	if !strings.Contains(l.DHCP.Log(), "vendor class: imgcast") {
		t.Error("dnsmasq never saw the imgcast vendor class")
	}

	// How much of the 256 MiB the booted client leaves free.
	v.Expect(`\$ `, 10*time.Second)
	v.Type("cat /proc/meminfo")
	mem := v.Expect(`MemTotal:\s+(\d+) kB[\s\S]*MemAvailable:\s+(\d+) kB`, 10*time.Second)
	t.Logf("guest memory: MemTotal %s kB, MemAvailable %s kB at the debug shell", mem[1], mem[2])
	v.Expect(`\$ `, 10*time.Second)
	v.Type("exit")
	if err := v.Wait(time.Minute); err != nil {
		t.Fatalf("after exit from the shell: %v", err)
	}
	t.Logf("PXE to power-off: %s wall", time.Since(start).Round(time.Second))
}

// Scenario 2: the manual test FOG admins run. On the debug shell, typed
// line by line on the serial console, udp-receiver writes what a real
// udp-sender on the bridge sends straight to the disk; after sync and
// poweroff the disk holds exactly that file.
func TestDebugShellReceivesFromUDPSender(t *testing.T) {
	lab.Require(t, "qemu-system-x86_64", "dnsmasq", "udp-sender")
	img := vm.BuildImage(t)
	l := vm.NewLab(t, 72, vm.LabOptions{})

	data := make([]byte, 8<<20+12345) // not a multiple of any block size
	rand.Read(data)
	file := filepath.Join(t.TempDir(), "image.bin")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	disk := vm.NewDisk(t, 64)
	// An Intel NIC here (virtio in the other scenarios): its driver comes
	// from the staged module tree like any real machine's.
	v := vm.Start(t, l, vm.Config{Name: "client", Image: &img, Disks: []string{disk}, NICs: []vm.NIC{{Model: "e1000e"}},
		Cmdline: "imgcast.mode=debug imgcast.server=10.72.0.1"})
	logReady(t, v.Expect(readyRE, 2*time.Minute))
	v.Expect(`Type 'exit'`, 30*time.Second)
	v.Expect(`\$ `, 10*time.Second)

	// The sender waits for its receiver; start it first.
	sender := l.Switch.Command(t.Context(), "udp-sender", "--file", file, "--portbase", "9000",
		"--min-receivers", "1", "--nokbd", "--interface", l.Bridge)
	var senderOut bytes.Buffer
	sender.Stdout, sender.Stderr = &senderOut, &senderOut
	if err := sender.Start(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	v.Type("udp-receiver --nokbd --portbase 9000 --file /dev/vda")
	v.Expect(`UDP receiver for /dev/vda at `, 30*time.Second)
	senderDone := make(chan error, 1)
	go func() { senderDone <- sender.Wait() }()
	select {
	case err := <-senderDone:
		if err != nil {
			t.Fatalf("udp-sender: %v\n%s", err, senderOut.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("udp-sender did not finish within 2 minutes:\n%s", senderOut.String())
	}
	t.Logf("udp-sender sent %d bytes in %s:\n%s", len(data), time.Since(start).Round(time.Millisecond), senderOut.String())
	v.Expect(`Transfer complete`, time.Minute)
	v.Expect(`\$ `, time.Minute) // the receiver has exited
	v.Type("sync")
	v.Expect(`\$ `, 30*time.Second)
	v.Type("poweroff")
	if err := v.Wait(time.Minute); err != nil {
		t.Fatalf("poweroff: %v", err)
	}

	got, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(data)], data) {
		t.Fatalf("the disk's first %d bytes differ from what udp-sender sent", len(data))
	}
	if i := bytes.IndexFunc(got[len(data):], func(r rune) bool { return r != 0 }); i >= 0 {
		t.Errorf("the disk has data after the file, at byte %d", len(data)+i)
	}
}

// Scenario 3: the only NIC has no driver in the image (an NE2000, whose
// ne2k-pci module is not shipped). The client must say so — the device,
// that no module matches it, what was tried — and then power off as
// imgcast.after says, not hang.
func TestNICWithoutDriverIsDiagnosed(t *testing.T) {
	lab.Require(t, "qemu-system-x86_64")
	img := vm.BuildImage(t)
	start := time.Now()
	v := vm.Start(t, nil, vm.Config{Name: "client", Image: &img, NICs: []vm.NIC{{Model: "ne2k_pci"}},
		Cmdline: "imgcast.server=10.0.2.2 imgcast.after=poweroff imgcast.failwait=2s imgcast.linktimeout=3s"})
	v.Expect(`\*\*\* imgcast FAILED \*\*\*`, 2*time.Minute)
	v.Expect(`network: no network interface found`, 5*time.Second)
	v.Expect(`Network devices without a driver:\s+pci 0000:00:0[0-9a-f]\.0 \[10ec:8029\]: no driver for it in this image \(no modules\.alias entry matches pci:v000010ECd00008029`, 5*time.Second)
	v.Expect(`What was tried:\s+watched for NICs and carrier for [0-9.]+m?s \(link timeout 3s\)`, 5*time.Second)
	v.Expect(`What to check:\s+- a NIC without a driver in this image needs its module added`, 5*time.Second)
	v.Expect(`will power off in 2s`, 5*time.Second)
	if err := v.Wait(time.Minute); err != nil {
		t.Fatalf("the client did not power off after the diagnosis: %v", err)
	}
	t.Logf("boot to diagnosis and power-off: %s wall", time.Since(start).Round(time.Second))
}

// TestDeadAgentReboots: when the agent dies (here it exits at once, on a
// flag it does not know), u-root's init must find no shell to fall back
// to: it exits, the kernel panics and panic=-1 reboots the machine. No
// prompt may ever appear. init runs verbose (-v after --) so the console
// shows every command it tries.
func TestDeadAgentReboots(t *testing.T) {
	lab.Require(t, "qemu-system-x86_64")
	img := vm.BuildImage(t)
	v := vm.Start(t, nil, vm.Config{Name: "client", Image: &img,
		Cmdline: "uroot.uinitargs=-no-such-flag -- -v"})
	v.Expect(`Trying to run .*/bin/uinit`, 2*time.Minute)
	v.Expect(`imgcast: flag provided but not defined: -no-such-flag`, time.Minute)
	died := len(v.Console.Output())
	v.Expect(`Kernel panic - not syncing: Attempted to kill init`, time.Minute)
	if err := v.Wait(time.Minute); err != nil {
		t.Fatalf("no reboot after the agent died: %v", err)
	}
	after := v.Console.Output()[died:]
	if m := regexp.MustCompile(`Trying to run .*/bin/(defaultsh|sh)|(?m)^\$ `).FindString(after); m != "" {
		t.Errorf("after the agent died, init started a shell (%q):\n%s", m, after)
	}
	if !strings.Contains(after, "reboot") && !strings.Contains(after, "Rebooting") {
		t.Logf("(the kernel did not print its reboot; QEMU exited: -no-reboot)")
	}
}

// maxImageSize is the budget of the boot image without firmware: 8 MiB,
// about one second of PXE transfer even over slow TFTP, and RAM the
// client keeps for the whole job.
const maxImageSize = 8 << 20

// TestImageSize: the boot image without firmware fits its budget, and its
// userland has no shell for init to fall back to.
func TestImageSize(t *testing.T) {
	img := vm.BuildImage(t)
	dir := filepath.Dir(img.Initramfs)
	st, err := os.Stat(filepath.Join(dir, "initramfs-nofirmware.img"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > maxImageSize {
		t.Errorf("initramfs-nofirmware.img is %d bytes (%.2f MiB), over the budget of %d MiB", st.Size(), float64(st.Size())/(1<<20), maxImageSize>>20)
	}
	list, err := exec.Command("sh", "-c", `xz -dc "$0" | cpio -it --quiet`, filepath.Join(dir, "userland.cpio.xz")).Output()
	if err != nil {
		t.Fatalf("listing the userland: %v", err)
	}
	for _, f := range strings.Fields(string(list)) {
		if f == "bin/sh" || f == "bin/defaultsh" {
			t.Errorf("the userland has %s: init would start it when the agent exits", f)
		}
	}
	if !strings.Contains(string(list), "bbin/gosh") {
		t.Error("the userland has no bbin/gosh for the agent's debug shell")
	}
}

// TestAfterShellOnFailure: with imgcast.after=shell the agent itself gives
// the technician a shell after a failure (the image has no shell for init
// to start); leaving it reboots.
func TestAfterShellOnFailure(t *testing.T) {
	lab.Require(t, "qemu-system-x86_64")
	img := vm.BuildImage(t)
	// A USB keyboard too: the shell must still have a keyboard once the
	// USB host controller's driver has ended the firmware's emulation.
	v := vm.Start(t, nil, vm.Config{Name: "client", Image: &img, NICs: []vm.NIC{{Model: "ne2k_pci"}},
		Extra:   []string{"-device", "qemu-xhci,id=kbd", "-device", "usb-kbd,bus=kbd.0"},
		Cmdline: "imgcast.server=10.0.2.2 imgcast.after=shell imgcast.linktimeout=3s"})
	v.Expect(`\*\*\* imgcast FAILED \*\*\*`, 2*time.Minute)
	v.Expect(`imgcast: debug shell \(imgcast failed\)\. Type 'exit' to leave it; then the machine will reboot\.`, 10*time.Second)
	v.Expect(`\$ `, 10*time.Second)
	v.Type("echo $((40+2))")
	v.Expect(`\n42\r?\n`, 10*time.Second)
	// The USB keyboard gets its drivers (xhci_pci, usbhid, hid_generic)
	// while coldplug goes on behind the failure screen: poll for it.
	hid := regexp.MustCompile(`([0-9A-F]{4}:0627:0001\.[0-9A-F]{4})|no such file`)
	for i := 0; ; i++ {
		v.Type("ls /sys/bus/hid/drivers/hid-generic")
		m, err := v.Console.Expect(hid, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if m[1] != "" {
			break
		}
		if i == 30 {
			t.Fatal("the USB keyboard has no HID driver 30 s after the shell started (usbhid, hid_generic in initramfs/modules.list?)")
		}
		time.Sleep(time.Second)
	}
	v.Type("exit")
	v.Expect(`imgcast: reboot`, 10*time.Second)
	if err := v.Wait(time.Minute); err != nil {
		t.Fatalf("no reboot after the shell: %v", err)
	}
}
