package restore_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/pkg/manifest"
	"github.com/imgcast/imgcast/pkg/restore"
	"github.com/imgcast/imgcast/pkg/restore/imagedir"
	"github.com/imgcast/imgcast/pkg/restore/ptable"
)

// signedFolder is mbrFolder with partition 1 as FOG captures it (no
// partclone checksums, so only the manifest can catch altered data), stored
// uncompressed so image offsets are block offsets, and signed.
func signedFolder(t *testing.T) (dir, dump string, pub ed25519.PublicKey, priv ed25519.PrivateKey) {
	src, dump, _ := mbrFolder(t)
	dir = filepath.Join(t.TempDir(), "lab-image")
	run(t, "cp", "-a", src, dir)
	a0 := getFixture(t, "ext4-4k").variant(t, "a0", "-a0")
	copyFile(t, a0, filepath.Join(dir, "d1p1.img"))
	os.Remove(filepath.Join(dir, "d1.sha256"))
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := manifest.SignFolder(context.Background(), dir, 1, "lab-image", priv); err != nil {
		t.Fatal(err)
	}
	return dir, dump, pub, priv
}

func restoreSigned(t testing.TB, dir, disk string, key ed25519.PublicKey) error {
	t.Helper()
	ctx := context.Background()
	folder, err := imagedir.Open(dir)
	if err != nil {
		return err
	}
	di, err := restore.LoadDiskImageWith(ctx, folder, 1, restore.LoadOptions{PublicKey: key})
	if err != nil {
		return err
	}
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g, err := ptable.ReadGeometry(f, 0)
	if err != nil {
		t.Fatal(err)
	}
	return restore.RestoreDisk(ctx, di, f, g, restore.DiskOptions{})
}

func TestSignedRestore(t *testing.T) {
	needTools(t, "sfdisk", "sgdisk", "split", "sha256sum", "blkid")
	dir, dump, pub, _ := signedFolder(t)
	ext4a0 := getFixture(t, "ext4-4k").variant(t, "a0", "-a0")
	h := readHeader(t, ext4a0)
	imgLen := int64(len(mustRead(t, ext4a0)))
	if imgLen < manifest.ChunkSize+1<<20 {
		t.Fatalf("fixture: d1p1.img is %d bytes, want more than one chunk", imgLen)
	}

	t.Run("good", func(t *testing.T) {
		disk := patterned(t, filepath.Join(t.TempDir(), "disk.img"), diskSize)
		if err := restoreSigned(t, dir, disk, pub); err != nil {
			t.Fatal(err)
		}
		// partition 1's content is the -a0 image's: same blocks as the fixture.
		checkDisk(t, disk, dump, mustRead(t, filepath.Join(dir, "d1.mbr")), map[int]*fixture{2: getFixture(t, "fat16")})
		got := mustRead(t, disk)[2048*512:][:getFixture(t, "ext4-4k").size]
		if !bytes.Equal(got, mustRead(t, reference(t, ext4a0, getFixture(t, "ext4-4k").size))) {
			t.Error("partition 1 differs from partclone.restore's output")
		}
	})

	// A forged byte in the second chunk of d1p1.img: the partition fails,
	// the forged block never reaches the disk, and the disk is wiped.
	t.Run("forged chunk", func(t *testing.T) {
		d := filepath.Join(t.TempDir(), "lab-image")
		run(t, "cp", "-a", dir, d)
		b := mustRead(t, filepath.Join(d, "d1p1.img"))
		at := int64(manifest.ChunkSize + 12345)
		b[at] ^= 0xFF
		write(t, filepath.Join(d, "d1p1.img"), b)
		// The block the forged byte belongs to (no checksums: data is the
		// used blocks back to back after the header).
		used := (at - h.HeaderBytes()) / int64(h.BlockSize)
		var blk uint64
		for k, seen := uint64(0), int64(-1); k < h.TotalBlocks; k++ {
			if h.Used(k) {
				if seen++; seen == used {
					blk = k
					break
				}
			}
		}
		blockOff := 2048*512 + int64(blk)*int64(h.BlockSize)

		disk := patterned(t, filepath.Join(t.TempDir(), "disk.img"), diskSize)
		err := restoreSigned(t, d, disk, pub)
		if !errors.Is(err, manifest.ErrChunk) {
			t.Fatalf("got %v, want a chunk error", err)
		}
		t.Log(err)
		if !strings.Contains(err.Error(), "partition 1") || !strings.Contains(err.Error(), "chunk 1") {
			t.Errorf("the error does not name partition 1 and chunk 1: %v", err)
		}
		got := mustRead(t, disk)
		if !bytes.Equal(got[blockOff:blockOff+int64(h.BlockSize)], bytes.Repeat([]byte{pattern}, int(h.BlockSize))) {
			t.Errorf("block %d (in the forged chunk) was written", blk)
		}
		checkWiped(t, disk, dump)

		// The control: without a key the same folder restores "fine" and the
		// forged byte is on the disk. This is what the manifest prevents.
		disk2 := patterned(t, filepath.Join(t.TempDir(), "disk2.img"), diskSize)
		if err := restoreDisk(t, d, disk2); err != nil {
			t.Fatalf("control restore without a key: %v", err)
		}
		if bytes.Equal(mustRead(t, disk2)[blockOff:blockOff+int64(h.BlockSize)], got[blockOff:blockOff+int64(h.BlockSize)]) {
			t.Error("control: the forged block did not reach the disk without a key")
		}
	})

	// Refusals before anything is written.
	for _, tc := range []struct {
		name string
		edit func(d string)
		key  ed25519.PublicKey
	}{
		{"d1.partitions altered", func(d string) {
			p := filepath.Join(d, "d1.partitions")
			write(t, p, bytes.Replace(mustRead(t, p), []byte("type=82"), []byte("type=83"), 1))
		}, pub},
		{"d1.mbr altered", func(d string) {
			p := filepath.Join(d, "d1.mbr")
			b := mustRead(t, p)
			b[17] ^= 1
			write(t, p, b)
		}, pub},
		{"d1.mbr removed", func(d string) { os.Remove(filepath.Join(d, "d1.mbr")) }, pub},
		{"piece injected", func(d string) {
			pieces, _ := filepath.Glob(filepath.Join(d, "d1p2.img.*"))
			write(t, filepath.Join(d, fmt.Sprintf("d1p2.img.%03d", len(pieces)+1)), []byte("more"))
		}, pub},
		{"piece removed", func(d string) {
			pieces, _ := filepath.Glob(filepath.Join(d, "d1p2.img.*"))
			os.Remove(filepath.Join(d, fmt.Sprintf("d1p2.img.%03d", len(pieces))))
		}, pub},
		{"image injected", func(d string) { copyFile(t, filepath.Join(d, "d1p1.img"), filepath.Join(d, "d1p3.img")) }, pub},
		{"image removed", func(d string) { os.Remove(filepath.Join(d, "d1p1.img")) }, pub},
		{"piece grown", func(d string) {
			f, _ := os.OpenFile(filepath.Join(d, "d1p1.img"), os.O_APPEND|os.O_WRONLY, 0)
			f.Write([]byte{0})
			f.Close()
		}, pub},
		{"no manifest", func(d string) { os.Remove(filepath.Join(d, "d1.manifest")) }, pub},
		{"no signature", func(d string) { os.Remove(filepath.Join(d, "d1.manifest.sig")) }, pub},
		{"another key", func(d string) {}, func() ed25519.PublicKey { k, _, _ := ed25519.GenerateKey(nil); return k }()},
		{"manifest of another image", func(d string) {}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := filepath.Join(t.TempDir(), "lab-image")
			if tc.name == "manifest of another image" {
				d = filepath.Join(t.TempDir(), "other-image") // same signed files, another image id
			}
			run(t, "cp", "-a", dir, d)
			tc.edit(d)
			key := tc.key
			if key == nil {
				key = pub
			}
			disk := patterned(t, filepath.Join(t.TempDir(), "disk.img"), diskSize)
			before := digest(t, disk)
			err := restoreSigned(t, d, disk, key)
			if !errors.Is(err, manifest.ErrManifest) {
				t.Fatalf("got %v, want a manifest error", err)
			}
			t.Log(err)
			if digest(t, disk) != before {
				t.Error("the disk was written")
			}
		})
	}
}
