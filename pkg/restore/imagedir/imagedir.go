// Package imagedir reads FOG-style image folders, local or over HTTP: the
// small metadata files (dN.partitions, dN.mbr, dN.sha256) and the
// partition images dNpM.img, which may be split into pieces (.000 or the
// bare name first, then .001, .002, …) that form one stream.
//
// Over HTTP, a download whose connection breaks is resumed with a Range
// request where the server allows it (otherwise the bytes already
// delivered are skipped on a fresh GET); a stalled connection is cut after
// an idle timeout, and when the retries run out the error says where and
// why.
package imagedir

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/imgcast/imgcast/pkg/layout"
)

// Folder is an image folder.
type Folder interface {
	// Open streams a file from its first byte.
	Open(ctx context.Context, name string) (io.ReadCloser, error)
	// Size is a file's length (-1 if the server does not say); an error
	// wrapping fs.ErrNotExist when there is no such file.
	Size(ctx context.Context, name string) (int64, error)
	// String names the folder in messages.
	String() string
}

// Open returns the folder at location: an http:// or https:// URL or a
// local directory.
func Open(location string) (Folder, error) {
	if strings.HasPrefix(location, "http://") || strings.HasPrefix(location, "https://") {
		return NewHTTP(location, HTTPOptions{})
	}
	st, err := os.Stat(location)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", location)
	}
	return localFolder(location), nil
}

func checkName(name string) error {
	if name == "" || strings.ContainsAny(name, "/\\") || name == "." || name == ".." {
		return fmt.Errorf("bad file name %q in an image folder", name)
	}
	return nil
}

type localFolder string

func (d localFolder) String() string { return string(d) }

func (d localFolder) Open(_ context.Context, name string) (io.ReadCloser, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	return os.Open(filepath.Join(string(d), name))
}

func (d localFolder) Size(_ context.Context, name string) (int64, error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	st, err := os.Stat(filepath.Join(string(d), name))
	if err != nil {
		return 0, err
	}
	if !st.Mode().IsRegular() {
		return 0, fmt.Errorf("%s is not a regular file", name)
	}
	return st.Size(), nil
}

// ReadFile reads a small metadata file whole, refusing one above max bytes.
func ReadFile(ctx context.Context, f Folder, name string, max int64) ([]byte, error) {
	r, err := f.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, max)
	}
	return b, nil
}

// Piece is one file of a (possibly split) image.
type Piece struct {
	Name string
	Size int64 // -1 if unknown
}

// Image is the image of one partition: one or more pieces.
type Image struct {
	Name   string // dNpM.img
	Pieces []Piece
}

// Size is the total size of the pieces, -1 if any is unknown.
func (im *Image) Size() int64 {
	var n int64
	for _, p := range im.Pieces {
		if p.Size < 0 {
			return -1
		}
		n += p.Size
	}
	return n
}

// ProbeImage looks for the image of partition part of disk disk by asking
// the folder for each name (over HTTP: HEAD requests), in the order and
// with the names package layout defines: dNpM.img.000 or dNpM.img, then
// .001, .002, … It returns nil and no error when there is none.
func ProbeImage(ctx context.Context, f Folder, disk, part int) (*Image, error) {
	files, err := layout.Probe(ctx, f.Size, disk, part)
	if err != nil || files == nil {
		return nil, err
	}
	im := &Image{Name: layout.ImageName(disk, part)}
	for _, p := range files {
		im.Pieces = append(im.Pieces, Piece{p.Name, p.Size})
	}
	return im, nil
}

// Open streams the pieces one after the other, opening each when the one
// before it is done.
func (im *Image) Open(ctx context.Context, f Folder) io.ReadCloser {
	return &concat{ctx: ctx, f: f, pieces: im.Pieces}
}

type concat struct {
	ctx    context.Context
	f      Folder
	pieces []Piece
	cur    io.ReadCloser
	n      int64
}

func (c *concat) Read(p []byte) (int, error) {
	for {
		if c.cur == nil {
			if len(c.pieces) == 0 {
				return 0, io.EOF
			}
			r, err := c.f.Open(c.ctx, c.pieces[0].Name)
			if err != nil {
				return 0, err
			}
			c.cur, c.n = r, 0
		}
		n, err := c.cur.Read(p)
		c.n += int64(n)
		if err == io.EOF {
			if want := c.pieces[0].Size; want >= 0 && c.n != want {
				return n, fmt.Errorf("%s: read %d bytes, expected %d", c.pieces[0].Name, c.n, want)
			}
			c.cur.Close()
			c.cur = nil
			c.pieces = c.pieces[1:]
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *concat) Close() error {
	if c.cur != nil {
		return c.cur.Close()
	}
	return nil
}

// ParseSHA256Sums reads a file in `sha256sum` format ("<hex>  <name>" or
// "<hex> *<name>") into a map from base name to digest.
func ParseSHA256Sums(b []byte) (map[string][]byte, error) {
	out := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		sum, name, ok := strings.Cut(text, " ")
		name = strings.TrimPrefix(strings.TrimLeft(name, " "), "*")
		d, err := hex.DecodeString(sum)
		if !ok || err != nil || len(d) != 32 || name == "" {
			return nil, fmt.Errorf("sha256 list line %d: not \"<64 hex digits>  <name>\"", line)
		}
		name = filepath.Base(name)
		if checkName(name) != nil {
			return nil, fmt.Errorf("sha256 list line %d: %q is not a file name", line, name)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("sha256 list line %d: %s listed twice", line, name)
		}
		out[name] = d
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
