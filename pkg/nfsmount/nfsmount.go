// Package nfsmount mounts a FOG storage node's image export (the storage=
// of a FOG task, "10.0.0.5:/images/") read-only at /images through the
// kernel's NFSv3 client, with the options FOS mounts it with, and checks
// FOG's /images/.mntcheck marker.
//
// mount(8) is not used: the agent calls mount(2) itself, which needs what
// mount(8) would add — the server's address as addr=, and noatime/ro as
// flags, because the kernel's NFS option parser refuses them in the data
// string.
package nfsmount

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgcast/imgcast/pkg/fog"
)

const (
	// Target is where FOS mounts the export.
	Target = "/images"
	// Marker is the file FOG puts at the root of every storage node's
	// export; without it the mount is not FOG's image store.
	Marker = ".mntcheck"
	// Module is the kernel module of the NFSv3 client. The kernel asks
	// for it by name at mount time through modprobe, which the image does
	// not have, so it is loaded before mounting.
	Module = "nfsv3"
	// DefaultTimeout bounds mount(2): a server that does not answer would
	// otherwise keep the kernel retrying for minutes.
	DefaultTimeout = 60 * time.Second
	// rpcbindPort is where the kernel asks for the NFS and mount ports
	// (FOS's options name no port=/mountport=).
	rpcbindPort = "111"
)

// Errors a mount failure wraps, to decide what to tell FOG: a missing
// marker is the storage node's fault (FOS reports it with blame.php).
var (
	ErrNoMarker    = errors.New("the export has no .mntcheck: it is not a FOG image store")
	ErrUnreachable = errors.New("the storage node does not answer")
	ErrExport      = errors.New("the storage node does not export this path to this machine")
	ErrKernel      = errors.New("the kernel cannot mount NFSv3")
)

// Args are mount(2)'s arguments.
type Args struct {
	Source, Target, FSType string
	Flags                  uintptr
	Data                   string
}

// MountArgs builds mount(2)'s arguments for FOG's storage= value: FOS's
// deploy options "nolock,proto=tcp,rsize=32768,intr,noatime" with noatime
// and read-only as flags, and addr= the server's address (storage= holds
// an address, never a name, so nothing is looked up). Trailing slashes of
// the export path are dropped: FOG writes "/images/", servers export
// "/images".
func MountArgs(storage, target string) (Args, error) {
	ip, export, err := fog.SplitStorage(storage)
	if err != nil {
		return Args{}, fmt.Errorf("storage=%q: %w", storage, err)
	}
	if t := strings.TrimRight(export, "/"); t != "" {
		export = t
	}
	if target == "" {
		target = Target
	}
	return Args{
		Source: ip.String() + ":" + export,
		Target: target,
		FSType: "nfs",
		Flags:  unix.MS_RDONLY | unix.MS_NOATIME,
		Data:   "nolock,proto=tcp,rsize=32768,intr,addr=" + ip.String(),
	}, nil
}

// Options are Mount's.
type Options struct {
	// Target is the mount point (default /images); it is created.
	Target string
	// LoadModule loads a kernel module with its dependencies (the agent's
	// module loader); nil when the kernel has its NFS client built in.
	LoadModule func(name string) error
	// Timeout bounds the server check and mount(2) (default 60 s).
	Timeout time.Duration

	// The system calls, replaced by tests.
	mount   func(source, target, fstype string, flags uintptr, data string) error
	unmount func(target string, flags int) error
	dial    func(ctx context.Context, network, address string) (net.Conn, error)
}

// Mount mounts storage at the target read-only and checks FOG's marker.
// On failure nothing stays mounted, and the error wraps one of ErrNoMarker,
// ErrUnreachable, ErrExport or ErrKernel where it is one of those, with a
// message that says what to check.
func Mount(ctx context.Context, storage string, opt Options) error {
	a, err := MountArgs(storage, opt.Target)
	if err != nil {
		return err
	}
	mount, unmount, dial := opt.mount, opt.unmount, opt.dial
	if mount == nil {
		mount = unix.Mount
	}
	if unmount == nil {
		unmount = unix.Unmount
	}
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	server, _, _ := strings.Cut(a.Source, ":")

	var loadErr error
	if opt.LoadModule != nil {
		// A failure is reported only if the mount fails: the client may be
		// built into the kernel.
		loadErr = opt.LoadModule(Module)
	}
	// The kernel asks the server's rpcbind first; checking it here turns
	// minutes of kernel retries into one clear error.
	conn, err := dial(ctx, "tcp", net.JoinHostPort(server, rpcbindPort))
	if err != nil {
		return &Error{Kind: ErrUnreachable, Args: a, Err: err,
			Hint: fmt.Sprintf("nothing answers on %s port %s (rpcbind): check the storage node's address, that its NFS server runs, and its firewall", server, rpcbindPort)}
	}
	conn.Close()
	if err := os.MkdirAll(a.Target, 0o755); err != nil {
		return fmt.Errorf("mount point: %w", err)
	}
	// As FOS does before mounting: whatever was mounted there goes.
	_ = unmount(a.Target, unix.MNT_DETACH)
	done := make(chan error, 1)
	go func() { done <- mount(a.Source, a.Target, a.FSType, a.Flags, a.Data) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		// mount(2) cannot be interrupted; it is left to end by itself.
		return &Error{Kind: ErrUnreachable, Args: a, Err: ctx.Err(),
			Hint: fmt.Sprintf("mount did not return within %v: the NFS server on %s does not answer", timeout, server)}
	}
	if err != nil {
		return classify(a, err, loadErr)
	}
	if _, err := os.Stat(filepath.Join(a.Target, Marker)); err != nil {
		_ = unmount(a.Target, unix.MNT_DETACH)
		if errors.Is(err, os.ErrNotExist) {
			return &Error{Kind: ErrNoMarker, Args: a, Err: err,
				Hint: "check that storage= names the node's image export and that /images/.mntcheck exists on it"}
		}
		return fmt.Errorf("checking %s on %s: %w", Marker, a.Source, err)
	}
	return nil
}

// classify turns mount(2)'s errno into an Error saying what to check.
func classify(a Args, err, loadErr error) error {
	server, export, _ := strings.Cut(a.Source, ":")
	loaded := ""
	if loadErr != nil {
		loaded = fmt.Sprintf(" (loading %s failed: %v)", Module, loadErr)
	}
	e := &Error{Args: a, Err: err}
	switch {
	case errors.Is(err, syscall.ENOENT):
		e.Kind, e.Hint = ErrExport, fmt.Sprintf("%s does not export %s: check the image store path in FOG's storage node settings and the node's /etc/exports", server, export)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		e.Kind, e.Hint = ErrExport, fmt.Sprintf("%s refused to export %s to this machine: check the node's /etc/exports (FOG exports /images to every host)", server, export)
	case errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.ECONNREFUSED):
		e.Kind, e.Hint = ErrUnreachable, fmt.Sprintf("the NFS server on %s does not answer: check that it runs (nfs-server and rpcbind) and the firewall", server)
	case errors.Is(err, syscall.ENODEV):
		e.Kind, e.Hint = ErrKernel, "the kernel has no NFS file system"+loaded
	case errors.Is(err, syscall.EPROTONOSUPPORT):
		e.Kind, e.Hint = ErrKernel, "NFSv3 over TCP is not available: the kernel's nfsv3 client is missing"+loaded+", or the server does not offer NFSv3 over TCP"
	case errors.Is(err, syscall.EINVAL):
		e.Hint = fmt.Sprintf("the kernel refused the mount options %q%s", a.Data, loaded)
	default:
		e.Hint = "the mount failed" + loaded
	}
	return e
}

// Error is a failed mount.
type Error struct {
	// Kind is ErrNoMarker, ErrUnreachable, ErrExport, ErrKernel or nil.
	Kind error
	Args Args
	Err  error
	// Hint says what went wrong and what to check.
	Hint string
}

func (e *Error) Error() string {
	return fmt.Sprintf("mounting FOG's storage %s on %s: %s: %v", e.Args.Source, e.Args.Target, e.Hint, e.Err)
}

// Unwrap gives errors.Is both the kind and the cause.
func (e *Error) Unwrap() []error {
	if e.Kind == nil {
		return []error{e.Err}
	}
	return []error{e.Kind, e.Err}
}
