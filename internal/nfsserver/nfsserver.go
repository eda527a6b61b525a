// Package nfsserver runs a real NFSv3 server for tests: Debian's user-space
// nfs-ganesha with rpcbind, inside a lab network namespace, exporting a
// directory as SERVER:/images read-only the way a FOG storage node exports
// its image store. (The test machine's kernel has no nfsd.)
//
// rpcbind keeps its socket and lock file under /run, which network
// namespaces do not separate, so both daemons run in a private mount
// namespace with their own tmpfs /run; ganesha registers with rpcbind
// through that socket.
package nfsserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/lab"
)

// Commands the server and its checks need (for lab.Require).
var Commands = []string{"ganesha.nfsd", "rpcbind", "rpcinfo", "unshare", "nfs-cat", "nfs-ls"}

// Export is the path clients mount, as FOG's storage= names it.
const Export = "/images"

// Server is a running NFS server.
type Server struct {
	// Host is the namespace it serves in; IP its address there.
	Host *lab.Host
	IP   net.IP
	// Dir is the exported directory.
	Dir string
	// Log is ganesha's log file.
	Log string

	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

// Storage is FOG's storage= value for this server: "IP:/images/".
func (s *Server) Storage() string { return s.IP.String() + ":" + Export + "/" }

// The ganesha configuration. FOG's knfsd export line for /images is
// "ro,sync,no_wdelay,no_subtree_check,insecure_locks,no_root_squash,
// insecure,fsid=0": read-only and no root squash map to Access_Type and
// Squash; ganesha accepts unprivileged client ports by default
// ("insecure"); the rest has no meaning for a read-only ganesha export.
// Mount_Path_Pseudo makes an NFSv3 mount of SERVER:/images match the
// Pseudo path, as a v3 client of FOG mounts it. No NLM: FOS mounts nolock.
// Attr_Expiration_Time = 0: ganesha otherwise serves its cached view of the
// store for 60 s, and a file a test removes (.mntcheck) would still be
// found; knfsd, which FOG runs, has no such cache.
const configTemplate = `NFS_CORE_PARAM {
	Protocols = 3, 4;
	NFS_Port = 2049;
	MNT_Port = 20048;
	Enable_NLM = false;
	Enable_RQUOTA = false;
	Mount_Path_Pseudo = true;
	Enable_UDP = false;
}
NFSV4 {
	Graceless = true;
	Lease_Lifetime = 10;
	RecoveryRoot = %[1]s/recovery;
}
NFS_KRB5 { Active_krb5 = false; }
EXPORT_DEFAULTS { Transports = TCP; SecType = sys; }
EXPORT {
	Export_Id = 1;
	Path = %[2]s;
	Pseudo = %[3]s;
	Protocols = 3, 4;
	Transports = TCP;
	Access_Type = RO;
	Squash = No_Root_Squash;
	SecType = sys;
	Manage_Gids = false;
	Attr_Expiration_Time = 0;
	FSAL { Name = VFS; }
	CLIENT { Clients = *; Access_Type = RO; }
}
LOG { Default_Log_Level = EVENT; }
`

// serveScript runs rpcbind and ganesha in the mount namespace unshare made,
// and stops both (ganesha first, so it unregisters) on SIGTERM.
const serveScript = `#!/bin/bash
set -euo pipefail
conf=$1 run=$2
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/rpcbind "$run/recovery"
chown _rpc /run/rpcbind 2>/dev/null || true
rpcbind -f &
rpcb=$!
for _ in $(seq 200); do [[ -S /run/rpcbind.sock ]] && break; sleep 0.05; done
if [[ ! -S /run/rpcbind.sock ]]; then echo "rpcbind did not start" >&2; kill "$rpcb"; exit 1; fi
ganesha.nfsd -F -f "$conf" -L "$run/ganesha.log" -p "$run/ganesha.pid" -N NIV_EVENT &
ganesha=$!
trap 'kill -TERM "$ganesha" 2>/dev/null || true; wait "$ganesha" || true; kill -TERM "$rpcb" 2>/dev/null || true; wait "$rpcb" || true; exit 0' TERM INT
rc=0
wait "$ganesha" || rc=$?
kill -TERM "$rpcb" 2>/dev/null || true
wait "$rpcb" || true
exit "$rc"
`

// Start serves dir as HOST:/images from host (which must already have its
// lab address: ganesha binds to the addresses it finds at start) until the
// test ends, and returns once the mount service answers.
func Start(t testing.TB, host *lab.Host, dir string) *Server {
	t.Helper()
	lab.Require(t, Commands...)
	s, err := start(host, dir, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("nfs server: %v", err)
		}
		if t.Failed() {
			if b, err := os.ReadFile(s.Log); err == nil {
				t.Logf("ganesha log:\n%s", b)
			}
		}
	})
	return s
}

func start(host *lab.Host, dir, run string) (*Server, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(run, "ganesha.conf")
	script := filepath.Join(run, "serve.sh")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(configTemplate, run, dir, Export)), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(script, []byte(serveScript), 0o755); err != nil {
		return nil, err
	}
	s := &Server{Host: host, IP: host.IP, Dir: dir, Log: filepath.Join(run, "ganesha.log"), exited: make(chan struct{})}
	var out lab.Output
	// unshare without --fork, like ip netns exec, execs in place: the
	// process started here is the script itself, stopped by its PID.
	s.cmd = host.Command(context.Background(), "unshare", "-m", "--propagation", "private", "bash", script, conf, run)
	s.cmd.Stdout, s.cmd.Stderr = &out, &out
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the NFS server: %w", err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.exited)
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		probe := host.Command(context.Background(), "rpcinfo", "-T", "tcp", s.IP.String(), "100005", "3")
		if probe.Run() == nil {
			return s, nil
		}
		select {
		case <-s.exited:
			log, _ := os.ReadFile(s.Log)
			return nil, fmt.Errorf("the NFS server exited (%v): %s\nganesha log:\n%s", s.err, bytes.TrimSpace([]byte(out.String())), log)
		default:
		}
		if time.Now().After(deadline) {
			_ = s.Stop()
			log, _ := os.ReadFile(s.Log)
			return nil, fmt.Errorf("the NFS server's mount service did not answer within 15 s: %s\nganesha log:\n%s", out.String(), log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops ganesha and rpcbind (SIGTERM to the serving script, SIGKILL
// after 10 s) and waits for them.
func (s *Server) Stop() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		return errors.New("the NFS server did not stop within 10 s of SIGTERM; killed")
	}
	var exit *exec.ExitError
	if s.err != nil && !errors.As(s.err, &exit) {
		return s.err
	}
	return nil
}

// URL is a libnfs URL for a path under the export, over NFSv3.
func (s *Server) URL(path string) string {
	return "nfs://" + s.IP.String() + Export + "/" + strings.TrimPrefix(path, "/") + "?version=3"
}

// Cat reads a file of the export over NFSv3 with libnfs's nfs-cat, run in
// from the given namespace (the host kernel has no NFS client).
func (s *Server) Cat(from *lab.Host, path string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := from.Command(context.Background(), "nfs-cat", s.URL(path))
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("nfs-cat %s: %v: %s", s.URL(path), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return b, nil
}
