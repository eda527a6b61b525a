package qemutests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcast/imgcast/pkg/status"
	"github.com/imgcast/imgcast/qemu-tests/vm"
)

// TestDemo is `make demo` and the demo's path as a test: two machines with
// 256 MiB each PXE-boot from imgcast-server, receive the default image by
// multicast from udpcast's udp-sender, write their disks and power off;
// both disks must equal the reference and pass fsck, and the server must
// list both done. pc1 is a BIOS machine whose NIC ROM is iPXE (QEMU's):
// dnsmasq DHCP → imgcast.ipxe over TFTP → boot.ipxe over HTTP. pc2 is a
// UEFI machine (OVMF) whose firmware PXE-boots with its own network stack,
// as most lab PCs do: dnsmasq sees client-arch 7 and hands it ipxe.efi over
// TFTP, and that iPXE takes the same path, into our kernel's EFI stub.
func TestDemo(t *testing.T) {
	s := newSession(t, sessionOptions{octet: 81, clients: 2})
	clients := []*client{
		s.boot("pc1"),
		s.bootWith(vm.Config{Name: "pc2", UEFI: true, NICs: []vm.NIC{{ROM: "none"}}}),
	}
	firmware := []string{"BIOS, iPXE ROM", "UEFI, firmware PXE"}
	type outcome struct {
		rates []partitionRate
		took  time.Duration
	}
	results := make([]outcome, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i].rates, results[i].took = s.expectDone(c, "multicast")
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	total := time.Since(s.start)
	for _, c := range clients {
		s.checkDisk(c)
	}
	ses := s.session()
	if ses.Phase != status.Finished {
		t.Errorf("session phase %s after both machines finished, want finished", ses.Phase)
	}
	for _, st := range ses.Streams {
		if len(st.Receivers) != 2 {
			t.Errorf("stream %s went to %v, want both machines", st.ID, st.Receivers)
		}
	}

	var sum strings.Builder
	fmt.Fprintf(&sum, "\nimgcast demo: 2 machines (256 MiB RAM, 1 vCPU, QEMU TCG; pc1 %s, pc2 %s) imaged by multicast from udp-sender\n", firmware[0], firmware[1])
	fmt.Fprintf(&sum, "%-6s %-18s %-9s %-9s %10s %9s %10s %10s\n", "client", "MAC", "partition", "mode", "bytes", "time", "wire MB/s", "disk MB/s")
	for i, c := range clients {
		for _, r := range results[i].rates {
			fmt.Fprintf(&sum, "%-6s %-18s %-9s %-9s %10d %9s %10.1f %10.1f\n", c.Name, c.MACs[0], r.file, r.mode, r.bytes, r.took, r.wire, r.disk)
		}
		fmt.Fprintf(&sum, "%-6s power-on to done and powered off: %s\n", c.Name, results[i].took.Round(100*time.Millisecond))
	}
	fmt.Fprintf(&sum, "whole session (server start to both machines off): %s\n", total.Round(100*time.Millisecond))
	fmt.Fprintf(&sum, "both disks: byte-identical to the reference disk, e2fsck and fsck.vfat clean\n")
	if os.Getenv("IMGCAST_DEMO") != "" {
		fmt.Print(sum.String()) // make demo: the summary, unindented
	} else {
		t.Log(sum.String())
	}
}

// TestSenderKilledMidPartition: udp-sender dies while the first partition
// streams; the client must fail within its receive timeout, say why, report
// failed to the server and never done.
func TestSenderKilledMidPartition(t *testing.T) {
	s := newSession(t, sessionOptions{
		octet: 82, clients: 1,
		appendArgs: "imgcast.receivetimeout=5s",
		// Slow enough (about 12 s for the first partition) to kill it
		// mid-stream.
		serverArgs: []string{"--max-bitrate", "2m"},
	})
	c := s.boot("pc1")
	s.waitFor("the first partition to be streaming", 3*time.Minute, func() bool {
		st, ok := s.statusOf(c.MACs[0])
		return ok && st.State == status.Receiving && st.Bytes > 0
	})
	// Another udp-sender on the host, not the session's: it must survive.
	bystander := startBystander(t, "udp-sender")
	s.killSenders()
	killed := time.Now()
	select {
	case err := <-bystander:
		t.Errorf("a udp-sender outside the session was killed too: %v", err)
	case <-time.After(time.Second):
	}
	st := s.expectFailed(c, `partition 1: sender 10\.82\.0\.1:9001 went silent after .* \(nothing received for 5s\)`)
	t.Logf("failed %s after the kill; server shows: %s", time.Since(killed).Round(time.Second), st.Error)
}

// TestSHA256Mismatch: the image's data are intact but d1.sha256 does not
// match d1p2.img; the client must fail on partition 2 and never say done.
// The machine is UEFI with QEMU's EFI iPXE ROM on its NIC (the other UEFI
// path: iPXE asks dnsmasq directly and gets imgcast.ipxe).
func TestSHA256Mismatch(t *testing.T) {
	s := newSession(t, sessionOptions{octet: 83, clients: 1, damage: func(t *testing.T, dir string) {
		sums := filepath.Join(dir, "d1.sha256")
		b, err := os.ReadFile(sums)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		for i, l := range lines {
			if strings.HasSuffix(l, "d1p2.img") {
				lines[i] = strings.Repeat("0", 64) + l[64:]
			}
		}
		if err := os.WriteFile(sums, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}})
	c := s.bootWith(vm.Config{Name: "pc1", UEFI: true})
	c.Expect(`efi: EFI v`, 3*time.Minute)
	s.expectFailed(c, `partition 2: d1p2\.img: SHA-256 of the bytes received is [0-9a-f]{64}, d1\.sha256 says 0{64}`)
}

// TestUnicast: a server in unicast mode; the client fetches the image
// files over HTTP through the same pipeline. The machine has a VGA screen:
// the agent's first lines, the progress lines and the result must show on
// it (tty0) as on the serial console.
func TestUnicast(t *testing.T) {
	s := newSession(t, sessionOptions{octet: 84, mode: "unicast"})
	c := s.bootWith(vm.Config{Name: "pc1", VGA: true})
	scr := watchScreen(t, c.VM, `^d1p1 \[#*\.*\] +\d+%`)
	c.Expect(`Command line: .*imgcast\.mode=unicast`, 2*time.Minute)
	rates, took := s.expectDone(c, "unicast")
	scr.expect(
		`imgcast: starting \(init started at [0-9.]+ s\)`,
		`imgcast: mode unicast, server 10\.84\.0\.1`,
		`imgcast: network ready: eth0 10\.84\.0\.\d+/24`,
		`^d1p1 \[#*\.*\] +\d+%  `,
		`^d1p2 \[#*\.*\] +\d+%  `,
		`imgcast: image written to /dev/vda in \S+ \(unicast\)`,
	)
	scr.picture()
	s.checkDisk(c)
	for _, r := range rates {
		t.Logf("%s over HTTP: %d bytes, %s, wire %.1f MB/s, disk %.1f MB/s", r.file, r.bytes, r.took, r.wire, r.disk)
	}
	t.Logf("power-on to done: %s", took.Round(100*time.Millisecond))
}

// TestLateClient: a machine that boots after the session started is told
// so and fails at once, instead of waiting for a stream that will not come.
func TestLateClient(t *testing.T) {
	s := newSession(t, sessionOptions{octet: 85, clients: 1})
	// The session's one expected receiver is udpcast's own udp-receiver on
	// another machine: it takes the first partition, so the session moves
	// on to partition 2 and waits there for it.
	early, err := s.lab.AddHost("early", 21)
	if err != nil {
		t.Fatal(err)
	}
	if err := early.Run("udp-receiver", "--nokbd", "--portbase", "9000", "--file", "/dev/null", "--start-timeout", "60"); err != nil {
		t.Fatalf("the early receiver: %v", err)
	}
	s.waitFor("the session to be past its first partition", time.Minute, func() bool {
		ses := s.session()
		return ses.Phase == status.Sending && len(ses.Streams) == 2 && ses.Streams[0].State == status.StreamDone
	})
	c := s.boot("late")
	st := s.expectFailed(c, `multicast session cannot be joined: .*booted too late`)
	t.Logf("the late machine was told: %s", st.Error)
	if st.Note == "" {
		t.Logf("(the server added no note for the late machine)")
	}
}

// startBystander runs a process named name (a copy of sleep) on the host,
// outside any lab, until the test ends; the channel gets its exit.
func startBystander(t *testing.T, name string) <-chan error {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() }) // the goroutine reaps it
	return exited
}
