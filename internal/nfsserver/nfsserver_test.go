package nfsserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/internal/lab"
)

// TestServesFOGStore exports a FOG-style image store and reads it back
// over NFSv3 from another host of the lab: the .mntcheck marker and an
// image file byte for byte; writes are refused.
func TestServesFOGStore(t *testing.T) {
	lab.Require(t, Commands...)
	n := lab.T(t, 83)
	client, err := n.AddHost("client", 10)
	if err != nil {
		t.Fatal(err)
	}
	store := t.TempDir()
	image := make([]byte, 3<<20+17)
	rand.Read(image)
	for name, b := range map[string][]byte{
		".mntcheck":         nil,
		"lab/d1.partitions": []byte("label: dos\n"),
		"lab/d1p1.img":      image,
		"dev/.mntcheck":     nil,
	} {
		path := filepath.Join(store, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	srv := Start(t, n.Switch, store)
	if got := srv.Storage(); got != n.Switch.IP.String()+":/images/" {
		t.Errorf("Storage() = %q", got)
	}
	if _, err := srv.Cat(client, ".mntcheck"); err != nil {
		t.Errorf(".mntcheck: %v", err)
	}
	got, err := srv.Cat(client, "lab/d1p1.img")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, image) {
		t.Errorf("d1p1.img over NFS: %d bytes, not the %d written", len(got), len(image))
	}
	list, err := client.Command(context.Background(), "nfs-ls", srv.URL("lab")).CombinedOutput()
	if err != nil || !strings.Contains(string(list), "d1p1.img") || !strings.Contains(string(list), "d1.partitions") {
		t.Errorf("nfs-ls lab: %v\n%s", err, list)
	}
	if _, err := srv.Cat(client, "lab/missing.img"); err == nil {
		t.Error("a missing file was read")
	}
	// A file removed in the store is gone over NFS at once, as with knfsd:
	// tests take .mntcheck away between boots of one lab.
	if err := os.Remove(filepath.Join(store, ".mntcheck")); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Cat(client, ".mntcheck"); err == nil {
		t.Error(".mntcheck was still served after it was removed from the store")
	}
	// Read-only, as FOG exports /images.
	src := filepath.Join(t.TempDir(), "new")
	os.WriteFile(src, []byte("x"), 0o644)
	if out, err := client.Command(context.Background(), "nfs-cp", src, srv.URL("lab/new")).CombinedOutput(); err == nil {
		t.Errorf("nfs-cp wrote to the read-only export: %s", out)
	}
	if _, err := os.Stat(filepath.Join(store, "lab/new")); err == nil {
		t.Error("a file was created through the read-only export")
	}

	// Stop ends both daemons: nothing answers any more.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := client.Command(context.Background(), "rpcinfo", "-T", "tcp", srv.IP.String(), "100005", "3").Run(); err == nil {
		t.Error("the mount service still answers after Stop")
	}
}
