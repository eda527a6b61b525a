package manifest_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/pkg/manifest"
	"github.com/imgcast/imgcast/pkg/restore/imagedir"
)

func randomBytes(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// folder writes a small image folder: metadata, a single-file image and a
// FOG-style split image whose pieces do not line up with chunks.
func folder(t testing.TB) (string, map[string][]byte) {
	dir := filepath.Join(t.TempDir(), "win11")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"d1.partitions": []byte("label: dos\n"),
		"d1.mbr":        randomBytes(1<<20, 1),
		"d1p1.img":      randomBytes(manifest.ChunkSize*2+123, 2),
		"d1p2.img":      randomBytes(3<<20, 3),
		"d1p2.img.001":  randomBytes(3<<20, 4),
		"d1p2.img.002":  randomBytes(1000, 5),
		"d1p3.img":      {},
		"d2.partitions": []byte("other disk\n"),
		"notes.txt":     []byte("not part of disk 1\n"),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, files
}

func keyPair(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey, string) {
	name := filepath.Join(t.TempDir(), "lab")
	pub, err := manifest.WriteKeyPair(name)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := manifest.LoadPrivateKey(name + ".key")
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(name + ".key"); st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v", st.Mode())
	}
	if _, err := manifest.WriteKeyPair(name); err == nil {
		t.Error("keygen overwrote an existing key")
	}
	return pub, priv, name
}

func TestSignLoadVerify(t *testing.T) {
	ctx := context.Background()
	dir, files := folder(t)
	pub, priv, name := keyPair(t)
	if loaded, err := manifest.LoadPublicKey(name + ".pub"); err != nil || !loaded.Equal(pub) {
		t.Fatalf("public key round trip: %v", err)
	}
	id := manifest.ImageID(dir + "/")
	if id != "win11" || manifest.ImageID("http://srv:8080/images/win11/") != "win11" {
		t.Fatalf("ImageID: %q", id)
	}
	m, err := manifest.SignFolder(ctx, dir, 1, id, priv)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range m.Files {
		names = append(names, f.Name)
	}
	if got := strings.Join(names, " "); got != "d1.mbr d1.partitions d1p1.img d1p2.img d1p2.img.001 d1p2.img.002 d1p3.img" {
		t.Errorf("files: %s", got)
	}
	if len(m.Streams) != 3 || strings.Join(m.Streams[1].Pieces, " ") != "d1p2.img d1p2.img.001 d1p2.img.002" ||
		len(m.Streams[0].Chunks) != 3 || len(m.Streams[1].Chunks) != 2 || len(m.Streams[2].Chunks) != 0 {
		t.Fatalf("streams: %+v", m.Streams)
	}
	f, _ := imagedir.Open(dir)
	got, err := manifest.Load(ctx, f, 1, "win11", pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.CheckFile("d1.mbr", files["d1.mbr"]); err != nil {
		t.Error(err)
	}
	if err := got.CheckFile("d1.mbr", append(bytes.Clone(files["d1.mbr"][:100]), 1)); !errors.Is(err, manifest.ErrManifest) {
		t.Errorf("altered d1.mbr: %v", err)
	}
	if err := got.CheckFile("d1.sha256", nil); !errors.Is(err, manifest.ErrManifest) {
		t.Errorf("unlisted file: %v", err)
	}

	// Every stream reads back through the verifier.
	for _, s := range got.Streams {
		var src bytes.Buffer
		for _, p := range s.Pieces {
			src.Write(files[p])
		}
		want := bytes.Clone(src.Bytes())
		r := s.NewReader(&src)
		out, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(out, want) {
			t.Errorf("%s: %v", s.Name, err)
		}
	}

	// Refusals.
	other, _, _ := func() (ed25519.PublicKey, ed25519.PrivateKey, error) { return ed25519.GenerateKey(nil) }()
	if _, err := manifest.Load(ctx, f, 1, "win11", other); !errors.Is(err, manifest.ErrSignature) {
		t.Errorf("another key: %v", err)
	}
	if _, err := manifest.Load(ctx, f, 1, "win10", pub); !errors.Is(err, manifest.ErrManifest) || !strings.Contains(err.Error(), "win11") {
		t.Errorf("another image id: %v", err)
	}
	if _, err := manifest.Load(ctx, f, 2, "win11", pub); !errors.Is(err, manifest.ErrManifest) {
		t.Errorf("no d2.manifest: %v", err)
	}
	mpath := filepath.Join(dir, manifest.FileName(1))
	b, _ := os.ReadFile(mpath)
	altered := bytes.Replace(b, []byte("image win11"), []byte("image win12"), 1)
	os.WriteFile(mpath, altered, 0o644)
	if _, err := manifest.Load(ctx, f, 1, "win12", pub); !errors.Is(err, manifest.ErrSignature) {
		t.Errorf("altered manifest: %v", err)
	}
	os.Remove(mpath)
	if _, err := manifest.Load(ctx, f, 1, "win11", pub); !errors.Is(err, manifest.ErrManifest) || !strings.Contains(err.Error(), "imgcast sign") {
		t.Errorf("no manifest: %v", err)
	}
}

func TestVerifierRefuses(t *testing.T) {
	data := randomBytes(manifest.ChunkSize*3+5, 7)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "d1p1.img"), data, 0o644)
	m, err := manifest.Build(context.Background(), dir, 1, "x")
	if err != nil {
		t.Fatal(err)
	}
	s := &m.Streams[0]
	read := func(src []byte) ([]byte, error) {
		r := s.NewReader(bytes.NewReader(src))
		defer r.Close()
		return io.ReadAll(r)
	}
	for _, tc := range []struct {
		name      string
		src       []byte
		delivered int // bytes that may come out before the error
		unexpEOF  bool
	}{
		{"flipped byte in chunk 2", func() []byte { b := bytes.Clone(data); b[2*manifest.ChunkSize+77] ^= 1; return b }(), 2 * manifest.ChunkSize, false},
		{"flipped byte in chunk 0", func() []byte { b := bytes.Clone(data); b[0] ^= 1; return b }(), 0, false},
		{"injected bytes", append(append(bytes.Clone(data[:manifest.ChunkSize]), 'X'), data[manifest.ChunkSize:]...), manifest.ChunkSize, false},
		{"appended bytes", append(bytes.Clone(data), 0), len(data), false},
		{"truncated mid-chunk", data[:manifest.ChunkSize+10], manifest.ChunkSize, true},
		{"truncated at a chunk boundary", data[:manifest.ChunkSize], manifest.ChunkSize, true},
		{"empty", nil, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := read(tc.src)
			if err == nil {
				t.Fatal("no error")
			}
			if len(out) > tc.delivered || !bytes.Equal(out, data[:len(out)]) {
				t.Errorf("%d bytes delivered (at most %d verified ones allowed)", len(out), tc.delivered)
			}
			if tc.unexpEOF != errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("error %v", err)
			}
			if !tc.unexpEOF && !errors.Is(err, manifest.ErrChunk) {
				t.Errorf("error %v is not ErrChunk", err)
			}
		})
	}
}

func TestParseStrict(t *testing.T) {
	dir, _ := folder(t)
	m, err := manifest.Build(context.Background(), dir, 1, "win11")
	if err != nil {
		t.Fatal(err)
	}
	good, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := manifest.Parse(good); err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(good), "\n")
	edit := func(f func([]string) []string) []byte {
		return []byte(strings.Join(f(append([]string(nil), lines...)), ""))
	}
	fileLine := 4 // first "file" line
	for name, b := range map[string][]byte{
		"version 2":          bytes.Replace(good, []byte("imgcast-manifest 1"), []byte("imgcast-manifest 2"), 1),
		"CRLF":               bytes.ReplaceAll(good, []byte("\n"), []byte("\r\n")),
		"no final newline":   good[:len(good)-1],
		"after end":          append(bytes.Clone(good), "x\n"...),
		"double space":       bytes.Replace(good, []byte("image win11"), []byte("image  win11"), 1),
		"upper-case hex":     edit(func(l []string) []string { l[fileLine] = strings.ToUpper(l[fileLine][:5]) + l[fileLine][5:]; return l }),
		"leading zero size":  bytes.Replace(good, []byte("d1.partitions 11 "), []byte("d1.partitions 011 "), 1),
		"files out of order": edit(func(l []string) []string { l[fileLine], l[fileLine+1] = l[fileLine+1], l[fileLine]; return l }),
		"duplicate file":     edit(func(l []string) []string { l[fileLine+1] = l[fileLine]; return l }),
		"chunk removed": edit(func(l []string) []string {
			for i := range l {
				if strings.HasPrefix(l[i], "chunk ") {
					return append(l[:i], l[i+1:]...)
				}
			}
			return nil
		}),
		"path in name": bytes.Replace(good, []byte("file d1.mbr"), []byte("file ../d1.mbr"), 1),
		"chunk size":   bytes.Replace(good, []byte("chunk-size 4194304"), []byte("chunk-size 1048576"), 1),
		"disk 0":       bytes.Replace(good, []byte("disk 1\n"), []byte("disk 0\n"), 1),
		"empty":        nil,
	} {
		if _, err := manifest.Parse(b); !errors.Is(err, manifest.ErrManifest) {
			t.Errorf("%s: accepted (%v)", name, err)
		}
	}
}

func TestKeyFiles(t *testing.T) {
	_, _, name := keyPair(t)
	b, _ := os.ReadFile(name + ".pub")
	for _, bad := range [][]byte{
		bytes.TrimSuffix(b, []byte("\n")),
		append(bytes.Clone(b), '\n'),
		bytes.Replace(b, []byte("public"), []byte("private"), 1),
		b[:len(b)-3],
	} {
		if _, err := manifest.ParsePublicKey(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if _, err := manifest.ParsePrivateKey(b); err == nil {
		t.Error("a public key parsed as a private one")
	}
}

func FuzzParse(f *testing.F) {
	dir, _ := folder(f)
	m, err := manifest.Build(context.Background(), dir, 1, "win11")
	if err != nil {
		f.Fatal(err)
	}
	good, _ := m.Marshal()
	f.Add(good)
	f.Add([]byte("imgcast-manifest 1\nimage a\ndisk 1\nchunk-size 4194304\nend\n"))
	f.Add([]byte("imgcast-manifest 1\nimage a\ndisk 1\nchunk-size 4194304\nfile a 1 " + strings.Repeat("0", 64) + "\nstream s 1 a\nchunk " + strings.Repeat("0", 64) + "\nend\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := manifest.Parse(b)
		if err != nil {
			if !errors.Is(err, manifest.ErrManifest) {
				t.Fatalf("error %v is not ErrManifest", err)
			}
			return
		}
		// Canonical: one encoding per manifest.
		out, err := m.Marshal()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("accepted a non-canonical manifest (%v):\n%q\n%q", err, b, out)
		}
	})
}

func TestBuiltinKey(t *testing.T) {
	root := t.TempDir()
	if k, err := manifest.LoadBuiltinKey(root); k != nil || err != nil {
		t.Fatalf("no key: %v %v", k, err)
	}
	pub, _, name := keyPair(t)
	os.MkdirAll(filepath.Join(root, "etc/imgcast"), 0o755)
	b, _ := os.ReadFile(name + ".pub")
	os.WriteFile(filepath.Join(root, manifest.BuiltinKeyPath), b, 0o644)
	if k, err := manifest.LoadBuiltinKey(root); err != nil || !k.Equal(pub) {
		t.Fatalf("built-in key: %v", err)
	}
	os.WriteFile(filepath.Join(root, manifest.BuiltinKeyPath), []byte("garbage\n"), 0o644)
	if k, err := manifest.LoadBuiltinKey(root); err == nil || k != nil {
		t.Fatal("a malformed built-in key was ignored")
	}
}
