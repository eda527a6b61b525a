package kmod

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// A slice of a real Debian 6.1 module index, enough for the tests.
const (
	testDep = `kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko:
kernel/lib/crc-t10dif.ko: kernel/crypto/crct10dif_common.ko
kernel/crypto/crct10dif_common.ko:
kernel/arch/x86/crypto/crct10dif-pclmul.ko: kernel/crypto/crct10dif_common.ko
kernel/drivers/nvme/host/nvme.ko.xz: kernel/drivers/nvme/host/nvme-core.ko.xz kernel/lib/crc-t10dif.ko kernel/crypto/crct10dif_common.ko
kernel/drivers/nvme/host/nvme-core.ko.xz: kernel/lib/crc-t10dif.ko kernel/crypto/crct10dif_common.ko
kernel/drivers/broken/needs_missing.ko: kernel/drivers/broken/gone.ko
`
	testAlias = `# Aliases extracted from modules themselves.
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
alias pci:v00008086d0000153Asv*sd*bc*sc*i* e1000e
alias pci:v*d*sv*sd*bc01sc08i02* nvme
alias fs-ext4 ext4
alias cpu:type:x86,ven*fam*mod*:feature:*0081* crct10dif_pclmul
`
	testSoftdep = `# Soft dependencies extracted from modules themselves.
softdep crc-t10dif pre: crct10dif
softdep crc_t10dif pre: crct10dif_pclmul post: nothing
`
	testBuiltin = `kernel/drivers/block/loop.ko
kernel/net/packet/af_packet.ko
`
)

func testIndex(t testing.TB) *Index {
	t.Helper()
	ix, err := ParseIndex("/lib/modules/test", strings.NewReader(testDep), strings.NewReader(testAlias),
		strings.NewReader(testSoftdep), strings.NewReader(testBuiltin))
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

func TestName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/drivers/net/virtio_net.ko":           "virtio_net",
		"kernel/arch/x86/crypto/crct10dif-pclmul.ko": "crct10dif_pclmul",
		"kernel/drivers/nvme/host/nvme-core.ko.xz":   "nvme_core",
		"e1000e.ko.zst": "e1000e",
		"crc-t10dif":    "crc_t10dif",
		"x.ko.gz":       "x",
	} {
		if got := Name(in); got != want {
			t.Errorf("Name(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMatch(t *testing.T) {
	ix := testIndex(t)
	for _, tt := range []struct {
		modalias string
		want     []string
	}{
		{"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", []string{"virtio_pci"}},
		{"virtio:d00000001v00001AF4", []string{"virtio_net"}},
		{"virtio:d00000002v00001AF4", nil},
		{"pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00", []string{"e1000e"}},
		{"pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02", []string{"nvme"}},
		{"pci:v000010ECd00008029sv00001AF4sd00001100bc02sc00i00", nil}, // ne2k-pci: not shipped
		{"cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0081,0085", []string{"crct10dif_pclmul"}},
	} {
		if got := ix.Match(tt.modalias); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Match(%q) = %v, want %v", tt.modalias, got, tt.want)
		}
	}
}

func TestLoadOrder(t *testing.T) {
	ix := testIndex(t)
	for _, tt := range []struct {
		name    string
		want    []string
		wantErr bool
	}{
		{"virtio_net", []string{"failover", "net_failover", "virtio_ring", "virtio", "virtio_net"}, false},
		{"virtio-pci", []string{"virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_ring", "virtio", "virtio_pci"}, false},
		{"e1000e", []string{"e1000e"}, false},
		// The soft "pre" dependency comes first; crct10dif (named by the
		// first softdep line) is not in the tree and is skipped.
		{"crc_t10dif", []string{"crct10dif_common", "crct10dif_pclmul", "crc_t10dif"}, false},
		{"nvme", []string{"crct10dif_common", "crct10dif_pclmul", "crc_t10dif", "nvme_core", "nvme"}, false},
		{"loop", nil, false}, // built in
		{"needs_missing", nil, true},
		{"nonexistent", nil, true},
	} {
		got, err := ix.LoadOrder(tt.name)
		if (err != nil) != tt.wantErr {
			t.Errorf("LoadOrder(%s): err = %v, wantErr %v", tt.name, err, tt.wantErr)
			continue
		}
		var nf *NotFoundError
		if tt.wantErr && !errors.As(err, &nf) {
			t.Errorf("LoadOrder(%s): err = %v, want a NotFoundError", tt.name, err)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("LoadOrder(%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestReadIndexFromDir(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadIndex(dir); err == nil {
		t.Fatal("no modules.dep: want an error")
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(testDep), 0o644); err != nil {
		t.Fatal(err)
	}
	ix, err := ReadIndex(dir) // alias, softdep, builtin are optional
	if err != nil {
		t.Fatal(err)
	}
	if !ix.Has("virtio-net") || ix.Path("nvme") != "kernel/drivers/nvme/host/nvme.ko.xz" {
		t.Errorf("index from %s misses entries: %v", dir, ix.Names())
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.alias"), []byte("alias broken\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadIndex(dir); err == nil || !strings.Contains(err.Error(), "modules.alias") {
		t.Errorf("bad alias line: err = %v, want one naming modules.alias", err)
	}
}

func FuzzParseIndex(f *testing.F) {
	f.Add(testDep, testAlias, testSoftdep)
	f.Add("a.ko: b.ko\nb.ko: a.ko\n", "alias x:* a\n", "softdep a pre: b\n")
	f.Fuzz(func(t *testing.T, dep, aliases, softdep string) {
		ix, err := ParseIndex("/m", strings.NewReader(dep), strings.NewReader(aliases), strings.NewReader(softdep), nil)
		if err != nil {
			return
		}
		for _, n := range ix.Names() {
			_, _ = ix.LoadOrder(n) // must terminate, cycles included
			ix.Match(n)
		}
	})
}
