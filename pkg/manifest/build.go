package manifest

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/imgcast/imgcast/pkg/restore/imagedir"
)

// ImageID is the id an image folder gets by default: the last element of
// its path or URL (/images/win11/ → win11).
func ImageID(location string) string {
	if u, err := url.Parse(location); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		location = u.Path
	}
	return path.Base(strings.TrimRight(filepath.ToSlash(location), "/"))
}

// Build computes the manifest of disk n of the local folder dir: every
// regular file named dN.* or dNp* (but the manifest and its signature),
// and the chunks of every partition image dNpM.img (split or not).
func Build(ctx context.Context, dir string, disk int, id string) (*Manifest, error) {
	if !validID(id) {
		return nil, fmt.Errorf("image id %q is not 1–%d printable characters without spaces", id, maxIDLen)
	}
	if disk < 1 || disk > maxDisk {
		return nil, fmt.Errorf("disk %d is not 1–%d", disk, maxDisk)
	}
	folder, err := imagedir.Open(dir)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	m := &Manifest{ImageID: id, Disk: disk}
	prefix, partPrefix := fmt.Sprintf("d%d.", disk), fmt.Sprintf("d%dp", disk)
	partImage := regexp.MustCompile(fmt.Sprintf(`^d%dp([0-9]+)\.img(\.[0-9]{3})?$`, disk))
	parts := map[int]bool{}
	files := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, prefix) && !strings.HasPrefix(name, partPrefix) ||
			name == FileName(disk) || name == SignatureName(disk) || !e.Type().IsRegular() {
			continue
		}
		if !validName(name) {
			return nil, fmt.Errorf("%s: the name has characters a manifest cannot hold", name)
		}
		files[name] = true
		if sm := partImage.FindStringSubmatch(name); sm != nil {
			n, err := strconv.Atoi(sm[1])
			if err == nil && n > 0 {
				parts[n] = true
			}
		}
	}
	inStream := map[string]bool{}
	sums := map[string]File{}
	var numbers []int
	for n := range parts {
		numbers = append(numbers, n)
	}
	sort.Ints(numbers)
	for _, n := range numbers {
		im, err := imagedir.ProbeImage(ctx, folder, disk, n)
		if err != nil {
			return nil, err
		}
		if im == nil {
			continue
		}
		s, fileSums, err := hashStream(ctx, dir, im)
		if err != nil {
			return nil, err
		}
		m.Streams = append(m.Streams, *s)
		for _, f := range fileSums {
			sums[f.Name] = f
			inStream[f.Name] = true
		}
	}
	for name := range files {
		if inStream[name] {
			continue
		}
		f, err := hashFile(dir, name)
		if err != nil {
			return nil, err
		}
		sums[name] = f
	}
	for _, f := range sums {
		m.Files = append(m.Files, f)
	}
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Name < m.Files[j].Name })
	sort.Slice(m.Streams, func(i, j int) bool { return m.Streams[i].Name < m.Streams[j].Name })
	return m, nil
}

func hashFile(dir, name string) (File, error) {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return File{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return File{}, fmt.Errorf("reading %s: %w", name, err)
	}
	out := File{Name: name, Size: n}
	h.Sum(out.SHA256[:0])
	return out, nil
}

// hashStream reads the pieces of im once, hashing each file and each
// chunk of their concatenation.
func hashStream(ctx context.Context, dir string, im *imagedir.Image) (*Stream, []File, error) {
	s := &Stream{Name: im.Name}
	cw := &chunker{h: sha256.New()}
	var files []File
	for _, pc := range im.Pieces {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		f, err := os.Open(filepath.Join(dir, pc.Name))
		if err != nil {
			return nil, nil, err
		}
		fh := sha256.New()
		n, err := io.Copy(io.MultiWriter(fh, cw), f)
		f.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("reading %s: %w", pc.Name, err)
		}
		e := File{Name: pc.Name, Size: n}
		fh.Sum(e.SHA256[:0])
		files = append(files, e)
		s.Pieces = append(s.Pieces, pc.Name)
		s.Size += n
	}
	s.Chunks = cw.finish()
	return s, files, nil
}

// chunker hashes each ChunkSize bytes written to it.
type chunker struct {
	h      hash.Hash
	n      int64
	chunks []Digest
}

func (c *chunker) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		k := min(int64(len(p)), ChunkSize-c.n)
		c.h.Write(p[:k])
		c.n += k
		p = p[k:]
		if c.n == ChunkSize {
			c.close()
		}
	}
	return total, nil
}

func (c *chunker) close() {
	var d Digest
	c.h.Sum(d[:0])
	c.chunks = append(c.chunks, d)
	c.h.Reset()
	c.n = 0
}

func (c *chunker) finish() []Digest {
	if c.n > 0 {
		c.close()
	}
	return c.chunks
}

// SignFolder builds the manifest of disk n of dir, signs it and writes
// dN.manifest and dN.manifest.sig (each through a temporary file and a
// rename). It returns the manifest.
func SignFolder(ctx context.Context, dir string, disk int, id string, key ed25519.PrivateKey) (*Manifest, error) {
	m, err := Build(ctx, dir, disk, id)
	if err != nil {
		return nil, err
	}
	b, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	if err := writeAtomic(filepath.Join(dir, FileName(disk)), b); err != nil {
		return nil, err
	}
	if err := writeAtomic(filepath.Join(dir, SignatureName(disk)), Sign(b, key)); err != nil {
		return nil, err
	}
	return m, nil
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// Load reads dN.manifest and its signature from folder, verifies the
// signature with key and checks that the manifest names image id and disk.
// A folder without a manifest is an error: with a key, one is required.
func Load(ctx context.Context, folder imagedir.Folder, disk int, id string, key ed25519.PublicKey) (*Manifest, error) {
	b, err := imagedir.ReadFile(ctx, folder, FileName(disk), MaxSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s has no %s, and a public key is set so a signed manifest is required (sign the folder with imgcast sign)",
			ErrManifest, folder, FileName(disk))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	sig, err := imagedir.ReadFile(ctx, folder, SignatureName(disk), 1024)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrManifest, SignatureName(disk), err)
	}
	m, err := Verify(b, sig, key)
	if err != nil {
		return nil, err
	}
	if m.ImageID != id {
		return nil, fmt.Errorf("%w: the signed manifest is of image %q, not %q (a manifest copied from another image, or the folder was renamed: sign it again)",
			ErrManifest, m.ImageID, id)
	}
	if m.Disk != disk {
		return nil, fmt.Errorf("%w: the signed manifest is of disk %d, not %d", ErrManifest, m.Disk, disk)
	}
	return m, nil
}
