package nfsmount

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMountArgs(t *testing.T) {
	for _, tc := range []struct {
		storage, target string
		want            Args
	}{
		{"10.0.0.5:/images/", "", Args{Source: "10.0.0.5:/images", Target: "/images", FSType: "nfs",
			Flags: unix.MS_RDONLY | unix.MS_NOATIME, Data: "nolock,proto=tcp,rsize=32768,intr,addr=10.0.0.5"}},
		{"192.168.1.20:/srv/fog/images//", "/mnt/x", Args{Source: "192.168.1.20:/srv/fog/images", Target: "/mnt/x", FSType: "nfs",
			Flags: unix.MS_RDONLY | unix.MS_NOATIME, Data: "nolock,proto=tcp,rsize=32768,intr,addr=192.168.1.20"}},
		{"10.0.0.5:/", "", Args{Source: "10.0.0.5:/", Target: "/images", FSType: "nfs",
			Flags: unix.MS_RDONLY | unix.MS_NOATIME, Data: "nolock,proto=tcp,rsize=32768,intr,addr=10.0.0.5"}},
	} {
		got, err := MountArgs(tc.storage, tc.target)
		if err != nil || got != tc.want {
			t.Errorf("MountArgs(%q):\n got %+v, %v\nwant %+v", tc.storage, got, err, tc.want)
		}
		// The kernel's NFS parser refuses these in the data string.
		for _, bad := range []string{"noatime", "ro", "rw"} {
			for _, opt := range strings.Split(got.Data, ",") {
				if opt == bad {
					t.Errorf("%q in mount data %q", bad, got.Data)
				}
			}
		}
	}
	for _, bad := range []string{"", "fog.lab:/images/", "10.0.0.5", "10.0.0.5:images"} {
		if a, err := MountArgs(bad, ""); err == nil {
			t.Errorf("MountArgs(%q) = %+v, want an error", bad, a)
		}
	}
}

// fakeSystem records the calls Mount makes.
type fakeSystem struct {
	mountErr  error
	block     chan struct{} // mount blocks until closed
	marker    bool          // mount creates .mntcheck
	dialErr   error
	mounted   []Args
	unmounted []string
	loaded    []string
	loadErr   error
}

func (f *fakeSystem) options(target string) Options {
	return Options{
		Target:  target,
		Timeout: 2 * time.Second,
		LoadModule: func(name string) error {
			f.loaded = append(f.loaded, name)
			return f.loadErr
		},
		mount: func(source, target, fstype string, flags uintptr, data string) error {
			f.mounted = append(f.mounted, Args{source, target, fstype, flags, data})
			if f.block != nil {
				<-f.block
			}
			if f.mountErr == nil && f.marker {
				return os.WriteFile(filepath.Join(target, Marker), nil, 0o644)
			}
			return f.mountErr
		},
		unmount: func(target string, flags int) error {
			f.unmounted = append(f.unmounted, target)
			return nil
		},
		dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			if f.dialErr != nil {
				return nil, f.dialErr
			}
			if address != "10.0.0.5:111" || network != "tcp" {
				return nil, errors.New("dialled " + network + " " + address)
			}
			c, s := net.Pipe()
			s.Close()
			return c, nil
		},
	}
}

func TestMount(t *testing.T) {
	f := &fakeSystem{marker: true}
	target := filepath.Join(t.TempDir(), "images")
	if err := Mount(context.Background(), "10.0.0.5:/images/", f.options(target)); err != nil {
		t.Fatal(err)
	}
	if len(f.loaded) != 1 || f.loaded[0] != "nfsv3" {
		t.Errorf("loaded %q, want nfsv3 before the mount", f.loaded)
	}
	want := Args{"10.0.0.5:/images", target, "nfs", unix.MS_RDONLY | unix.MS_NOATIME, "nolock,proto=tcp,rsize=32768,intr,addr=10.0.0.5"}
	if len(f.mounted) != 1 || f.mounted[0] != want {
		t.Errorf("mounted %+v, want %+v", f.mounted, want)
	}
	// Only the unmount FOS also does before mounting.
	if len(f.unmounted) != 1 {
		t.Errorf("unmounted %q", f.unmounted)
	}
}

func TestMountFailures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		f       fakeSystem
		kind    error
		says    []string
		mounted bool // still mounted afterwards
	}{
		{"no marker", fakeSystem{}, ErrNoMarker, []string{".mntcheck"}, false},
		{"export missing", fakeSystem{mountErr: syscall.ENOENT}, ErrExport, []string{"does not export /images"}, false},
		{"export refused", fakeSystem{mountErr: syscall.EACCES}, ErrExport, []string{"refused to export /images", "/etc/exports"}, false},
		{"server down", fakeSystem{mountErr: syscall.ETIMEDOUT}, ErrUnreachable, []string{"does not answer"}, false},
		{"rpcbind refused", fakeSystem{dialErr: syscall.ECONNREFUSED}, ErrUnreachable, []string{"port 111", "firewall"}, false},
		{"no nfs module", fakeSystem{mountErr: syscall.ENODEV, loadErr: errors.New("module nfsv3 not found")}, ErrKernel, []string{"no NFS file system", "loading nfsv3 failed: module nfsv3 not found"}, false},
		{"no nfsv3", fakeSystem{mountErr: syscall.EPROTONOSUPPORT}, ErrKernel, []string{"NFSv3 over TCP"}, false},
		{"bad options", fakeSystem{mountErr: syscall.EINVAL}, nil, []string{"refused the mount options", "addr=10.0.0.5"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := filepath.Join(t.TempDir(), "images")
			err := Mount(context.Background(), "10.0.0.5:/images/", tc.f.options(target))
			if err == nil {
				t.Fatal("no error")
			}
			if tc.kind != nil && !errors.Is(err, tc.kind) {
				t.Errorf("error %v is not %v", err, tc.kind)
			}
			for _, k := range []error{ErrNoMarker, ErrExport, ErrUnreachable, ErrKernel} {
				if k != tc.kind && errors.Is(err, k) {
					t.Errorf("error %v is also %v", err, k)
				}
			}
			for _, s := range append(tc.says, "10.0.0.5:/images") {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			if tc.f.mountErr != nil && !errors.Is(err, tc.f.mountErr) {
				t.Errorf("error %v does not wrap the errno %v", err, tc.f.mountErr)
			}
			if tc.name == "no marker" && len(tc.f.unmounted) != 2 {
				t.Errorf("a mount without the marker was left mounted (unmounts %q)", tc.f.unmounted)
			}
		})
	}
}

// A module that does not load is no error when the kernel mounts anyway
// (its NFS client built in).
func TestMountBuiltinClient(t *testing.T) {
	f := &fakeSystem{marker: true, loadErr: errors.New("module nfsv3 not found")}
	if err := Mount(context.Background(), "10.0.0.5:/images/", f.options(filepath.Join(t.TempDir(), "images"))); err != nil {
		t.Errorf("Mount: %v", err)
	}
}

// A mount(2) that does not return is given up after the timeout.
func TestMountTimeout(t *testing.T) {
	f := &fakeSystem{block: make(chan struct{})}
	defer close(f.block)
	opt := f.options(filepath.Join(t.TempDir(), "images"))
	opt.Timeout = 50 * time.Millisecond
	err := Mount(context.Background(), "10.0.0.5:/images/", opt)
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "did not return within 50ms") {
		t.Errorf("err = %v", err)
	}
}
