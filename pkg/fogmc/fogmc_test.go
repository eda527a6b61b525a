package fogmc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestFormatMatchesFOGPrintf(t *testing.T) {
	for _, id := range []string{"d1p1.img", "sys.img", "rec.img.000", strings.Repeat("x", MaxIDLen)} {
		got, err := Format(id)
		if err != nil {
			t.Fatalf("Format(%q): %v", id, err)
		}
		// The FOS shell side writes the record with printf 'FOGMC1 %-120s\n'.
		want := fmt.Sprintf("FOGMC1 %-120s\n", id)
		if string(got) != want || len(got) != HeaderSize {
			t.Errorf("Format(%q) = %q (%d bytes), want %q", id, got, len(got), want)
		}
		back, err := Parse(got)
		if err != nil || back != id {
			t.Errorf("Parse(Format(%q)) = %q, %v", id, back, err)
		}
	}
}

func TestFormatRejectsBadIDs(t *testing.T) {
	for _, id := range []string{"", "a b", "d1/p1.img", "tab\there", "nl\n", strings.Repeat("x", MaxIDLen+1), "\x7f"} {
		if _, err := Format(id); err == nil {
			t.Errorf("Format(%q) succeeded, want an error", id)
		}
	}
}

func TestParse(t *testing.T) {
	good, _ := Format("d1p2.img")
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, tt := range []struct {
		name    string
		in      []byte
		want    string
		wantErr string // substring; "" = success
		noHdr   bool
	}{
		{name: "good", in: good, want: "d1p2.img"},
		{name: "partclone data", in: []byte("partclone-image\x000.3.23"), noHdr: true},
		{name: "gzip data", in: []byte{0x1f, 0x8b, 8, 0}, noHdr: true},
		{name: "empty", in: nil, noHdr: true},
		{name: "other version", in: mod(func(b []byte) []byte { b[5] = '2'; return b }), wantErr: `version "FOGMC2"`},
		{name: "short", in: good[:100], wantErr: "is 100 bytes"},
		{name: "long", in: append(bytes.Clone(good), 'x'), wantErr: "is 129 bytes"},
		{name: "no newline", in: mod(func(b []byte) []byte { b[127] = ' '; return b }), wantErr: "malformed"},
		{name: "no space after magic", in: mod(func(b []byte) []byte { b[6] = '_'; return b }), wantErr: "malformed"},
		{name: "blank id", in: []byte(fmt.Sprintf("FOGMC1 %-120s\n", "")), wantErr: "empty"},
		{name: "space inside id", in: []byte(fmt.Sprintf("FOGMC1 %-120s\n", "d1 p1")), wantErr: "contains byte"},
		{name: "leading space", in: []byte(fmt.Sprintf("FOGMC1  %-119s\n", "d1p1.img")), wantErr: "contains byte"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			switch {
			case tt.noHdr:
				if !errors.Is(err, ErrNoHeader) {
					t.Fatalf("Parse = %q, %v; want ErrNoHeader", got, err)
				}
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse = %q, %v; want error containing %q", got, err, tt.wantErr)
				}
			default:
				if err != nil || got != tt.want {
					t.Fatalf("Parse = %q, %v; want %q", got, err, tt.want)
				}
			}
		})
	}
}

func TestIDForFile(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"d1p2.img", "d1p2.img"},
		{"d1p1.img.000", "d1p1.img"},
		{"d1p1.img.001", "d1p1.img"},
		{"/images/win/d1p3.img.017", "d1p3.img"},
		{"sys.img.000", "sys.img"},
		{"sys.img.002", "sys.img"},
		{"rec.img.000", "rec.img.000"},
		{"rec.img.001", "rec.img.001"},
		{"d1p2.vg-root.img", "d1p2.vg-root.img"},
		{"d1p1.img.00", "d1p1.img.00"},
		{"d1p1.img.0a1", "d1p1.img.0a1"},
		{".000", ".000"},
	} {
		if got := IDForFile(tt.in); got != tt.want {
			t.Errorf("IDForFile(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestStrip(t *testing.T) {
	payload := bytes.Repeat([]byte("partclone-image payload "), 50)
	hdr, _ := Format("d1p1.img")
	withHdr := append(bytes.Clone(hdr), payload...)
	for _, tt := range []struct {
		name      string
		in        []byte
		want      string
		wantOut   []byte
		wantFound bool
		mismatch  bool
		wantErr   string
	}{
		{name: "header then payload", in: withHdr, want: "d1p1.img", wantOut: payload, wantFound: true},
		{name: "header only", in: hdr, want: "d1p1.img", wantOut: []byte{}, wantFound: true},
		{name: "no header passes through", in: payload, want: "d1p1.img", wantOut: payload},
		{name: "short stream passes through", in: []byte("tiny"), want: "d1p1.img", wantOut: []byte("tiny")},
		{name: "empty stream", in: nil, want: "d1p1.img", wantOut: []byte{}},
		{name: "wrong stream", in: withHdr, want: "d1p2.img", mismatch: true},
		{name: "truncated header", in: hdr[:60], want: "d1p1.img", wantErr: "inside its FOGMC1 header"},
		{name: "newer version", in: append([]byte("FOGMC2"), withHdr[6:]...), want: "d1p1.img", wantErr: "not supported"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// One byte at a time: a pipe may return short reads.
			r, found, err := Strip(iotest.OneByteReader(bytes.NewReader(tt.in)), tt.want)
			if tt.mismatch {
				var me *MismatchError
				if !errors.As(err, &me) || me.Got != "d1p1.img" || me.Want != tt.want {
					t.Fatalf("Strip error = %v, want a MismatchError", err)
				}
				return
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Strip error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if found != tt.wantFound {
				t.Errorf("found = %v, want %v", found, tt.wantFound)
			}
			out, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, tt.wantOut) {
				t.Errorf("stream after Strip = %d bytes %.40q, want %d bytes %.40q", len(out), out, len(tt.wantOut), tt.wantOut)
			}
		})
	}
}

func TestStripReportsReadErrors(t *testing.T) {
	boom := errors.New("socket gone")
	_, _, err := Strip(iotest.ErrReader(boom), "d1p1.img")
	if !errors.Is(err, boom) {
		t.Fatalf("Strip = %v, want the read error wrapped", err)
	}
}

func FuzzParse(f *testing.F) {
	good, _ := Format("d1p1.img")
	f.Add(good)
	f.Add([]byte("FOGMC2 x"))
	f.Add([]byte(fmt.Sprintf("FOGMC1 %-120s\n", "a b")))
	f.Add([]byte("partclone-image"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := Parse(b)
		if err != nil {
			return
		}
		// Only canonical records parse, so they round-trip exactly.
		again, ferr := Format(id)
		if ferr != nil {
			t.Fatalf("Parse accepted id %q that Format rejects: %v", id, ferr)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("Parse(%q) = %q, but Format gives %q", b, id, again)
		}
	})
}

func FuzzStrip(f *testing.F) {
	good, _ := Format("d1p1.img")
	f.Add(append(bytes.Clone(good), "data"...))
	f.Add([]byte("data without header"))
	f.Add(good[:50])
	f.Fuzz(func(t *testing.T, b []byte) {
		r, found, err := Strip(bytes.NewReader(b), "d1p1.img")
		if err != nil {
			return
		}
		out, _ := io.ReadAll(r)
		want := b
		if found {
			want = b[HeaderSize:]
		}
		if !bytes.Equal(out, want) {
			t.Fatalf("Strip lost or changed bytes: found=%v in=%d out=%d", found, len(b), len(out))
		}
	})
}
