package main

import (
	"bytes"
	"compress/gzip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/imgcast/imgcast/pkg/kmod"
)

// writeTree creates a module tree: files maps paths under root to contents.
func writeTree(t *testing.T, root string, files map[string][]byte) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, c, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// readArchive returns the archive's regular files by name.
func readArchive(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(f))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, r := range recs {
		if r.Mode&cpio.S_IFMT != cpio.S_IFREG {
			continue
		}
		b := make([]byte, r.FileSize)
		if _, err := r.ReadAt(b, 0); err != nil && r.FileSize > 0 {
			t.Fatalf("%s: %v", r.Name, err)
		}
		out[r.Name] = b
	}
	return out
}

func TestStageFakeTree(t *testing.T) {
	root := t.TempDir()
	kver := "6.1.0-test"
	tree := filepath.Join(root, kver)
	writeTree(t, tree, map[string][]byte{
		"modules.dep": []byte("kernel/net/virtio_net.ko: kernel/net/failover.ko\nkernel/net/failover.ko:\n" +
			"kernel/net/e1000e.ko.gz:\nkernel/scsi/sd_mod.ko: kernel/lib/crc-t10dif.ko\nkernel/lib/crc-t10dif.ko:\n" +
			"kernel/crypto/crct10dif-pclmul.ko:\nkernel/sound/snd.ko:\n"),
		"modules.alias": []byte("# comment\nalias virtio:d00000001v* virtio_net\nalias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e\n" +
			"alias scsi:t-0x00* sd_mod\nalias sound-x snd\n"),
		"modules.softdep":                   []byte("softdep crc-t10dif pre: crct10dif-pclmul\nsoftdep snd pre: snd_timer\n"),
		"modules.builtin":                   []byte("kernel/net/packet/af_packet.ko\n"),
		"kernel/net/virtio_net.ko":          []byte("virtio_net module"),
		"kernel/net/failover.ko":            []byte("failover module"),
		"kernel/net/e1000e.ko.gz":           gz([]byte("e1000e module")),
		"kernel/scsi/sd_mod.ko":             []byte("sd_mod module"),
		"kernel/lib/crc-t10dif.ko":          []byte("crc module"),
		"kernel/crypto/crct10dif-pclmul.ko": []byte("pclmul module"),
		"kernel/sound/snd.ko":               []byte("sound module"),
	})
	list := filepath.Join(t.TempDir(), "modules.list")
	os.WriteFile(list, []byte("# NICs\nvirtio_net e1000e  # Intel\nsd_mod\nbnx2?   # not in this kernel\n"), 0o644)
	out := filepath.Join(t.TempDir(), "modules.cpio")
	var stdout bytes.Buffer
	if err := run([]string{"-kver", kver, "-root", root, "-list", list, "-firmware", t.TempDir(), "-o", out}, &stdout); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "6 modules (4 named") || !strings.Contains(stdout.String(), "optional module bnx2 is not in this kernel") {
		t.Errorf("summary: %s", stdout.String())
	}
	files := readArchive(t, out)
	base := "lib/modules/" + kver + "/"
	var names []string
	for n := range files {
		names = append(names, strings.TrimPrefix(n, base))
	}
	sort.Strings(names)
	want := "kernel/crypto/crct10dif-pclmul.ko.xz kernel/lib/crc-t10dif.ko.xz kernel/net/e1000e.ko.xz kernel/net/failover.ko.xz " +
		"kernel/net/virtio_net.ko.xz kernel/scsi/sd_mod.ko.xz modules.alias modules.builtin modules.dep modules.softdep"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("archive holds\n %s\nwant\n %s", got, want)
	}
	// Modules are xz-compressed and decompress to the original (the
	// gzipped one too).
	for name, orig := range map[string]string{"kernel/net/e1000e.ko.xz": "e1000e module", "kernel/net/virtio_net.ko.xz": "virtio_net module"} {
		got, err := kmod.Decompress(bytes.NewReader(files[base+name]))
		if err != nil || string(got) != orig {
			t.Errorf("%s: %q, %v", name, got, err)
		}
	}
	// The staged index names only staged modules, under their new paths,
	// and loads the way the original would.
	ix, err := kmod.ParseIndex("/", bytes.NewReader(files[base+"modules.dep"]), bytes.NewReader(files[base+"modules.alias"]),
		bytes.NewReader(files[base+"modules.softdep"]), bytes.NewReader(files[base+"modules.builtin"]))
	if err != nil {
		t.Fatal(err)
	}
	if order, err := ix.LoadOrder("sd_mod"); err != nil || strings.Join(order, " ") != "crct10dif_pclmul crc_t10dif sd_mod" {
		t.Errorf("staged LoadOrder(sd_mod) = %v, %v", order, err)
	}
	if ix.Path("e1000e") != "kernel/net/e1000e.ko.xz" || ix.Has("snd") || len(ix.Match("sound-x")) != 0 {
		t.Errorf("staged index: e1000e at %q, has snd %v", ix.Path("e1000e"), ix.Has("snd"))
	}
	if strings.Contains(string(files[base+"modules.softdep"]), "snd") {
		t.Error("softdep of an unstaged module kept")
	}

	// A missing module that is not optional fails the build.
	os.WriteFile(list, []byte("virtio_net nosuchdriver\n"), 0o644)
	err = run([]string{"-kver", kver, "-root", root, "-list", list, "-o", out}, &stdout)
	if err == nil || !strings.Contains(err.Error(), "nosuchdriver") {
		t.Errorf("missing module: err = %v", err)
	}
}

// debianKernel returns the version of Debian's linux-image-amd64, or skips.
func debianKernel(t *testing.T) string {
	t.Helper()
	dep, err := exec.Command("dpkg-query", "-W", "-f=${Depends}", "linux-image-amd64").Output()
	if err != nil {
		t.Skip("linux-image-amd64 is not installed (scripts/deps.sh installs it)")
	}
	return strings.TrimPrefix(strings.Fields(string(dep))[0], "linux-image-")
}

// TestStageDebianKernel stages real modules of the installed Debian kernel
// and the firmware their .modinfo names: what is found is shipped
// xz-compressed (from plain, .xz and .zst sources), what is not is listed
// with its Debian package.
func TestStageDebianKernel(t *testing.T) {
	kver := debianKernel(t)
	list := filepath.Join(t.TempDir(), "modules.list")
	os.WriteFile(list, []byte("virtio_net r8169 tg3\n"), 0o644)
	fwdir := t.TempDir()
	writeTree(t, fwdir, map[string][]byte{
		"rtl_nic/rtl8168h-2.fw": []byte("plain firmware"),
		"tigon/tg3_tso5.bin.xz": xzData(t, []byte("xz firmware")),
		"tigon/tg3.bin.zst":     zstData(t, []byte("zstd firmware")),
		"tigon/unrelated.bin":   []byte("nobody asks for this"),
	})
	out := filepath.Join(t.TempDir(), "modules.cpio")
	fwOut := filepath.Join(t.TempDir(), "firmware.cpio")
	var stdout bytes.Buffer
	if err := run([]string{"-kver", kver, "-list", list, "-firmware", fwdir, "-firmware-out", fwOut, "-o", out}, &stdout); err != nil {
		t.Fatal(err)
	}
	report := stdout.String()
	for _, want := range []string{
		"r8169: shipped rtl_nic/rtl8168h-2.fw\n",
		"r8169: MISSING rtl_nic/",
		"(Debian package firmware-realtek;",
		"tg3: shipped tigon/tg3.bin tigon/tg3_tso5.bin\n",
		"tg3: MISSING tigon/tg357766.bin tigon/tg3_tso.bin (Debian package firmware-misc-nonfree;",
		"firmware: 3 files shipped",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if strings.Contains(report, "virtio_net:") {
		t.Errorf("virtio_net needs no firmware:\n%s", report)
	}
	files := readArchive(t, out)
	var ko []string
	for n := range files {
		if strings.HasSuffix(n, ".ko.xz") {
			ko = append(ko, filepath.Base(n))
			// The client's decoder reads what xz wrote: an ELF module.
			if m, err := kmod.Decompress(bytes.NewReader(files[n])); err != nil || !bytes.HasPrefix(m, []byte("\x7fELF")) {
				t.Errorf("%s: not a module once decompressed: %v", n, err)
			}
		}
		if strings.HasPrefix(n, "lib/firmware") {
			t.Errorf("firmware %s in the modules archive", n)
		}
	}
	sort.Strings(ko)
	for _, want := range []string{"failover.ko.xz", "net_failover.ko.xz", "r8169.ko.xz", "tg3.ko.xz", "virtio_net.ko.xz"} {
		if !strings.Contains(strings.Join(ko, " "), want) {
			t.Errorf("%s not staged: %v", want, ko)
		}
	}

	fw := readArchive(t, fwOut)
	want := map[string]string{
		"lib/firmware/rtl_nic/rtl8168h-2.fw.xz": "plain firmware",
		"lib/firmware/tigon/tg3_tso5.bin.xz":    "xz firmware",
		"lib/firmware/tigon/tg3.bin.xz":         "zstd firmware",
	}
	if len(fw) != len(want) {
		t.Errorf("firmware archive holds %d files, want %d", len(fw), len(want))
	}
	for name, content := range want {
		b, ok := fw[name]
		if !ok {
			t.Errorf("%s not in the firmware archive", name)
			continue
		}
		// As the kernel reads it: xz with CRC32 checks.
		dec := exec.Command("xz", "-dc")
		dec.Stdin = bytes.NewReader(b)
		plain, err := dec.Output()
		if err != nil || string(plain) != content {
			t.Errorf("%s: %q, %v", name, plain, err)
		}
		tmp := filepath.Join(t.TempDir(), "fw.xz")
		os.WriteFile(tmp, b, 0o644)
		if info, err := exec.Command("xz", "--robot", "--list", tmp).Output(); err != nil || !strings.Contains(string(info), "\tCRC32\t") {
			t.Errorf("%s: not CRC32-checked: %s %v", name, info, err)
		}
	}

	// Without -firmware-out nothing is shipped, and it says so.
	stdout.Reset()
	if err := run([]string{"-kver", kver, "-list", list, "-firmware", fwdir, "-o", out}, &stdout); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "firmware NOT shipped (no -firmware-out): r8169, tg3 ask for") {
		t.Errorf("report without firmware: %s", stdout.String())
	}
}

func xzData(t *testing.T, b []byte) []byte {
	t.Helper()
	out, err := xzKernel(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func zstData(t *testing.T, b []byte) []byte {
	t.Helper()
	out, err := zstd19(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A staged module's zstd frame states its size, so the client's decoder
// needs a window no larger than the module (not zstd -19's 8 MiB).
func TestZstdFrameStatesItsSize(t *testing.T) {
	data := bytes.Repeat([]byte("module text "), 10000)
	c, err := zstd19(data)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(t.TempDir(), "m.ko.zst")
	os.WriteFile(tmp, c, 0o644)
	out, err := exec.Command("zstd", "-lv", tmp).CombinedOutput()
	if err != nil {
		t.Fatalf("zstd -lv: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "Decompressed Size:") || strings.Contains(string(out), "Window Size: 8.00 MiB") {
		t.Errorf("frame without its content size, or with an 8 MiB window:\n%s", out)
	}
}

// An xz file written for the client or the kernel names a dictionary no
// larger than (xz's rounding of) its data, not -9e's 64 MiB: streaming
// decoders allocate what the header names.
func TestXZDictionaryBoundedByData(t *testing.T) {
	for _, n := range []int{100, 300_000, 2_500_000} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i * i >> 7)
		}
		c, err := xzKernel(data)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := kmod.Decompress(bytes.NewReader(c)); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: does not decompress to the original: %v", n, err)
		}
		tmp := filepath.Join(t.TempDir(), "m.ko.xz")
		os.WriteFile(tmp, c, 0o644)
		out, err := exec.Command("xz", "--robot", "-lvv", tmp).CombinedOutput()
		if err != nil {
			t.Fatalf("xz -lvv: %v\n%s", err, out)
		}
		dict := xzListedDict(t, string(out))
		if limit := max(2*n, xzMinDict); dict > limit {
			t.Errorf("%d bytes: dictionary %d bytes, want at most %d", n, dict, limit)
		}
	}
}

// xzListedDict returns the dictionary size in `xz --robot -lvv` output
// ("--lzma2=dict=48KiB").
func xzListedDict(t *testing.T, out string) int {
	t.Helper()
	_, rest, ok := strings.Cut(out, "--lzma2=dict=")
	if !ok {
		t.Fatalf("no dictionary size in:\n%s", out)
	}
	size := strings.FieldsFunc(rest, func(r rune) bool { return r == ',' || r == '\t' || r == '\n' || r == ' ' })[0]
	for suffix, unit := range map[string]int{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if v, ok := strings.CutSuffix(size, suffix); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("dictionary size %q: %v", size, err)
			}
			return n * unit
		}
	}
	n, err := strconv.Atoi(size)
	if err != nil {
		t.Fatalf("dictionary size %q: %v", size, err)
	}
	return n
}
