package manifest_test

import (
	"crypto/sha256"
	"io"
	"testing"

	"github.com/imgcast/imgcast/pkg/manifest"
)

// sizedReader hands out at most n bytes per Read, as a file read of a
// large buffer (n = 4 MiB) or a pipe from the multicast receiver does.
type sizedReader struct {
	b []byte
	n int
}

func (r *sizedReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), r.n)], r.b)
	r.b = r.b[k:]
	return k, nil
}

// BenchmarkVerifier measures what verification costs a consumer that
// reads 128 KiB at a time (as the zstd decoder does) against reading the
// same bytes without it, and against SHA-256 alone (the floor: the
// verifier should be close to it).
func BenchmarkVerifier(b *testing.B) {
	data := randomBytes(64<<20, 7)
	s := &manifest.Stream{Name: "bench", Size: int64(len(data))}
	for off := 0; off < len(data); off += manifest.ChunkSize {
		s.Chunks = append(s.Chunks, manifest.Digest(sha256.Sum256(data[off:min(off+manifest.ChunkSize, len(data))])))
	}
	buf := make([]byte, 128<<10)
	b.Run("sha256-alone", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			for off := 0; off < len(data); off += manifest.ChunkSize {
				sha256.Sum256(data[off:min(off+manifest.ChunkSize, len(data))])
			}
		}
	})
	for _, bc := range []struct {
		name   string
		read   int
		verify bool
	}{
		{"plain/reads=4MiB", 4 << 20, false},
		{"verified/reads=4MiB", 4 << 20, true},
		{"verified/reads=64KiB", 64 << 10, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				var r io.Reader = &sizedReader{b: data, n: bc.read}
				var v *manifest.Verifier
				if bc.verify {
					v = s.NewReader(r)
					r = v
				}
				for {
					_, err := r.Read(buf)
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				if v != nil {
					v.Close()
				}
			}
		})
	}
}
