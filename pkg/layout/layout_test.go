package layout

import (
	"context"
	"fmt"
	"io/fs"
	"reflect"
	"sort"
	"strings"
	"testing"
)

func files(spec ...string) []File {
	var out []File
	for i, name := range spec {
		out = append(out, File{Name: name, Size: int64(10 * (i + 1))})
	}
	return out
}

func TestParseName(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Name
		ok   bool
	}{
		{"d1p1.img", Name{1, 1, -1}, true},
		{"d2p10.img.003", Name{2, 10, 3}, true},
		{"d1p01.img", Name{1, 1, -1}, true},
		{"d1p1.img.1", Name{}, false},    // pieces have three digits
		{"d1p1.img.0001", Name{}, false}, // ... exactly
		{"d1p1.img.abc", Name{}, false},
		{"d1p2.vg-root.img", Name{}, false}, // LVM sidecar
		{"d1.partitions", Name{}, false},
		{"D1P1.IMG", Name{}, false},
		{"dp1.img", Name{}, false},
		{"d1p.img", Name{}, false},
		{"d1p-1.img", Name{}, false},
		{"d99999999p1.img", Name{}, false},
		{"sys.img.000", Name{}, false},
	} {
		got, ok := ParseName(tt.in)
		if ok != tt.ok || got != tt.want {
			t.Errorf("ParseName(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func FuzzParseName(f *testing.F) {
	for _, s := range []string{"d1p1.img", "d1p2.img.000", "d12p345.img.999", "dp.img", "d1p1.img.", "d0p0.img"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := ParseName(s)
		if !ok {
			return
		}
		if n.Disk < 0 || n.Partition < 0 || n.Disk > maxNumber || n.Partition > maxNumber || n.Piece < -1 || n.Piece > 999 {
			t.Fatalf("ParseName(%q) = %+v", s, n)
		}
		// A parsed name reads back the same, up to leading zeros.
		back := ImageName(n.Disk, n.Partition)
		if n.Piece >= 0 {
			back = PieceName(n.Disk, n.Partition, n.Piece)
		}
		if again, ok := ParseName(back); !ok || again != n {
			t.Fatalf("ParseName(%q) = %+v, but %q gives %+v %v", s, n, back, again, ok)
		}
	})
}

func TestNaturalLess(t *testing.T) {
	in := []string{"d2p1.img", "d1p10.img", "D1P3.img", "d1p2.img", "d1p1.img", "d1p2.img.000", "d1p02.img"}
	sort.Slice(in, func(i, j int) bool { return NaturalLess(in[i], in[j]) })
	want := []string{"d1p1.img", "d1p02.img", "d1p2.img", "d1p2.img.000", "D1P3.img", "d1p10.img", "d2p1.img"}
	if !reflect.DeepEqual(in, want) {
		t.Errorf("natural order %q, want %q", in, want)
	}
}

func TestImgcast(t *testing.T) {
	for _, tt := range []struct {
		name    string
		files   []File
		want    []Stream
		wantErr string
	}{
		{
			name:  "flat, natural order, one port pair per partition",
			files: []File{{"d1.partitions", 1}, {"d1p10.img", 10}, {"d1p2.img", 2}, {"d1p1.img", 1}},
			want: []Stream{
				{Index: 0, ID: "d1p1.img", Files: []string{"d1p1.img"}, Size: 1, Port: 9000, Disk: 1, Partition: 1},
				{Index: 1, ID: "d1p2.img", Files: []string{"d1p2.img"}, Size: 2, Port: 9002, Disk: 1, Partition: 2},
				{Index: 2, ID: "d1p10.img", Files: []string{"d1p10.img"}, Size: 10, Port: 9004, Disk: 1, Partition: 10},
			},
		},
		{
			name:  "split, bare first piece, unknown size",
			files: []File{{"d1p1.img.002", 1}, {"d1p1.img", 3}, {"d1p1.img.001", -1}},
			want:  []Stream{{ID: "d1p1.img", Files: []string{"d1p1.img", "d1p1.img.001", "d1p1.img.002"}, Size: -1, Port: 9000, Disk: 1, Partition: 1}},
		},
		{
			name:  "split, .000 first",
			files: []File{{"d1p2.img.001", 1}, {"d1p2.img.000", 2}},
			want:  []Stream{{ID: "d1p2.img", Files: []string{"d1p2.img.000", "d1p2.img.001"}, Size: 3, Port: 9000, Disk: 1, Partition: 2}},
		},
		{name: "missing piece", files: files("d1p1.img", "d1p1.img.002"), wantErr: "piece .001 is missing"},
		{name: "two first pieces", files: files("d1p1.img.000", "d1p1.img"), wantErr: "both d1p1.img and d1p1.img.000"},
		{name: "nothing", files: files("d1.partitions"), wantErr: "no partition images"},
		{name: "only disk 2", files: files("d2p1.img"), wantErr: "no images for disk 1"},
		{name: "legacy", files: files("sys.img.000", "rec.img.000"), wantErr: "legacy FOG images"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Imgcast(tt.files, 9000)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestProbeAgreesWithImgcast: what the client finds by asking for names
// is what the server lists for the same folder.
func TestProbeAgreesWithImgcast(t *testing.T) {
	for _, folder := range [][]File{
		files("d1p1.img"),
		files("d1p1.img", "d1p1.img.001", "d1p1.img.002"),
		files("d1p1.img.000", "d1p1.img.001"),
	} {
		streams, err := Imgcast(folder, 9000)
		if err != nil {
			t.Fatal(err)
		}
		size := func(_ context.Context, name string) (int64, error) {
			for _, f := range folder {
				if f.Name == name {
					return f.Size, nil
				}
			}
			return 0, fmt.Errorf("%s: %w", name, fs.ErrNotExist)
		}
		got, err := Probe(context.Background(), size, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(names(got), streams[0].Files) || sizeOf(got) != streams[0].Size {
			t.Errorf("Probe found %+v, Imgcast lists %+v", got, streams[0])
		}
		if none, err := Probe(context.Background(), size, 1, 2); none != nil || err != nil {
			t.Errorf("Probe of a missing partition = %v, %v", none, err)
		}
	}
}

func ids(streams []Stream) string {
	var out []string
	for _, s := range streams {
		desc := fmt.Sprintf("%s=%s", s.ID, strings.Join(s.Files, "+"))
		if s.Disk != 0 {
			desc += fmt.Sprintf("@d%dp%d", s.Disk, s.Partition)
		}
		out = append(out, desc)
	}
	return strings.Join(out, " ")
}

// TestFOG follows FOG's multicast manager as its code reads (1.5.x
// multicasttask getCMD and 1.6 MulticastTask): the file list per image
// type, natural order, the imgPartitionType filter and the generations'
// handling of split images.
func TestFOG(t *testing.T) {
	folder := files("d1.partitions", "d1.mbr", "d1p10.img", "d1p2.img", "d1p1.img", "d2p1.img", "D1P3.img",
		"d1p4.img.000", "d1p4.img.001", "d1p2.vg-root.img", "notes.txt")
	for _, tt := range []struct {
		name  string
		files []File
		opt   FOGOptions
		want  string
	}{
		{"n on 1.5: d1pN.img with extension exactly img; split sends nothing", folder, FOGOptions{Type: TypeResizable, Generation: FOG15},
			"d1p1.img=d1p1.img@d1p1 d1p2.img=d1p2.img@d1p2 d1p10.img=d1p10.img@d1p10"},
		{"mps on 1.5", folder, FOGOptions{Type: TypeMultiPartSingle, Generation: FOG15},
			"d1p1.img=d1p1.img@d1p1 d1p2.img=d1p2.img@d1p2 d1p10.img=d1p10.img@d1p10"},
		{"mpa on 1.5: every disk, disk-major natural order", folder, FOGOptions{Type: TypeMultiPartAll, Generation: FOG15},
			"d1p1.img=d1p1.img@d1p1 d1p2.img=d1p2.img@d1p2 d1p10.img=d1p10.img@d1p10 d2p1.img=d2p1.img@d2p1"},
		{"n on 1.6: split pieces grouped into one stream", folder, FOGOptions{Type: TypeResizable, Generation: FOG16},
			"d1p1.img=d1p1.img@d1p1 d1p2.img=d1p2.img@d1p2 d1p4.img=d1p4.img.000+d1p4.img.001@d1p4 d1p10.img=d1p10.img@d1p10"},
		{"mpa on 1.6", folder, FOGOptions{Type: TypeMultiPartAll, Generation: FOG16},
			"d1p1.img=d1p1.img@d1p1 d1p2.img=d1p2.img@d1p2 d1p4.img=d1p4.img.000+d1p4.img.001@d1p4 d1p10.img=d1p10.img@d1p10 d2p1.img=d2p1.img@d2p1"},
		{"imgPartitionType=2", folder, FOGOptions{Type: TypeMultiPartAll, Generation: FOG15, Partition: 2},
			"d1p2.img=d1p2.img@d1p2"},
		{"imgPartitionType=1 matches every single-digit disk", folder, FOGOptions{Type: TypeMultiPartAll, Generation: FOG15, Partition: 1},
			"d1p1.img=d1p1.img@d1p1 d2p1.img=d2p1.img@d2p1"},
		{"imgPartitionType=4 on 1.6 keeps the grouped split image", folder, FOGOptions{Type: TypeResizable, Generation: FOG16, Partition: 4},
			"d1p4.img=d1p4.img.000+d1p4.img.001@d1p4"},
		{"imgPartitionType=4 on 1.5: the split image is not sent", folder, FOGOptions{Type: TypeResizable, Generation: FOG15, Partition: 4}, ""},
		{"dd with one file: the whole disk", files("win10.img"), FOGOptions{Type: TypeRaw, Generation: FOG15},
			"win10.img=win10.img@d1p0"},
		{"dd on 1.5: every file its own stream, extras discarded", files("win10.img.001", "win10.img.000"), FOGOptions{Type: TypeRaw, Generation: FOG15},
			"win10.img=win10.img.000@d1p0 win10.img=win10.img.001"},
		{"dd on 1.6: split pieces grouped", files("win10.img.001", "win10.img.000"), FOGOptions{Type: TypeRaw, Generation: FOG16},
			"win10.img=win10.img.000+win10.img.001@d1p0"},
		{"rec.img pieces keep their own ids on 1.6", files("rec.img.001", "rec.img.000"), FOGOptions{Type: TypeRaw, Generation: FOG16},
			"rec.img.000=rec.img.000@d1p0 rec.img.001=rec.img.001"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FOG(tt.files, tt.opt)
			if err != nil {
				t.Fatal(err)
			}
			if s := ids(got); s != tt.want {
				t.Errorf("streams\n got %s\nwant %s", s, tt.want)
			}
			for i, s := range got {
				if s.Index != i || s.Port != tt.opt.PortBase {
					t.Errorf("stream %d: index %d port %d, want one port base %d", i, s.Index, s.Port, tt.opt.PortBase)
				}
			}
		})
	}
	if _, err := FOG(folder, FOGOptions{Type: "zz"}); err == nil {
		t.Error("unknown type accepted")
	}
}

func TestFOGSizesAndPort(t *testing.T) {
	got, err := FOG([]File{{"d1p1.img.000", 5}, {"d1p1.img.001", 7}, {"d1p2.img", -1}}, FOGOptions{Type: TypeResizable, Generation: FOG16, PortBase: 54320})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Size != 12 || got[1].Size != -1 || got[0].Port != 54320 || got[1].Port != 54320 {
		t.Errorf("%+v", got)
	}
}
