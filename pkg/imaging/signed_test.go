package imaging

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/internal/defaultimage"
	"github.com/imgcast/imgcast/pkg/manifest"
	"github.com/imgcast/imgcast/pkg/status"
)

// signedCopy copies the default image and signs the copy with a new key.
func signedCopy(t *testing.T, dir string) (img string, pub ed25519.PublicKey) {
	t.Helper()
	img = copyImage(t, dir)
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := manifest.SignFolder(context.Background(), img, 1, manifest.ImageID(img), priv); err != nil {
		t.Fatal(err)
	}
	return img, pub
}

// flipByte changes one byte in the middle of an image file, keeping its
// size: only the signed manifest's chunk digests can tell.
func flipByte(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// assertWiped checks that the failed job left a disk that cannot pass
// for imaged: no partition table (protective MBR entries and both GPT
// copies zero), the first MiB of each partition it began to write zero.
func assertWiped(t *testing.T, disk string, partitions ...int64) {
	t.Helper()
	zero := func(what string, off, n int64) {
		if i := bytes.IndexFunc(region(t, disk, off, n), func(r rune) bool { return r != 0 }); i >= 0 {
			t.Errorf("%s is not wiped: byte %d of it is not zero", what, i)
		}
	}
	zero("the MBR's partition entries", 446, 66)
	zero("the primary GPT", 512, 33*512)
	zero("the backup GPT", defaultimage.DiskSize-33*512, 33*512)
	for i, off := range partitions {
		zero("the start of partition "+string(rune('1'+i)), off, 1<<20)
	}
}

func TestSignedImage(t *testing.T) {
	dir, ref := defaultImage(t)
	for _, tc := range []struct {
		name     string
		mode     Transfer
		prepare  func(t *testing.T, img string) // damage the signed copy
		wrongKey bool
		wantErr  error  // nil: success
		wantText string // in the error
		// untouched: refused before anything was written; else, on
		// failure, the disk must be wiped.
		untouched bool
	}{
		{name: "signed, multicast", mode: Multicast},
		{name: "signed, over HTTP", mode: Unicast},
		{name: "tampered chunk, multicast", mode: Multicast,
			prepare: func(t *testing.T, img string) { flipByte(t, filepath.Join(img, "d1p2.img")) },
			wantErr: manifest.ErrChunk, wantText: "partition 2: d1p2.img: chunk 0"},
		{name: "tampered chunk, over HTTP", mode: Unicast,
			prepare: func(t *testing.T, img string) { flipByte(t, filepath.Join(img, "d1p2.img")) },
			wantErr: manifest.ErrChunk, wantText: "partition 2: d1p2.img: chunk 0"},
		{name: "unsigned folder", mode: Multicast,
			prepare: func(t *testing.T, img string) {
				os.Remove(filepath.Join(img, manifest.FileName(1)))
				os.Remove(filepath.Join(img, manifest.SignatureName(1)))
			},
			wantErr: manifest.ErrManifest, untouched: true},
		{name: "tampered table", mode: Multicast,
			prepare: func(t *testing.T, img string) {
				f, _ := os.OpenFile(filepath.Join(img, "d1.partitions"), os.O_APPEND|os.O_WRONLY, 0)
				f.WriteString("\n")
				f.Close()
			},
			wantErr: manifest.ErrManifest, wantText: "d1.partitions", untouched: true},
		{name: "signed by another key", mode: Multicast, wrongKey: true, wantErr: manifest.ErrManifest, untouched: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, pub := signedCopy(t, dir)
			if tc.prepare != nil {
				tc.prepare(t, img)
			}
			if tc.wrongKey {
				pub, _, _ = ed25519.GenerateKey(nil)
			}
			// A patterned disk shows any write; restore leaves unused blocks
			// as they are, so a good restore needs a zeroed one to compare.
			disk := blankDisk(t, defaultimage.DiskSize)
			if tc.wantErr == nil {
				disk = zeroDisk(t, defaultimage.DiskSize)
			}
			location := img
			var rcv *fakeReceiver
			if tc.mode == Multicast {
				rcv = &fakeReceiver{dir: img}
			} else {
				srv := httptest.NewServer(http.StripPrefix("/images/img/", http.FileServer(http.Dir(img))))
				t.Cleanup(srv.Close)
				location = srv.URL + "/images/img/"
			}
			cfg, rec, console := newConfig(t, location, disk, tc.mode, rcv)
			cfg.PublicKey = pub
			_, err := Run(context.Background(), cfg)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("%v\nconsole:\n%s", err, console)
				}
				if !strings.Contains(console.String(), `Signed manifest of image "img" verified`) {
					t.Errorf("console does not say the manifest verified:\n%s", console)
				}
				assertPartitionsMatch(t, disk, ref)
				return
			}
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantText) {
				t.Fatalf("error %v, want %v containing %q\nconsole:\n%s", err, tc.wantErr, tc.wantText, console)
			}
			if last := rec.last(); last.State != status.Failed {
				t.Errorf("last report %+v, want failed", last)
			}
			if tc.untouched {
				assertUntouched(t, disk)
				return
			}
			assertWiped(t, disk, defaultimage.Part1Offset, defaultimage.Part2Offset)
			// Nothing of the tampered image reached the disk: past the
			// wiped first MiB, partition 2 holds the blank pattern.
			rest := region(t, disk, defaultimage.Part2Offset+1<<20, defaultimage.Part2Size-1<<20)
			if i := bytes.IndexFunc(rest, func(r rune) bool { return r != 0x5a }); i >= 0 {
				t.Errorf("partition 2 was written at byte %d although its only chunk did not verify", 1<<20+i)
			}
		})
	}
}

// TestWipeAfterAFailedRestore fails partition 2 once partition 1 is on
// the disk: the table and partition 1 must not be left looking imaged.
func TestWipeAfterAFailedRestore(t *testing.T) {
	dir, _ := defaultImage(t)
	for _, mode := range []Transfer{Multicast, Unicast} {
		t.Run(string(mode), func(t *testing.T) {
			disk := blankDisk(t, defaultimage.DiskSize)
			location := dir
			var rcv *fakeReceiver
			if mode == Multicast {
				rcv = &fakeReceiver{dir: dir, failAt: map[int]failure{1: {64 << 10, errors.New("sender went silent")}}}
			} else {
				// d1p2.img vanishes from the server between the client's
				// HEAD (when it read the metadata) and its GET.
				files := http.FileServer(http.Dir(dir))
				srv := httptest.NewServer(http.StripPrefix("/images/default/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "d1p2.img" && r.Method == http.MethodGet {
						http.NotFound(w, r)
						return
					}
					files.ServeHTTP(w, r)
				})))
				t.Cleanup(srv.Close)
				location = srv.URL + "/images/default/"
			}
			cfg, rec, console := newConfig(t, location, disk, mode, rcv)
			_, err := Run(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), "partition 2") {
				t.Fatalf("error %v, want partition 2's failure\nconsole:\n%s", err, console)
			}
			want := "the disk was wiped so it cannot pass for imaged (zeroed partition table: gpt (both copies), first MiB of partition 1, first MiB of partition 2)"
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
			if last := rec.last(); last.State != status.Failed || !strings.Contains(last.Error, want) {
				t.Errorf("last report %+v, want failed saying what was wiped", last)
			}
			assertWiped(t, disk, defaultimage.Part1Offset, defaultimage.Part2Offset)
		})
	}
}
