// Package fogmc reads and writes the 128-byte record that FOG 1.6 servers put
// in front of every multicast stream (FOS ADR-0018): "FOGMC1 ", the id of the
// image file the stream carries left-aligned and space-padded to 120 bytes,
// and "\n". A receiver that checks the id refuses a stream meant for another
// partition before a single byte of it reaches the disk.
package fogmc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

const (
	// HeaderSize is the size of a FOGMC1 record. The width belongs to the
	// version: a different width comes with a different magic.
	HeaderSize = 128
	// Magic opens every FOGMC1 record.
	Magic = "FOGMC1"
	// MaxIDLen is the room for the id between "FOGMC1 " and the newline.
	MaxIDLen = HeaderSize - len(Magic) - 2

	// family is the part of the magic shared by every version, so a
	// record of another version is recognised and named, not mistaken for
	// image data.
	family = "FOGMC"
)

// ErrNoHeader is returned by Parse for bytes that do not start with "FOGMC".
var ErrNoHeader = errors.New("not a FOGMC stream header")

// MismatchError says that a stream names another image file than the one
// the receiver expected: the client is on the wrong stream.
type MismatchError struct {
	Want, Got string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("stream header names %q but %q was expected: this receiver is on another partition's stream (out of step with the sender chain); nothing was written", e.Got, e.Want)
}

// Format returns the 128-byte record naming id.
func Format(id string) ([]byte, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	b := make([]byte, 0, HeaderSize)
	b = append(b, Magic...)
	b = append(b, ' ')
	b = append(b, id...)
	b = append(b, bytes.Repeat([]byte{' '}, MaxIDLen-len(id))...)
	b = append(b, '\n')
	return b, nil
}

func checkID(id string) error {
	switch {
	case id == "":
		return errors.New("stream id is empty")
	case len(id) > MaxIDLen:
		return fmt.Errorf("stream id %q is longer than %d bytes", id, MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c >= 0x7f || c == '/' {
			return fmt.Errorf("stream id %q contains byte %#x (ids are file names without spaces, slashes or control bytes)", id, c)
		}
	}
	return nil
}

// Parse returns the id named by a record. It returns ErrNoHeader when b does
// not start with "FOGMC", and a descriptive error for a record of another
// version or a malformed one.
func Parse(b []byte) (string, error) {
	if !bytes.HasPrefix(b, []byte(family)) {
		return "", ErrNoHeader
	}
	if len(b) < len(Magic) || string(b[:len(Magic)]) != Magic {
		v := b[:min(len(b), len(Magic))]
		return "", fmt.Errorf("stream header version %q is not supported (this client reads %s)", v, Magic)
	}
	if len(b) != HeaderSize {
		return "", fmt.Errorf("%s stream header is %d bytes, want %d", Magic, len(b), HeaderSize)
	}
	if b[len(Magic)] != ' ' || b[HeaderSize-1] != '\n' {
		return "", fmt.Errorf("malformed %s stream header %q", Magic, b)
	}
	field := b[len(Magic)+1 : HeaderSize-1]
	id := string(bytes.TrimRight(field, " "))
	if err := checkID(id); err != nil {
		return "", fmt.Errorf("malformed %s stream header: %w", Magic, err)
	}
	return id, nil
}

// IDForFile maps the name of an image file to the id of the stream that
// carries it, by FOG's rule: split pieces ("d1p1.img.000", "d1p1.img.001",
// "sys.img.002") are named by their shared stem ("d1p1.img", "sys.img"),
// except legacy "rec.img.NNN", which are one partition each and keep their
// full name. Other names (flat "d1p2.img") are used verbatim. Directories
// are dropped.
func IDForFile(name string) string {
	name = path.Base(name)
	stem, ok := SplitStem(name)
	if !ok || stem == "rec.img" {
		return name
	}
	return stem
}

// SplitStem returns "x.img" for a split piece named "x.img.NNN" (three
// digits, as `split -a 3 -d` names them), and false for any other name.
func SplitStem(name string) (string, bool) {
	i := strings.LastIndexByte(name, '.')
	if i <= 0 || len(name)-i-1 != 3 {
		return "", false
	}
	for _, c := range name[i+1:] {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return name[:i], true
}

// Strip reads the start of a stream. If it is a FOGMC1 record naming want,
// Strip returns a reader of the rest of the stream and true. If it names
// another file, Strip returns a *MismatchError. If the stream does not start
// with a record, the returned reader yields every byte of the stream
// unchanged and the bool is false, so streams from servers that send no
// header still work; callers that require one check the bool.
func Strip(r io.Reader, want string) (io.Reader, bool, error) {
	buf := make([]byte, HeaderSize)
	n, err := io.ReadFull(r, buf)
	buf = buf[:n]
	switch {
	case err == nil:
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		if bytes.HasPrefix(buf, []byte(family)) {
			return nil, false, fmt.Errorf("stream ended after %d bytes, inside its %s header", n, Magic)
		}
		return bytes.NewReader(buf), false, nil
	default:
		return nil, false, fmt.Errorf("reading stream header: %w", err)
	}
	id, perr := Parse(buf)
	if errors.Is(perr, ErrNoHeader) {
		return io.MultiReader(bytes.NewReader(buf), r), false, nil
	}
	if perr != nil {
		return nil, false, perr
	}
	if id != want {
		return nil, true, &MismatchError{Want: want, Got: id}
	}
	return r, true, nil
}
