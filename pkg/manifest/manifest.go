// Package manifest describes an image folder in a signed, canonical text
// file, so a client holding the server's Ed25519 public key can check every
// byte it restores before it uses it.
//
// dN.manifest covers disk N of a FOG-style folder: the image id (which image
// this is, so a manifest copied from another image is refused), the size and
// SHA-256 of every dN.* and dNp* file (dN.partitions, dN.mbr, each piece of
// each partition image), and for every partition image the SHA-256 of each
// 4 MiB chunk of its stream as stored: the pieces of a split image
// (dNpM.img or dNpM.img.000, then .001, …) concatenated in order, still
// compressed. Chunk boundaries run across piece boundaries; the last chunk
// may be short. A FOGMC1 header that a multicast server puts in front of a
// stream is not part of the stream: receivers strip it before verification.
//
// dN.manifest.sig holds the Ed25519 signature over the exact bytes of
// dN.manifest. The format, version 1:
//
//	imgcast-manifest 1
//	image <id>
//	disk <N>
//	chunk-size 4194304
//	file <name> <size> <sha256>          one per file, names ascending
//	stream <name> <size> <piece>...      one per partition image, names ascending
//	chunk <sha256>                       ceil(size/chunk-size) lines after each stream
//	end
//
// Lines end in a single LF; fields are separated by one space; numbers are
// decimal without leading zeros; digests are 64 lower-case hex digits. Parse
// accepts only this canonical form, so a manifest has exactly one encoding.
package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

const (
	// Version is the format version this package writes and reads.
	Version = 1
	// ChunkSize is the size of the verified chunks of a partition image.
	ChunkSize = 4 << 20
	// MaxSize bounds a manifest file: ~470 000 chunks, about 1.8 TiB of
	// compressed images.
	MaxSize = 32 << 20

	magicLine = "imgcast-manifest 1"
	maxIDLen  = 200
	maxDisk   = 99
)

// FileName is the manifest of disk n; SignatureName its signature.
func FileName(disk int) string      { return fmt.Sprintf("d%d.manifest", disk) }
func SignatureName(disk int) string { return FileName(disk) + ".sig" }

// ErrManifest marks every error about a manifest: missing, malformed,
// unsigned, of another image, or not matching the folder.
var ErrManifest = errors.New("image manifest")

// Digest is a SHA-256.
type Digest [sha256.Size]byte

func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// File is one file of the folder.
type File struct {
	Name   string
	Size   int64
	SHA256 Digest
}

// Stream is one partition image: its pieces in order and the digest of
// each ChunkSize bytes of their concatenation.
type Stream struct {
	Name   string
	Size   int64
	Pieces []string
	Chunks []Digest
}

// Manifest is a parsed dN.manifest.
type Manifest struct {
	ImageID string
	Disk    int
	Files   []File   // ascending by name
	Streams []Stream // ascending by name
}

// File returns the entry for name.
func (m *Manifest) File(name string) (File, bool) {
	i := sort.Search(len(m.Files), func(i int) bool { return m.Files[i].Name >= name })
	if i < len(m.Files) && m.Files[i].Name == name {
		return m.Files[i], true
	}
	return File{}, false
}

// Stream returns the partition image name (dNpM.img).
func (m *Manifest) Stream(name string) (*Stream, bool) {
	i := sort.Search(len(m.Streams), func(i int) bool { return m.Streams[i].Name >= name })
	if i < len(m.Streams) && m.Streams[i].Name == name {
		return &m.Streams[i], true
	}
	return nil, false
}

// CheckFile checks the whole content of a small file against the manifest.
func (m *Manifest) CheckFile(name string, b []byte) error {
	f, ok := m.File(name)
	if !ok {
		return fmt.Errorf("%w: %s is not in the signed manifest", ErrManifest, name)
	}
	if int64(len(b)) != f.Size {
		return fmt.Errorf("%w: %s is %d bytes, the signed manifest says %d", ErrManifest, name, len(b), f.Size)
	}
	if sha256.Sum256(b) != f.SHA256 {
		return fmt.Errorf("%w: %s does not match its SHA-256 in the signed manifest", ErrManifest, name)
	}
	return nil
}

// Marshal encodes m canonically. It fails on a manifest Parse would refuse.
func (m *Manifest) Marshal() ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\nimage %s\ndisk %d\nchunk-size %d\n", magicLine, m.ImageID, m.Disk, ChunkSize)
	for _, f := range m.Files {
		fmt.Fprintf(&b, "file %s %d %s\n", f.Name, f.Size, f.SHA256)
	}
	for _, s := range m.Streams {
		fmt.Fprintf(&b, "stream %s %d %s\n", s.Name, s.Size, strings.Join(s.Pieces, " "))
		for _, c := range s.Chunks {
			fmt.Fprintf(&b, "chunk %s\n", c)
		}
	}
	b.WriteString("end\n")
	if _, err := Parse(b.Bytes()); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Parse reads a manifest in its canonical form and checks it is
// consistent: names valid and ascending, every piece a listed file, each
// stream's size the sum of its pieces and its chunk count the one its size
// needs.
func Parse(b []byte) (*Manifest, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrManifest, MaxSize)
	}
	p := &parser{rest: b}
	m := &Manifest{}
	if err := p.expect(magicLine); err != nil {
		return nil, err
	}
	f, err := p.fields("image", 1)
	if err != nil {
		return nil, err
	}
	if !validID(f[0]) {
		return nil, p.errorf("image id %q is not 1–%d printable characters without spaces", f[0], maxIDLen)
	}
	m.ImageID = f[0]
	if f, err = p.fields("disk", 1); err != nil {
		return nil, err
	}
	d, err := p.number(f[0])
	if err != nil || d < 1 || d > maxDisk {
		return nil, p.errorf("disk %q is not 1–%d", f[0], maxDisk)
	}
	m.Disk = int(d)
	if err := p.expect(fmt.Sprintf("chunk-size %d", ChunkSize)); err != nil {
		return nil, err
	}

	sizes := map[string]int64{}
	for p.peek("file ") {
		f, err := p.fields("file", 3)
		if err != nil {
			return nil, err
		}
		e := File{Name: f[0]}
		if err := p.name(e.Name); err != nil {
			return nil, err
		}
		if n := len(m.Files); n > 0 && m.Files[n-1].Name >= e.Name {
			return nil, p.errorf("file %s is not after %s (names must be ascending and unique)", e.Name, m.Files[n-1].Name)
		}
		if e.Size, err = p.number(f[1]); err != nil {
			return nil, err
		}
		if e.SHA256, err = p.digest(f[2]); err != nil {
			return nil, err
		}
		m.Files = append(m.Files, e)
		sizes[e.Name] = e.Size
	}
	used := map[string]bool{}
	for p.peek("stream ") {
		line, err := p.line()
		if err != nil {
			return nil, err
		}
		f := strings.Split(line, " ")
		if len(f) < 4 {
			return nil, p.errorf("want \"stream NAME SIZE PIECE...\"")
		}
		s := Stream{Name: f[1], Pieces: f[3:]}
		if err := p.name(s.Name); err != nil {
			return nil, err
		}
		if n := len(m.Streams); n > 0 && m.Streams[n-1].Name >= s.Name {
			return nil, p.errorf("stream %s is not after %s (names must be ascending and unique)", s.Name, m.Streams[n-1].Name)
		}
		if s.Size, err = p.number(f[2]); err != nil {
			return nil, err
		}
		var sum int64
		for _, pc := range s.Pieces {
			size, ok := sizes[pc]
			if !ok {
				return nil, p.errorf("piece %s of stream %s is not a listed file", pc, s.Name)
			}
			if used[pc] {
				return nil, p.errorf("piece %s is used twice", pc)
			}
			used[pc] = true
			sum += size // every size < 2^62, at most MaxSize/8 pieces: no overflow
		}
		if sum != s.Size {
			return nil, p.errorf("stream %s is %d bytes but its pieces add up to %d", s.Name, s.Size, sum)
		}
		n := (s.Size + ChunkSize - 1) / ChunkSize
		if n > int64(len(p.rest))/71+1 {
			return nil, p.errorf("stream %s needs %d chunk lines; the file is too short for them", s.Name, n)
		}
		s.Chunks = make([]Digest, n)
		for i := range s.Chunks {
			f, err := p.fields("chunk", 1)
			if err != nil {
				return nil, err
			}
			if s.Chunks[i], err = p.digest(f[0]); err != nil {
				return nil, err
			}
		}
		m.Streams = append(m.Streams, s)
	}
	if err := p.expect("end"); err != nil {
		return nil, err
	}
	if len(p.rest) != 0 {
		return nil, p.errorf("data after \"end\"")
	}
	return m, nil
}

type parser struct {
	rest []byte
	n    int // line number of the last line read
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: line %d: %s", ErrManifest, p.n, fmt.Sprintf(format, args...))
}

func (p *parser) line() (string, error) {
	i := bytes.IndexByte(p.rest, '\n')
	p.n++
	if i < 0 {
		return "", p.errorf("unterminated line (or the file is cut short)")
	}
	l := string(p.rest[:i])
	p.rest = p.rest[i+1:]
	return l, nil
}

func (p *parser) peek(prefix string) bool { return bytes.HasPrefix(p.rest, []byte(prefix)) }

func (p *parser) expect(want string) error {
	l, err := p.line()
	if err != nil {
		return err
	}
	if l != want {
		return p.errorf("want %q", want)
	}
	return nil
}

// fields reads "key f1 … fn" with exactly n fields.
func (p *parser) fields(key string, n int) ([]string, error) {
	l, err := p.line()
	if err != nil {
		return nil, err
	}
	f := strings.Split(l, " ")
	if len(f) != n+1 || f[0] != key {
		return nil, p.errorf("want %q with %d fields", key, n)
	}
	for _, s := range f[1:] {
		if s == "" {
			return nil, p.errorf("empty field")
		}
	}
	return f[1:], nil
}

func (p *parser) number(s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v >= 1<<62 || strconv.FormatInt(v, 10) != s {
		return 0, p.errorf("%q is not a canonical size", s)
	}
	return v, nil
}

func (p *parser) digest(s string) (Digest, error) {
	var d Digest
	if len(s) != 64 || strings.ToLower(s) != s {
		return d, p.errorf("%q is not 64 lower-case hex digits", s)
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, p.errorf("%q is not 64 lower-case hex digits", s)
	}
	return d, nil
}

func (p *parser) name(s string) error {
	if !validName(s) {
		return p.errorf("%q is not a plain file name", s)
	}
	return nil
}

// validName accepts the file names of an image folder: letters, digits,
// '.', '_', '-', at most 255 bytes, not "." or "..".
func validName(s string) bool {
	if s == "" || len(s) > 255 || s == "." || s == ".." {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func validID(s string) bool {
	if s == "" || len(s) > maxIDLen {
		return false
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7F {
			return false
		}
	}
	return true
}
