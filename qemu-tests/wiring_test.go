package qemutests

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/imgcast/imgcast/pkg/manifest"
	"github.com/imgcast/imgcast/pkg/status"
	"github.com/imgcast/imgcast/qemu-tests/vm"
)

// keyPair writes a key pair as imgcast keygen does; it returns the
// public key file's bytes and the private key.
func keyPair(t *testing.T) (pub []byte, priv ed25519.PrivateKey) {
	t.Helper()
	name := filepath.Join(t.TempDir(), "lab")
	if _, err := manifest.WriteKeyPair(name); err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(name + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if priv, err = manifest.LoadPrivateKey(name + ".key"); err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// keyedInitramfs is the built initramfs with the public key file pub at
// manifest.BuiltinKeyPath, as `make initramfs PUBKEY=…` builds it: the
// kernel unpacks a cpio archive appended to the first over it.
func keyedInitramfs(t *testing.T, pub []byte) string {
	t.Helper()
	img := vm.BuildImage(t)
	base, err := os.ReadFile(img.Initramfs)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "initramfs-keyed.img")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(base); err != nil {
		t.Fatal(err)
	}
	w := cpio.Newc.Writer(f)
	rec := cpio.StaticFile(strings.TrimPrefix(manifest.BuiltinKeyPath, "/"), string(pub), 0o644)
	if err := cpio.WriteRecordsAndDirs(w, []cpio.Record{rec}); err != nil {
		t.Fatal(err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	return out
}

// memoryRE is the agent's last line in verbose mode.
var memoryRE = regexp.MustCompile(`memory: peak resident (\d+) kB \(VmHWM\), (\d+) kB available of (\d+) kB`)

// TestSignedMulticastRestore: a boot image with a public key built in
// images a 256 MiB machine by multicast from a signed folder (every
// chunk of each udp-sender stream verified before it is written), and
// the agent's peak memory is logged.
func TestSignedMulticastRestore(t *testing.T) {
	pub, priv := keyPair(t)
	s := newSession(t, sessionOptions{octet: 91, clients: 1, appendArgs: "imgcast.verbose=1",
		initramfs: keyedInitramfs(t, pub),
		damage: func(t *testing.T, dir string) {
			if _, err := manifest.SignFolder(context.Background(), dir, 1, "default", priv); err != nil {
				t.Fatal(err)
			}
		}})
	c := s.boot("pc1")
	c.Expect(`this boot image has a public key`, 4*time.Minute)
	c.Expect(`Signed manifest of image "default" verified`, time.Minute)
	s.expectDone(c, "multicast")
	s.checkDisk(c)
	m := memoryRE.FindStringSubmatch(c.Console.Output())
	if m == nil {
		t.Fatal("the agent logged no memory line")
	}
	t.Logf("256 MiB client, signed multicast restore: agent peak resident %s kB (VmHWM); %s kB of %s kB available at the end", m[1], m[2], m[3])
}

// TestRollingSession: with --rolling, a machine that boots after the
// session started waits for the next one (its console says which and
// since when) and is imaged in it, on that session's ports, with no
// admin action; both disks are checked.
func TestRollingSession(t *testing.T) {
	s := newSession(t, sessionOptions{octet: 92, clients: 1,
		// Slow enough (about 40 s per session) for the late machine to
		// boot while the first session sends.
		serverArgs: []string{"--rolling", "--max-bitrate", "1m"}})
	first := s.boot("pc1")
	s.waitFor("the first session to be sending", 3*time.Minute, func() bool {
		st, ok := s.statusOf(first.mac)
		return ok && st.State == status.Receiving
	})
	late := s.boot("pc2")
	m := late.Expect(`Rolling session: waiting for session 2 \(port base (\d+)\): .* \(since \d\d:\d\d:\d\d\)`, 4*time.Minute)
	if st, _ := s.statusOf(first.mac); st.State == status.Done {
		t.Errorf("pc1 was already done when pc2 was queued: the test did not show a late machine waiting")
	}
	late.Expect(`Rolling session 2 opened after \S+ of waiting; joining it on port base `+m[1], 4*time.Minute)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.expectDone(first, "multicast")
	}()
	s.expectDone(late, "multicast")
	<-done
	if t.Failed() {
		return
	}
	s.checkDisk(first)
	s.checkDisk(late)
	lateIP := ""
	if st, ok := s.statusOf(late.mac); ok {
		lateIP = st.IP
	}
	var sessions []status.Session
	out, err := s.lab.Switch.Command(context.Background(), "curl", "-sf", s.server+"/api/sessions").Output()
	if err == nil {
		err = json.Unmarshal(out, &sessions)
	}
	if err != nil || len(sessions) < 2 {
		t.Fatalf("GET /api/sessions: %v, %d sessions, want 2\n%s", err, len(sessions), out)
	}
	for _, ses := range sessions {
		for _, st := range ses.Streams {
			has := slices.Contains(st.Receivers, lateIP)
			if has != (ses.ID == 2) {
				t.Errorf("session %d stream %s went to %v; pc2 (%s) must be in session 2 only", ses.ID, st.ID, st.Receivers, lateIP)
			}
		}
	}
}
