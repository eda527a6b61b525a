package fill_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/internal/fogtest"
	"github.com/imgcast/imgcast/pkg/restore/fill"
	"github.com/imgcast/imgcast/pkg/restore/ptable"
	"github.com/imgcast/imgcast/pkg/restore/sfdisk"
)

const (
	gib = int64(1) << 30
	mib = int64(1) << 20
)

func parse(t testing.TB, s string) *sfdisk.Dump {
	t.Helper()
	d, err := sfdisk.Parse(strings.NewReader(s))
	if err != nil {
		t.Fatalf("%v\n%s", err, s)
	}
	return d
}

func disk(size int64) ptable.Geometry {
	return ptable.Geometry{Size: size, LogicalSectorSize: 512, PhysicalSectorSize: 512}
}

// Windows 7 on BIOS: "System Reserved" (fixed: boot flag) and C:.
const win7 = `label: dos
label-id: 0x9a8b7c6d
device: /dev/sda
unit: sectors

/dev/sda1 : start=        2048, size=      204800, type=7, bootable
/dev/sda2 : start=      206848, size=    83677184, type=7
`

const win7Min = `label: dos
label-id: 0x9a8b7c6d
device: /dev/sda
unit: sectors

/dev/sda1 : start=        2048, size=      204800, type=7, bootable
/dev/sda2 : start=      206848, size=    31457280, type=7
`

// A Linux GPT install: BIOS boot and EFI (fixed), root and home (ext4,
// shrunk), swap between them (fixed by its type).
const linux = `label: gpt
label-id: 11111111-2222-4333-8444-555555555555
device: /dev/vda
unit: sectors
first-lba: 2048
last-lba: 41943006
sector-size: 512

/dev/vda1 : start=        2048, size=        2048, type=21686148-6449-6E6F-744E-656564454649, uuid=A1111111-2222-4333-8444-555555555555
/dev/vda2 : start=        4096, size=     1048576, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=A2111111-2222-4333-8444-555555555555
/dev/vda3 : start=     1052672, size=    20971520, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=A3111111-2222-4333-8444-555555555555, name="root"
/dev/vda4 : start=    22024192, size=     4194304, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, uuid=A4111111-2222-4333-8444-555555555555, name="swap"
/dev/vda5 : start=    26218496, size=    15722496, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=A5111111-2222-4333-8444-555555555555, name="home"
`

const linuxMin = `label: gpt
label-id: 11111111-2222-4333-8444-555555555555
device: /dev/vda
unit: sectors
first-lba: 2048
last-lba: 41943006
sector-size: 512

/dev/vda1 : start=        2048, size=        2048, type=21686148-6449-6E6F-744E-656564454649, uuid=A1111111-2222-4333-8444-555555555555
/dev/vda2 : start=        4096, size=     1048576, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=A2111111-2222-4333-8444-555555555555
/dev/vda3 : start=     1052672, size=     8388608, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=A3111111-2222-4333-8444-555555555555, name="root"
/dev/vda4 : start=    22024192, size=     4194304, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, uuid=A4111111-2222-4333-8444-555555555555, name="swap"
/dev/vda5 : start=    26218496, size=     7000001, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=A5111111-2222-4333-8444-555555555555, name="home"
`

// An older Linux MBR install with an extended partition: swap and home
// are logical partitions.
const linuxDOS = `label: dos
label-id: 0x00c0ffee
device: /dev/sda
unit: sectors

/dev/sda1 : start=        2048, size=    16777216, type=83, bootable
/dev/sda2 : start=    16781310, size=     4196354, type=5
/dev/sda5 : start=    16781312, size=     2097152, type=82
/dev/sda6 : start=    18880512, size=     2097152, type=83
`

const linuxDOSMin = `label: dos
label-id: 0x00c0ffee
device: /dev/sda
unit: sectors

/dev/sda1 : start=        2048, size=     4194304, type=83, bootable
/dev/sda2 : start=    16781310, size=     4196354, type=5
/dev/sda5 : start=    16781312, size=     2097152, type=82
/dev/sda6 : start=    18880512, size=      524288, type=83
`

type span struct{ start, size uint64 }

func TestFill(t *testing.T) {
	for _, tc := range []struct {
		name       string
		orig, min  string
		fixed      string
		disk       int64
		want       map[int]span
		wantLast   uint64
		wantScaled []int // partitions not in Layout.Fixed
	}{
		{
			// The usable area ends at 536870878 (the backup GPT takes 33
			// sectors); C: gets all the room after the fixed partitions,
			// rounded down to 512 sectors, and the recovery partition
			// follows it.
			name: "windows 10 onto 256 GiB", orig: fogtest.Win10, min: fogtest.Win10Min, fixed: "1:2:4", disk: 256 * gib,
			want: map[int]span{
				1: {2048, 204800}, 2: {206848, 32768}, 3: {239616, 535547392}, 4: {535787008, 1083392},
			},
			wantLast: 536870878, wantScaled: []int{3},
		},
		{
			// A disk smaller than the original: C: shrinks, but stays
			// above its minimum.
			name: "windows 10 onto 40 GiB", orig: fogtest.Win10, min: fogtest.Win10Min, fixed: "1:2:4", disk: 40 * gib,
			want: map[int]span{
				1: {2048, 204800}, 2: {206848, 32768}, 3: {239616, 82562560}, 4: {82802176, 1083392},
			},
			wantLast: 83886046, wantScaled: []int{3},
		},
		{
			name: "windows 7 BIOS onto 120 GiB", orig: win7, min: win7Min, fixed: "1", disk: 120 * gib,
			want:       map[int]span{1: {2048, 204800}, 2: {206848, 251451392}},
			wantScaled: []int{2},
		},
		{
			// root and home share 100 GiB less the fixed 2.5 GiB in the
			// proportion 20971520:15722496; swap stays 2 GiB between them.
			name: "linux gpt onto 100 GiB", orig: linux, min: linuxMin, fixed: "1:2", disk: 100 * gib,
			want: map[int]span{
				1: {2048, 2048}, 2: {4096, 1048576}, 3: {1052672, 116858368},
				4: {117911040, 4194304}, 5: {122105344, 87609344},
			},
			wantLast: 209715166, wantScaled: []int{3, 5},
		},
		{
			// On 10 GiB the proportional share of home (6737571 sectors)
			// falls below its minimum of 7000001, which is not a multiple of
			// 512: it is rounded up, not down into the filesystem, and root
			// gives back what that costs.
			name: "linux gpt onto 10 GiB", orig: linux, min: linuxMin, fixed: "1:2", disk: 10 * gib,
			want: map[int]span{
				1: {2048, 2048}, 2: {4096, 1048576}, 3: {1052672, 8723968},
				4: {9776640, 4194304}, 5: {13970944, 7000064},
			},
			wantLast: 20971486, wantScaled: []int{3, 5},
		},
		{
			// The extended partition is sized around its logicals, each
			// logical 512 sectors after the previous end for its boot
			// record; swap (type 82) keeps its size.
			name: "linux dos with logicals onto 64 GiB", orig: linuxDOS, min: linuxDOSMin, fixed: "", disk: 64 * gib,
			want: map[int]span{
				1: {2048, 117437440}, 2: {117439488, 16777728}, 5: {117440000, 2097152}, 6: {119537664, 14679552},
			},
			wantScaled: []int{1, 6},
		},
		{
			// No minimum table: the original sizes are the minimums, as in
			// FOS; the same disk size gives the same layout.
			name: "no minimum table, same disk", orig: win7, fixed: "1", disk: 40 * gib,
			want:       map[int]span{1: {2048, 204800}, 2: {206848, 83679232}},
			wantScaled: []int{2},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := parse(t, tc.orig)
			var min *sfdisk.Dump
			if tc.min != "" {
				min = parse(t, tc.min)
			}
			fixed, err := fill.ParseFixed([]byte(tc.fixed))
			if err != nil {
				t.Fatal(err)
			}
			g := disk(tc.disk)
			l, err := fill.Fill(orig, min, fixed, g)
			if err != nil {
				t.Fatal(err)
			}
			got := map[int]span{}
			for _, p := range l.Table.Partitions {
				got[p.Number] = span{p.Start, p.Size}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("layout\n got %v\nwant %v\n%s", got, tc.want, fill.Format(l.Table))
			}
			if l.Table.LastLBA != tc.wantLast {
				t.Errorf("last-lba %d, want %d", l.Table.LastLBA, tc.wantLast)
			}
			var scaled []int
			for _, p := range l.Table.Partitions {
				if !l.Fixed[p.Number] && !p.Extended() {
					scaled = append(scaled, p.Number)
				}
			}
			if fmt.Sprint(scaled) != fmt.Sprint(tc.wantScaled) {
				t.Errorf("scaled partitions %v, want %v", scaled, tc.wantScaled)
			}
			checkLayout(t, orig, min, fixed, g, l)
		})
	}
}

func TestFillTooSmall(t *testing.T) {
	orig, min := parse(t, fogtest.Win10), parse(t, fogtest.Win10Min)
	// Fixed 1320960 sectors + C: at least 52428800 + first 2048 + backup
	// GPT 33 = 53751841 sectors.
	_, err := fill.Fill(orig, min, []int{1, 2, 4}, disk(25*gib))
	var tooSmall *fill.TooSmallError
	if !errors.As(err, &tooSmall) || !errors.Is(err, ptable.ErrDoesNotFit) {
		t.Fatalf("err = %v, want a TooSmallError", err)
	}
	if tooSmall.Need != 53751841*512 {
		t.Errorf("need %d bytes, want %d", tooSmall.Need, 53751841*512)
	}
	// Exactly that much is enough.
	if _, err := fill.Fill(orig, min, []int{1, 2, 4}, disk(tooSmall.Need)); err != nil {
		t.Errorf("a disk of the size named as needed: %v", err)
	}
	if _, err := fill.Fill(orig, min, []int{1, 2, 4}, disk(tooSmall.Need-512)); err == nil {
		t.Error("a disk one sector smaller than needed was accepted")
	}
}

func TestFillRefuses(t *testing.T) {
	orig := parse(t, fogtest.Win10)
	for _, tc := range []struct {
		name string
		min  string
		g    ptable.Geometry
		want error
	}{
		{"4Kn disk", "", ptable.Geometry{Size: 256 * gib, LogicalSectorSize: 4096}, ptable.ErrSectorSize},
		{"minimum table of another label", win7Min, disk(256 * gib), fill.ErrInput},
		{"partition only in the minimum table", strings.Replace(fogtest.Win10Min, "/dev/sda4", "/dev/sda7", 1), disk(256 * gib), fill.ErrInput},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var min *sfdisk.Dump
			if tc.min != "" {
				min = parse(t, tc.min)
			}
			if _, err := fill.Fill(orig, min, nil, tc.g); !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestParseFixed(t *testing.T) {
	for in, want := range map[string]string{
		"":             "[]",
		"1:3":          "[1 3]",
		":4:1:3:\n":    "[1 3 4]",
		"2\x00:2:\x00": "[2]",
	} {
		got, err := fill.ParseFixed([]byte(in))
		if err != nil || fmt.Sprint(got) != want {
			t.Errorf("ParseFixed(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"1:x", "0", "1:-2", "99999"} {
		if _, err := fill.ParseFixed([]byte(in)); !errors.Is(err, fill.ErrInput) {
			t.Errorf("ParseFixed(%q) err = %v, want ErrInput", in, err)
		}
	}
}

func TestFormatRoundTrip(t *testing.T) {
	for _, s := range []string{fogtest.Win10, win7, linux, linuxDOS} {
		d := parse(t, s)
		d.Partitions[0].Name = "odd \"name\" \\ here"
		if d.Label == "dos" {
			d.Partitions[0].Name = ""
		}
		back := parse(t, fill.Format(d))
		if fmt.Sprint(back) != fmt.Sprint(d) {
			t.Errorf("round trip\n got %+v\nwant %+v", back, d)
		}
	}
}

// TestFillSfdiskAccepts writes each computed table with the real sfdisk
// onto a sparse file of the disk's size and reads it back: sfdisk must
// take it as it is, logical partitions included.
func TestFillSfdiskAccepts(t *testing.T) {
	fogtest.Need(t, "sfdisk")
	for _, tc := range []struct {
		orig, min, fixed string
		disk             int64
	}{
		{fogtest.Win10, fogtest.Win10Min, "1:2:4", 256 * gib},
		{win7, win7Min, "1", 120 * gib},
		{linux, linuxMin, "1:2", 12 * gib},
		{linuxDOS, linuxDOSMin, "", 64 * gib},
	} {
		orig := parse(t, tc.orig)
		fixed, _ := fill.ParseFixed([]byte(tc.fixed))
		l, err := fill.Fill(orig, parse(t, tc.min), fixed, disk(tc.disk))
		if err != nil {
			t.Fatal(err)
		}
		img := filepath.Join(t.TempDir(), "disk")
		if err := os.WriteFile(img, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, tc.disk); err != nil {
			t.Fatal(err)
		}
		fogtest.RunStdin(t, fill.Format(l.Table), "sfdisk", "--no-reread", "--no-tell-kernel", "-q", img)
		back := parse(t, fogtest.Run(t, "sfdisk", "-d", img))
		for _, p := range l.Table.Partitions {
			q, ok := back.Partition(p.Number)
			if !ok || q.Start != p.Start || q.Size != p.Size || q.Type != p.Type || q.UUID != p.UUID {
				t.Errorf("%s partition %d: sfdisk wrote %+v, want %+v", orig.Label, p.Number, q, p)
			}
		}
	}
}

// checkLayout asserts what every computed layout must satisfy.
func checkLayout(t testing.TB, orig, min *sfdisk.Dump, fixed []int, g ptable.Geometry, l *fill.Layout) {
	t.Helper()
	out := l.Table
	back, err := sfdisk.Parse(strings.NewReader(fill.Format(out)))
	if err != nil {
		t.Fatalf("the computed table does not parse (overlap?): %v\n%s", err, fill.Format(out))
	}
	if len(back.Partitions) != len(orig.Partitions) {
		t.Fatalf("%d partitions, the original has %d", len(back.Partitions), len(orig.Partitions))
	}
	ss := uint64(g.LogicalSectorSize)
	align := fill.AlignBytes / ss
	last := uint64(g.Size)/ss - 1
	if orig.Label == "gpt" {
		last -= 33
	}
	minSize := map[int]uint64{}
	for _, p := range orig.Partitions {
		minSize[p.Number] = p.Size
	}
	if min != nil {
		for _, p := range min.Partitions {
			minSize[p.Number] = p.Size
		}
	}
	isFixed := map[int]bool{}
	for _, n := range fixed {
		isFixed[n] = true
	}
	firstStart := uint64(0)
	for i, p := range orig.Partitions {
		if i == 0 || p.Start < firstStart {
			firstStart = p.Start
		}
	}
	for _, p := range out.Partitions {
		o, ok := orig.Partition(p.Number)
		if !ok {
			t.Fatalf("partition %d is not in the original", p.Number)
		}
		if o.Type != p.Type || o.UUID != p.UUID || o.Name != p.Name || o.Attrs != p.Attrs || o.Bootable != p.Bootable {
			t.Errorf("partition %d: entry %+v differs from the original %+v beyond start and size", p.Number, p, o)
		}
		if p.End() > last {
			t.Errorf("partition %d ends at %d, past the last usable sector %d", p.Number, p.End(), last)
		}
		if p.Extended() && orig.Label == "dos" {
			continue
		}
		if p.Size < minSize[p.Number] {
			t.Errorf("partition %d: %d sectors, below its minimum %d", p.Number, p.Size, minSize[p.Number])
		}
		if (isFixed[p.Number] || fill.IsSwap(orig.Label, o)) && p.Size != o.Size {
			t.Errorf("fixed partition %d: %d sectors, was %d", p.Number, p.Size, o.Size)
		}
		if !l.Fixed[p.Number] && p.Size%align != 0 {
			t.Errorf("resized partition %d: size %d not a multiple of %d", p.Number, p.Size, align)
		}
		if p.Start%align != 0 && p.Start != min0(min, firstStart) {
			t.Errorf("partition %d starts at %d, not aligned to %d", p.Number, p.Start, align)
		}
	}
	byStart := func(d *sfdisk.Dump) []int {
		ps := append([]sfdisk.Partition(nil), d.Partitions...)
		sort.SliceStable(ps, func(i, j int) bool { return ps[i].Start < ps[j].Start })
		var n []int
		for _, p := range ps {
			n = append(n, p.Number)
		}
		return n
	}
	if a, b := fmt.Sprint(byStart(orig)), fmt.Sprint(byStart(out)); a != b {
		t.Errorf("order on disk changed: %s, was %s", b, a)
	}
	if !hasLogicals(out) {
		if err := ptable.Check(out, g, nil); err != nil {
			t.Errorf("ptable.Check refuses the computed table: %v", err)
		}
	}
}

// min0 is the first start the layout may keep unaligned: the smallest
// start of the minimum table.
func min0(min *sfdisk.Dump, fallback uint64) uint64 {
	if min == nil {
		return fallback
	}
	s := uint64(0)
	for i, p := range min.Partitions {
		if i == 0 || p.Start < s {
			s = p.Start
		}
	}
	return s
}

func hasLogicals(d *sfdisk.Dump) bool {
	for _, p := range d.Partitions {
		if d.Label == "dos" && p.Number > 4 {
			return true
		}
	}
	return false
}

// randomImage makes a plausible original table, its minimum and a fixed
// list.
func randomImage(r *rand.Rand) (orig, min *sfdisk.Dump, fixed []int) {
	label := "gpt"
	if r.IntN(2) == 0 {
		label = "dos"
	}
	orig = &sfdisk.Dump{Label: label, Unit: "sectors", SectorSize: 512}
	cursor := uint64(2048)
	if label == "dos" && r.IntN(4) == 0 {
		cursor = 63
	}
	n := 1 + r.IntN(4)
	types := map[string][]string{
		"gpt": {"0FC63DAF-8483-4772-8E79-3D69D8477DE4", "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", fill.LinuxSwapGUID, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"},
		"dos": {"83", "7", "82", "b"},
	}[label]
	for i := 1; i <= n; i++ {
		size := uint64(1 + r.IntN(1<<22))
		if r.IntN(2) == 0 {
			size = (size + 2047) &^ 2047
		}
		orig.Partitions = append(orig.Partitions, sfdisk.Partition{Number: i, Start: cursor, Size: size, Type: types[r.IntN(len(types))]})
		cursor += size + uint64(r.IntN(3))*2048
	}
	if label == "dos" && n < 4 && r.IntN(2) == 0 {
		// An extended partition with one to three logicals.
		ext := sfdisk.Partition{Number: n + 1, Start: cursor, Type: "5"}
		c := cursor + 2048
		for j := 0; j < 1+r.IntN(3); j++ {
			size := uint64(1 + r.IntN(1<<21))
			orig.Partitions = append(orig.Partitions, sfdisk.Partition{Number: 5 + j, Start: c, Size: size, Type: types[r.IntN(len(types))]})
			c += size + 2048
		}
		ext.Size = c - cursor
		orig.Partitions = append(orig.Partitions, ext)
		sort.SliceStable(orig.Partitions, func(i, j int) bool { return orig.Partitions[i].Number < orig.Partitions[j].Number })
		cursor = c
	}
	if label == "gpt" {
		orig.FirstLBA = 34
	}
	min = &sfdisk.Dump{Label: label, Unit: "sectors", SectorSize: 512, FirstLBA: orig.FirstLBA}
	for _, p := range orig.Partitions {
		q := p
		if !p.Extended() || label == "gpt" {
			q.Size = max(1, p.Size-uint64(r.IntN(int(p.Size))))
		}
		min.Partitions = append(min.Partitions, q)
		if r.IntN(3) == 0 {
			fixed = append(fixed, p.Number)
		}
	}
	return orig, min, fixed
}

// TestFillProperties: on random images and disks, a layout that is
// returned fits the disk, is aligned, keeps the order and every minimum;
// a refusal happens only when the disk is too small, and a larger disk
// is then never refused.
func TestFillProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 3000; i++ {
		orig, min, fixed := randomImage(r)
		var total uint64
		for _, p := range orig.Partitions {
			total = max(total, p.End()+1)
		}
		size := int64(float64(total) * (0.2 + 3*r.Float64()) * 512)
		size = max(size, 1<<20)
		g := disk(size &^ 511)
		l, err := fill.Fill(orig, min, fixed, g)
		var tooSmall *fill.TooSmallError
		switch {
		case errors.As(err, &tooSmall):
			if tooSmall.Need <= g.Size {
				t.Fatalf("case %d: refused a %d-byte disk as too small, needing only %d", i, g.Size, tooSmall.Need)
			}
			if _, err := fill.Fill(orig, min, fixed, disk(tooSmall.Need)); err != nil {
				t.Fatalf("case %d: the size named as needed (%d) is refused too: %v\n%s", i, tooSmall.Need, err, fill.Format(orig))
			}
			continue
		case err != nil:
			t.Fatalf("case %d: %v\n%s", i, err, fill.Format(orig))
		}
		checkLayout(t, orig, min, fixed, g, l)
		if t.Failed() {
			t.Fatalf("case %d:\n%s\nminimum:\n%s\nfixed %v, disk %d\nresult:\n%s", i, fill.Format(orig), fill.Format(min), fixed, g.Size, fill.Format(l.Table))
		}
		bigger := disk(g.Size + int64(r.IntN(1<<30))&^511)
		if _, err := fill.Fill(orig, min, fixed, bigger); err != nil {
			t.Fatalf("case %d: %d bytes fit but %d do not: %v", i, g.Size, bigger.Size, err)
		}
	}
}

func FuzzFill(f *testing.F) {
	f.Add(fogtest.Win10, fogtest.Win10Min, "1:2:4", int64(256*gib))
	f.Add(win7, win7Min, "1", int64(120*gib))
	f.Add(linux, linuxMin, "1:2", int64(12*gib))
	f.Add(linuxDOS, linuxDOSMin, "", int64(64*gib))
	f.Fuzz(func(t *testing.T, origText, minText, fixedText string, size int64) {
		orig, err := sfdisk.Parse(strings.NewReader(origText))
		if err != nil {
			return
		}
		min, err := sfdisk.Parse(strings.NewReader(minText))
		if err != nil {
			min = nil
		}
		fixed, err := fill.ParseFixed([]byte(fixedText))
		if err != nil {
			return
		}
		g := disk(size &^ 511)
		if g.Size <= 0 || orig.SectorSize != 512 {
			if _, err := fill.Fill(orig, min, fixed, g); err == nil && g.Size <= 0 {
				t.Fatal("a disk of no size was accepted")
			}
			return
		}
		l, err := fill.Fill(orig, min, fixed, g)
		if err != nil {
			return
		}
		checkLayout(t, orig, min, fixed, g, l)
	})
}
