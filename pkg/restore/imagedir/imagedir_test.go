package imagedir_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/pkg/restore/imagedir"
)

const sum = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

func TestParseSHA256Sums(t *testing.T) {
	m, err := imagedir.ParseSHA256Sums([]byte(sum + "  d1p1.img\n" + sum + " *./d1p1.img.001\n\n"))
	if err != nil || len(m) != 2 || m["d1p1.img.001"] == nil {
		t.Fatalf("%v %v", m, err)
	}
	for _, bad := range []string{"nothex  d1p1.img", sum[:60] + "  x", sum, sum + "  a\n" + sum + "  a"} {
		if _, err := imagedir.ParseSHA256Sums([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzParseSHA256Sums(f *testing.F) {
	f.Add(sum + "  d1p1.img\n")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := imagedir.ParseSHA256Sums([]byte(s))
		if err != nil {
			return
		}
		for name, d := range m {
			if len(d) != 32 || name == "" || strings.Contains(name, "/") {
				t.Fatalf("accepted %q → %x", name, d)
			}
		}
	})
}

// Split pieces are found in both FOG namings and read as one stream.
func TestProbeImage(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"d1p1.img": "ab", "d1p1.img.001": "cd", "d1p1.img.002": "e",
		"d1p2.img.000": "x", "d1p2.img.001": "y"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := imagedir.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for part, want := range map[int]string{1: "abcde", 2: "xy"} {
		im, err := imagedir.ProbeImage(ctx, f, 1, part)
		if err != nil || im == nil {
			t.Fatalf("partition %d: %v", part, err)
		}
		r := im.Open(ctx, f)
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil || string(b) != want || im.Size() != int64(len(want)) {
			t.Errorf("partition %d: %q %v", part, b, err)
		}
	}
	if im, err := imagedir.ProbeImage(ctx, f, 1, 3); im != nil || err != nil {
		t.Errorf("partition 3: %v %v", im, err)
	}
	if _, err := f.Open(ctx, "../etc/passwd"); err == nil {
		t.Error("a path outside the folder was opened")
	}
}
