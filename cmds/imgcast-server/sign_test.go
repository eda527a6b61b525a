package main

import (
	"bytes"
	"context"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/pkg/manifest"
	"github.com/imgcast/imgcast/pkg/restore/imagedir"
)

func TestSignKey(t *testing.T) {
	images := t.TempDir()
	dir := filepath.Join(images, "lab")
	os.Mkdir(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "d1.partitions"), []byte("label: dos\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "d1p1.img"), bytes.Repeat([]byte("x"), 5<<20), 0o644)
	keyName := filepath.Join(t.TempDir(), "srv")
	pub, err := manifest.WriteKeyPair(keyName)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	l := log.New(&logs, "", 0)
	if err := signIfUnsigned(context.Background(), images, "", keyName+".key", l); err != nil {
		t.Fatal(err)
	}
	f, _ := imagedir.Open(dir)
	m, err := manifest.Load(context.Background(), f, 1, "lab", pub)
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := m.Stream("d1p1.img"); !ok || len(s.Chunks) != 2 {
		t.Errorf("manifest: %+v", m)
	}
	// A folder that has a manifest is left as it is.
	before, _ := os.ReadFile(filepath.Join(dir, "d1.manifest.sig"))
	if err := signIfUnsigned(context.Background(), images, "lab", keyName+".key", l); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "d1.manifest.sig"))
	if !bytes.Equal(before, after) || !strings.Contains(logs.String(), "not signing it again") {
		t.Errorf("re-signed a signed folder:\n%s", logs.String())
	}
	if err := signIfUnsigned(context.Background(), images, "", keyName+".pub", l); err == nil {
		t.Error("a public key was taken as --sign-key")
	}
}
