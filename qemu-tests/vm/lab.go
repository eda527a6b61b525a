package vm

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/dnsmasq"
	"github.com/imgcast/imgcast/internal/lab"
	"golang.org/x/sys/unix"
)

// Lab is a lab network for VMs: a bridge in its own namespace with dnsmasq
// serving DHCP on it and, if asked, PXE.
type Lab struct {
	*lab.Net
	DHCP *dnsmasq.Server
	// HTTP is the lab's HTTP server address (host:port on the bridge) when
	// it serves PXE; tests may add handlers to HTTPMux.
	HTTP    string
	HTTPMux *http.ServeMux

	servesPXE bool
}

// LabOptions configure a lab.
type LabOptions struct {
	// PXE, if set, network-boots VMs started without an Image: dnsmasq
	// sends QEMU's iPXE ROM to http://<bridge>:8080/boot.ipxe, which
	// chains to a per-MAC script loading this kernel and initramfs.
	PXE *Image
	// PXECmdline gives the kernel command line of a network-booted VM by
	// its MAC address (added to "console=ttyS0 panic=-1").
	PXECmdline func(mac string) string
	// DHCP configures dnsmasq. A DHCP.IPXEScript without PXE means PXE is
	// served by someone else (e.g. imgcast-server): VMs started without an
	// Image still boot from the network.
	DHCP dnsmasq.Options
}

// NewLab makes a lab network on 10.<octet>.0.0/24 with dnsmasq, torn down
// when the test ends. It needs root, QEMU and dnsmasq (lab.Require).
func NewLab(t testing.TB, octet int, opt LabOptions) *Lab {
	t.Helper()
	lab.Require(t, "dnsmasq", "qemu-system-x86_64")
	l := &Lab{Net: lab.T(t, octet)}
	if opt.PXE != nil {
		l.servePXE(t, *opt.PXE, opt.PXECmdline)
		opt.DHCP.IPXEScript = "http://" + l.HTTP + "/boot.ipxe"
	}
	l.servesPXE = l.servesPXE || opt.DHCP.IPXEScript != ""
	l.DHCP = dnsmasq.Start(t, l.Switch, opt.DHCP)
	return l
}

func (l *Lab) servePXE(t testing.TB, img Image, cmdline func(string) string) {
	t.Helper()
	ln, err := ListenInNamespace(l.Switch.NS, "tcp4", net.JoinHostPort(l.Switch.IP.String(), "8080"))
	if err != nil {
		t.Fatal(err)
	}
	l.HTTP = ln.Addr().String()
	l.servesPXE = true
	mux := http.NewServeMux()
	l.HTTPMux = mux
	base := "http://" + l.HTTP
	mux.HandleFunc("/vmlinuz", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, img.Kernel) })
	mux.HandleFunc("/initramfs.img", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, img.Initramfs) })
	mux.HandleFunc("/boot.ipxe", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "#!ipxe\nchain %s/boot/${netX/mac}.ipxe\n", base)
	})
	mux.HandleFunc("/boot/", func(w http.ResponseWriter, r *http.Request) {
		mac := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/boot/"), ".ipxe")
		extra := ""
		if cmdline != nil {
			extra = cmdline(mac)
		}
		fmt.Fprintf(w, "#!ipxe\nkernel %s/vmlinuz console=ttyS0 panic=-1 %s\ninitrd %s/initramfs.img\nboot\n", base, extra, base)
	})
	srv := &http.Server{Handler: logRequests(t, mux), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
}

func logRequests(t testing.TB, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Logf("http: %s %s from %s", r.Method, r.URL.Path, r.RemoteAddr)
		h.ServeHTTP(w, r)
	})
}

// ListenInNamespace opens a listening socket inside a named network
// namespace (ip netns); the socket stays there while this process serves
// it from any goroutine.
func ListenInNamespace(ns, network, addr string) (net.Listener, error) {
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// A thread switched to another namespace must never run other
		// goroutines: lock it, and if switching back fails let it die
		// with this goroutine (no UnlockOSThread).
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer orig.Close()
		target, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		ln, err := net.Listen(network, addr)
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{ln, err}
	}()
	r := <-ch
	return r.ln, r.err
}
