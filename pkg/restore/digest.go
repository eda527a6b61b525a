package restore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
)

// Segment is one piece of an input stream with the SHA-256 it must have.
// The pieces of a split image (d1p1.img, d1p1.img.001, …) follow each
// other in the stream that carries them.
type Segment struct {
	Name   string
	Size   int64 // bytes; -1 for "up to the end of the stream" (last piece only)
	SHA256 []byte
}

// DigestError is a SHA-256 mismatch or a stream that does not add up to
// the expected pieces.
type DigestError struct {
	Name      string
	Want, Got string
	Detail    string
}

func (e *DigestError) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("%s: %s", e.Name, e.Detail)
	}
	return fmt.Sprintf("%s: SHA-256 of the bytes received is %s, d1.sha256 says %s", e.Name, e.Got, e.Want)
}

// Is makes errors.Is(err, ErrDigest) true.
func (e *DigestError) Is(target error) bool { return target == ErrDigest }

// digester hashes the stream as it passes and checks each piece as soon
// as it is complete; Write fails at the first mismatch so nothing after it
// is decoded.
type digester struct {
	segs []Segment
	i    int
	h    hash.Hash
	n    int64 // bytes of segment i seen
	err  error
}

func newDigester(segs []Segment) (*digester, error) {
	for i, s := range segs {
		if len(s.SHA256) != sha256.Size {
			return nil, fmt.Errorf("%s: expected digest has %d bytes", s.Name, len(s.SHA256))
		}
		if s.Size < 0 && i != len(segs)-1 {
			return nil, fmt.Errorf("%s: only the last piece may have an unknown size", s.Name)
		}
	}
	return &digester{segs: segs, h: sha256.New()}, nil
}

func (d *digester) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		if d.err != nil {
			return 0, d.err
		}
		if d.i >= len(d.segs) {
			d.err = &DigestError{Name: d.segs[len(d.segs)-1].Name, Detail: "the stream is longer than the pieces d1.sha256 lists"}
			return 0, d.err
		}
		s := d.segs[d.i]
		k := int64(len(p))
		if s.Size >= 0 {
			k = min(k, s.Size-d.n)
		}
		d.h.Write(p[:k])
		d.n += k
		p = p[k:]
		if s.Size >= 0 && d.n == s.Size {
			d.close()
		}
	}
	return total, nil
}

// close checks the current piece and moves to the next.
func (d *digester) close() {
	s := d.segs[d.i]
	if got := d.h.Sum(nil); !bytes.Equal(got, s.SHA256) {
		d.err = &DigestError{Name: s.Name, Want: hex.EncodeToString(s.SHA256), Got: hex.EncodeToString(got)}
	}
	d.i++
	d.n = 0
	d.h.Reset()
}

// finish checks the end of the stream.
func (d *digester) finish() error {
	if d.err != nil {
		return d.err
	}
	if d.i < len(d.segs) && d.segs[d.i].Size < 0 {
		d.close()
	}
	if d.err != nil {
		return d.err
	}
	if d.i < len(d.segs) {
		s := d.segs[d.i]
		return &DigestError{Name: s.Name, Detail: fmt.Sprintf("the stream ended after %d of its %d bytes", d.n, s.Size)}
	}
	return nil
}
