package main

import (
	"bytes"
	"compress/gzip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
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
	want := "kernel/crypto/crct10dif-pclmul.ko.zst kernel/lib/crc-t10dif.ko.zst kernel/net/e1000e.ko.zst kernel/net/failover.ko.zst " +
		"kernel/net/virtio_net.ko.zst kernel/scsi/sd_mod.ko.zst modules.alias modules.builtin modules.dep modules.softdep"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("archive holds\n %s\nwant\n %s", got, want)
	}
	// Modules are zstd-compressed and decompress to the original (the
	// gzipped one too).
	for name, orig := range map[string]string{"kernel/net/e1000e.ko.zst": "e1000e module", "kernel/net/virtio_net.ko.zst": "virtio_net module"} {
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
	if ix.Path("e1000e") != "kernel/net/e1000e.ko.zst" || ix.Has("snd") || len(ix.Match("sound-x")) != 0 {
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

// TestStageDebianKernel stages real modules of the installed Debian kernel
// and checks the firmware they ask for is found in their .modinfo.
func TestStageDebianKernel(t *testing.T) {
	dep, err := exec.Command("dpkg-query", "-W", "-f=${Depends}", "linux-image-amd64").Output()
	if err != nil {
		t.Skip("linux-image-amd64 is not installed (scripts/deps.sh installs it)")
	}
	kver := strings.TrimPrefix(strings.Fields(string(dep))[0], "linux-image-")
	list := filepath.Join(t.TempDir(), "modules.list")
	os.WriteFile(list, []byte("virtio_net r8169\n"), 0o644)
	out := filepath.Join(t.TempDir(), "modules.cpio")
	var stdout bytes.Buffer
	if err := run([]string{"-kver", kver, "-list", list, "-firmware", t.TempDir(), "-o", out}, &stdout); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "rtl_nic (") {
		t.Errorf("r8169's firmware not reported missing: %s", stdout.String())
	}
	files := readArchive(t, out)
	var ko []string
	for n := range files {
		if strings.HasSuffix(n, ".ko.zst") {
			ko = append(ko, filepath.Base(n))
		}
	}
	sort.Strings(ko)
	for _, want := range []string{"failover.ko.zst", "net_failover.ko.zst", "r8169.ko.zst", "virtio_net.ko.zst"} {
		if !strings.Contains(strings.Join(ko, " "), want) {
			t.Errorf("%s not staged: %v", want, ko)
		}
	}
}
