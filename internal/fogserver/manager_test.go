package fogserver

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

func makeDir(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// streamFiles flattens streams to "a+b" per stream.
func streamFiles(streams []Stream) []string {
	var out []string
	for _, s := range streams {
		out = append(out, s.ID+"="+strings.Join(s.Files, "+"))
	}
	return out
}

// metadata is what every FOG image folder holds besides partition images.
var metadata = []string{"d1.mbr", "d1.partitions", "d1.minimum.partitions", "d1.fixed_size_partitions", "d1.original.swapuuids", "d1p4.ebr", "d1.original.fstypes"}

func TestStreams(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []string
		s     Sender
		want  []string
	}{
		{"n: d1pN.img in natural order, metadata and other disks left out",
			append([]string{"d1p10.img", "d1p2.img", "d1p1.img", "d2p1.img", "D1P3.IMG", "d1p5.img.bak"}, metadata...),
			Sender{Form: Form15, ImageType: TypeResizable, OSID: 50},
			[]string{"d1p1.img=d1p1.img", "d1p2.img=d1p2.img", "d1p10.img=d1p10.img"}},
		{"n on 1.5.x: split pieces are never sent",
			[]string{"d1p1.img.000", "d1p1.img.001", "d1p2.img"},
			Sender{Form: Form15, ImageType: TypeResizable, OSID: 9, Format: 6},
			[]string{"d1p2.img=d1p2.img"}},
		{"n on 1.6: split pieces joined into one stream named by their stem",
			[]string{"d1p1.img.001", "d1p1.img.000", "d1p2.img.000", "d1p10.img"},
			Sender{Form: Form16, ImageType: TypeResizable, OSID: 9, Format: 6},
			[]string{"d1p1.img=d1p1.img.000+d1p1.img.001", "d1p2.img=d1p2.img.000", "d1p10.img=d1p10.img"}},
		{"1.6 does not join pieces of a non-split format",
			[]string{"d1p1.img.000", "d1p2.img"},
			Sender{Form: Form16, ImageType: TypeResizable, OSID: 9, Format: 5},
			[]string{"d1p2.img=d1p2.img"}},
		{"mps: disk 1 only",
			[]string{"d1p1.img", "d1p3.img", "d2p1.img"},
			Sender{Form: Form15, ImageType: TypeMultiPartition},
			[]string{"d1p1.img=d1p1.img", "d1p3.img=d1p3.img"}},
		{"mpa: every disk, disk-major natural order",
			append([]string{"d2p1.img", "d1p2.img", "d10p1.img", "d1p1.img", "d2.size"}, metadata...),
			Sender{Form: Form15, ImageType: TypeMultiPartitionAll},
			[]string{"d1p1.img=d1p1.img", "d1p2.img=d1p2.img", "d2p1.img=d2p1.img", "d10p1.img=d10p1.img"}},
		{"dd: every file in the folder",
			[]string{"lab.000"},
			Sender{Form: Form15, ImageType: TypeRaw},
			[]string{"lab=lab.000"}},
		{"one partition: only ^d[0-9]pN.img$",
			[]string{"d1p1.img", "d1p2.img", "d2p2.img", "d1p12.img"},
			Sender{Form: Form15, ImageType: TypeMultiPartitionAll, PartitionType: "2"},
			[]string{"d1p2.img=d1p2.img", "d2p2.img=d2p2.img"}},
		{"imgPartitionType=mbr sends everything (FOG casts it to 0)",
			[]string{"d1p1.img", "d1p2.img"},
			Sender{Form: Form15, ImageType: TypeResizable, PartitionType: "mbr"},
			[]string{"d1p1.img=d1p1.img", "d1p2.img=d1p2.img"}},
		{"an extended partition's old image is sent like any other",
			[]string{"d1p1.img", "d1p2.img", "d1p5.img", "d1p2.ebr"},
			Sender{Form: Form15, ImageType: TypeResizable, OSID: 50},
			[]string{"d1p1.img=d1p1.img", "d1p2.img=d1p2.img", "d1p5.img=d1p5.img"}},
		{"Windows 7 legacy layout (1.5.x: a shell glob per name)",
			[]string{"sys.img.000", "sys.img.001", "rec.img.000", "d1p1.img"},
			Sender{Form: Form15, ImageType: TypeResizable, OSID: 5},
			[]string{"rec.img=rec.img.*", "sys.img=sys.img.*"}},
		{"Windows 7 legacy layout (1.6: sys.img one stream, rec.img one each)",
			[]string{"sys.img.000", "sys.img.001", "rec.img.000", "rec.img.001"},
			Sender{Form: Form16, ImageType: TypeResizable, OSID: 6},
			[]string{"rec.img.000=rec.img.000", "rec.img.001=rec.img.001", "sys.img=sys.img.000+sys.img.001"}},
		{"odd names PHP's sscanf still reads",
			[]string{"d1p02.img", "d1p-1.img", "d1p3.img extra", "d1pX.img", "d1p4img"},
			Sender{Form: Form15, ImageType: TypeMultiPartition},
			[]string{"d1p-1.img=d1p-1.img", "d1p02.img=d1p02.img", "d1p3.img extra=d1p3.img extra"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.s.Dir = makeDir(t, tc.files...)
			streams, err := tc.s.Streams()
			if err != nil {
				t.Fatal(err)
			}
			if got := streamFiles(streams); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("streams\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestCommand(t *testing.T) {
	dir := makeDir(t, "d1p1.img", "d1p2.img.000", "d1p2.img.001", "d1.partitions")
	s15 := Sender{Form: Form15, Dir: dir + "/", ImageType: TypeResizable, OSID: 50, Format: 5, Interface: "br0",
		Clients: 12, Port: 54320, MaxWait: 10}
	got, err := s15.Command()
	if err != nil {
		t.Fatal(err)
	}
	want := "udp-sender --interface br0 --min-receivers 12 --max-wait 600 --portbase 54320 --full-duplex --ttl 32 --nokbd --nopointopoint --file " + dir + "/d1p1.img;"
	if got != want {
		t.Errorf("1.5.x command\n got %q\nwant %q", got, want)
	}

	dir = makeDir(t, "d1p1.img", "d1p2.img", "d1p3.img")
	s15.Dir, s15.MulticastRDV = dir, "10.0.0.9"
	got, _ = s15.Command()
	args := "--interface br0 --min-receivers 12 --max-wait %s --mcast-rdv-address 10.0.0.9 --portbase 54320 --full-duplex --ttl 32 --nokbd --nopointopoint"
	want = ""
	for i, f := range []string{"d1p1.img", "d1p2.img", "d1p3.img"} {
		wait := "600"
		if i > 0 {
			wait = "10"
		}
		want += "udp-sender " + strings.Replace(args, "%s", wait, 1) + " --file " + dir + "/" + f + ";"
	}
	if got != want {
		t.Errorf("1.5.x chain\n got %q\nwant %q", got, want)
	}
	s15.LaterWait = 60
	if got, _ := s15.Command(); strings.Count(got, "--max-wait 60 ") != 2 {
		t.Errorf("LaterWait 60: %q", got)
	}

	dir = makeDir(t, "d1p1.img", "d1p2.img.000", "d1p2.img.001")
	s16 := Sender{Form: Form16, Dir: dir, ImageType: TypeResizable, OSID: 9, Format: 6, Interface: "br0", Clients: 2, Port: 9000, MaxWait: 30}
	got, err = s16.Command()
	if err != nil {
		t.Fatal(err)
	}
	want = "{ printf 'FOGMC1 %-120s\\n' 'd1p1.img'; cat '" + dir + "/d1p1.img'; } | 'udp-sender' '--interface' 'br0' '--min-receivers' '2' '--max-wait' '30' '--portbase' '9000' '--full-duplex' '--ttl' '32' '--nokbd' '--nopointopoint';" +
		"{ printf 'FOGMC1 %-120s\\n' 'd1p2.img'; cat '" + dir + "/d1p2.img.000' '" + dir + "/d1p2.img.001'; } | 'udp-sender' '--interface' 'br0' '--min-receivers' '2' '--max-wait' '600' '--portbase' '9000' '--full-duplex' '--ttl' '32' '--nokbd' '--nopointopoint';"
	if got != want {
		t.Errorf("1.6 command\n got %q\nwant %q", got, want)
	}

	for _, bad := range []Sender{
		{Form: Form15, Dir: dir, ImageType: TypeResizable, Port: 9001},
		{Form: Form15, Dir: makeDir(t, "d1.partitions"), ImageType: TypeResizable, Port: 9000},
		{Form: Form15, Dir: makeDir(t, "d1p1.img"), ImageType: 7, Port: 9000},
		{Form: Form15, Dir: makeDir(t, "d1p1.img"), ImageType: TypeResizable, Port: 9000, Interface: "br0; reboot"},
	} {
		if c, err := bad.Command(); err == nil {
			t.Errorf("%+v: command %q, want an error", bad, c)
		}
	}
}

func TestNatLess(t *testing.T) {
	names := []string{"d1p10.img", "d2p1.img", "D1P2.img", "d1p1.img", "d10p1.img", "a", "d1p1.img.000"}
	sort.SliceStable(names, func(i, j int) bool { return natLess(names[i], names[j]) })
	want := []string{"a", "d1p1.img", "d1p1.img.000", "D1P2.img", "d1p10.img", "d2p1.img", "d10p1.img"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("natural order\n got %q\nwant %q", names, want)
	}
}
