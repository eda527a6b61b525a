package server

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestScanImage(t *testing.T) {
	for _, tt := range []struct {
		name    string
		files   map[string]string
		want    []ImageStream
		wantErr string
	}{
		{
			name:  "flat, natural order",
			files: map[string]string{"d1.partitions": "x", "d1.mbr": "x", "d1p10.img": "10", "d1p2.img": "22", "d1p1.img": "1"},
			want: []ImageStream{
				{Partition: 1, ID: "d1p1.img", Files: []string{"d1p1.img"}, Size: 1},
				{Partition: 2, ID: "d1p2.img", Files: []string{"d1p2.img"}, Size: 2},
				{Partition: 10, ID: "d1p10.img", Files: []string{"d1p10.img"}, Size: 2},
			},
		},
		{
			name:  "split, FOG naming (bare first piece)",
			files: map[string]string{"d1p1.img": "aaa", "d1p1.img.001": "bb", "d1p1.img.002": "c", "d1p3.img": "x"},
			want: []ImageStream{
				{Partition: 1, ID: "d1p1.img", Files: []string{"d1p1.img", "d1p1.img.001", "d1p1.img.002"}, Size: 6},
				{Partition: 3, ID: "d1p3.img", Files: []string{"d1p3.img"}, Size: 1},
			},
		},
		{
			name:  "split, .000 naming",
			files: map[string]string{"d1p2.img.000": "aa", "d1p2.img.001": "b"},
			want:  []ImageStream{{Partition: 2, ID: "d1p2.img", Files: []string{"d1p2.img.000", "d1p2.img.001"}, Size: 3}},
		},
		{
			name:  "other disks and LVM images are not sent",
			files: map[string]string{"d1p1.img": "a", "d2p1.img": "b", "d1p2.vg-root.img": "c", "notes.txt": "d"},
			want:  []ImageStream{{Partition: 1, ID: "d1p1.img", Files: []string{"d1p1.img"}, Size: 1}},
		},
		{name: "missing piece", files: map[string]string{"d1p1.img": "a", "d1p1.img.002": "b"}, wantErr: "piece .001 is missing"},
		{name: "two first pieces", files: map[string]string{"d1p1.img": "a", "d1p1.img.000": "b"}, wantErr: "both"},
		{name: "empty", files: map[string]string{"d1.partitions": "x"}, wantErr: "no partition images"},
		{name: "only disk 2", files: map[string]string{"d2p1.img": "x"}, wantErr: "no images for disk 1"},
		{name: "legacy", files: map[string]string{"sys.img.000": "x", "rec.img.000": "y"}, wantErr: "legacy FOG images"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := ScanImage(dir)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ScanImage = %+v, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ScanImage =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestScanImageRejectsADirectoryPiece(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "d1p1.img"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := ScanImage(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("err = %v", err)
	}
}

func TestFindImage(t *testing.T) {
	mk := func(t *testing.T, folders ...string) string {
		root := t.TempDir()
		for _, f := range folders {
			writeFiles(t, filepath.Join(root, f), map[string][]byte{"d1p1.img": []byte("x")})
		}
		os.Mkdir(filepath.Join(root, "not-an-image"), 0o755)
		return root
	}
	for _, tt := range []struct {
		name    string
		folders []string
		arg     string
		want    string
		wantErr string
	}{
		{name: "the only one", folders: []string{"default"}, want: "default"},
		{name: "named", folders: []string{"a", "b"}, arg: "b", want: "b"},
		{name: "ambiguous", folders: []string{"a", "b"}, wantErr: "several images"},
		{name: "none", wantErr: "no image folders"},
		{name: "missing", folders: []string{"a"}, arg: "zzz", wantErr: "zzz"},
		{name: "traversal", folders: []string{"a"}, arg: "../a", wantErr: "folder name"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FindImage(mk(t, tt.folders...), tt.arg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("FindImage = %q, %v; want %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("FindImage = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	t.Run("an image folder itself", func(t *testing.T) {
		root := mk(t, "default")
		_, err := FindImage(filepath.Join(root, "default"), "")
		if err == nil || !strings.Contains(err.Error(), "pass its parent") {
			t.Fatalf("err = %v", err)
		}
	})
}
