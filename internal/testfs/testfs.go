// Package testfs builds small fake file trees (sysfs, /proc, module trees)
// for tests.
package testfs

import (
	"os"
	"path/filepath"
	"testing"
)

// Tree creates a temporary directory holding files (path -> contents) and
// symbolic links (path -> target), and returns its path.
func Tree(t testing.TB, files map[string]string, links map[string]string) string {
	t.Helper()
	root := t.TempDir()
	mkparent := func(p string) string {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		return full
	}
	for p, c := range files {
		if err := os.WriteFile(mkparent(p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for p, target := range links {
		if err := os.Symlink(target, mkparent(p)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}
