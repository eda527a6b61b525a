// Package dnsmasq runs dnsmasq as the DHCP (and optionally PXE) server of a
// lab network (internal/lab) for tests: on the bridge of the switch
// namespace, with its log and lease file in a test directory.
package dnsmasq

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/lab"
)

// Options configure the server. The zero value serves addresses
// .100-.199 of the lab subnet with a one-hour lease.
type Options struct {
	// First and Last are the host numbers of the address range.
	First, Last int
	// LeaseTime is the lease duration (dnsmasq's minimum is 2 minutes).
	LeaseTime time.Duration
	// IPXEScript, if set, is the URL (or TFTP file) handed to iPXE clients
	// (DHCP option 175 present) as their boot file: the PXE chain of
	// QEMU's iPXE ROM.
	IPXEScript string
	// BIOSBootFile and UEFIBootFile, if set, are the TFTP files handed to
	// PXE firmware that is not iPXE, told apart by its client architecture
	// (option 93: 0 BIOS, 7 and 9 x86-64 UEFI), as a lab's DHCP server
	// does: usually undionly.kpxe and ipxe.efi, which load iPXE, whose own
	// request then gets IPXEScript. They need TFTP (Extra: --enable-tftp
	// --tftp-root=DIR).
	BIOSBootFile, UEFIBootFile string
	// Extra are more dnsmasq arguments.
	Extra []string
}

// Server is a running dnsmasq.
type Server struct {
	// LeaseFile is dnsmasq's lease database ("expiry MAC IP name id" lines).
	LeaseFile string
	// LogFile holds everything dnsmasq logged.
	LogFile string
}

// Start runs dnsmasq on host's interface (usually the lab's Switch and its
// bridge) until the test ends, and returns once dnsmasq serves.
func Start(t testing.TB, host *lab.Host, opt Options) *Server {
	t.Helper()
	ip := host.IP.To4()
	subnetPrefix := fmt.Sprintf("%d.%d.%d", ip[0], ip[1], ip[2])
	if opt.First == 0 {
		opt.First, opt.Last = 100, 199
	}
	if opt.LeaseTime == 0 {
		opt.LeaseTime = time.Hour
	}
	dir := t.TempDir()
	s := &Server{LeaseFile: filepath.Join(dir, "leases"), LogFile: filepath.Join(dir, "dnsmasq.log")}
	args := []string{
		"--no-daemon", "--conf-file=/dev/null", "--pid-file", "--port=0", "--user=root",
		"--interface=" + host.Iface, "--bind-interfaces", "--log-dhcp", "--log-facility=-",
		fmt.Sprintf("--dhcp-range=%s.%d,%s.%d,255.255.255.0,%ds", subnetPrefix, opt.First, subnetPrefix, opt.Last, int(opt.LeaseTime.Seconds())),
		"--dhcp-leasefile=" + s.LeaseFile, "--dhcp-authoritative",
		// dnsmasq pings an address before offering it to a new client and
		// ignores the client meanwhile: 3 s of server-side delay on every
		// first boot that would hide the client's own timing.
		"--no-ping",
	}
	args = append(args, bootArgs(opt)...)
	args = append(args, opt.Extra...)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := host.Command(ctx, "dnsmasq", args...)
	logf, err := os.Create(s.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("dnsmasq: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); pw.Close() }()
	ready := make(chan struct{})
	var once sync.Once
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			if strings.Contains(sc.Text(), "DHCP, IP range") {
				once.Do(func() { close(ready) })
			}
		}
		logf.Close()
	}()
	t.Cleanup(func() {
		cancel()
		<-exited
		if t.Failed() {
			if b, err := os.ReadFile(s.LogFile); err == nil {
				t.Logf("dnsmasq log:\n%s", b)
			}
		}
	})
	select {
	case <-ready:
	case err := <-exited:
		b, _ := os.ReadFile(s.LogFile)
		t.Fatalf("dnsmasq exited: %v\n%s", err, b)
	case <-time.After(10 * time.Second):
		t.Fatal("dnsmasq did not start within 10 s")
	}
	return s
}

// bootArgs are dnsmasq's boot-file options: each kind of client matches
// exactly one dhcp-boot line (iPXE; else UEFI x86-64; else BIOS).
func bootArgs(opt Options) []string {
	var args []string
	if opt.IPXEScript != "" || opt.BIOSBootFile != "" || opt.UEFIBootFile != "" {
		args = append(args, "--dhcp-match=set:ipxe,175")
	}
	if opt.UEFIBootFile != "" {
		args = append(args, "--dhcp-match=set:efi64,option:client-arch,7", "--dhcp-match=set:efi64,option:client-arch,9",
			"--dhcp-boot=tag:!ipxe,tag:efi64,"+opt.UEFIBootFile)
	}
	if opt.BIOSBootFile != "" {
		args = append(args, "--dhcp-boot=tag:!ipxe,tag:!efi64,"+opt.BIOSBootFile)
	}
	if opt.IPXEScript != "" {
		args = append(args, "--dhcp-boot=tag:ipxe,"+opt.IPXEScript)
	}
	return args
}

// Leases returns the lease file's lines ("expiry MAC IP name client-id").
func (s *Server) Leases() []string {
	b, _ := os.ReadFile(s.LeaseFile)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// Log returns what dnsmasq logged so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.LogFile)
	return string(b)
}
