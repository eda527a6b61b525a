package kmod

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/testfs"
)

// TestColdplug runs coldplug over a fake sysfs: loading virtio_pci creates
// the virtio network device (as the real driver does), which then needs
// virtio_net; the SATA controller's ahci waits until no network driver is
// loading.
func TestColdplug(t *testing.T) {
	ix, err := ParseIndex("/m",
		strings.NewReader("kernel/virtio.ko:\nkernel/virtio_pci.ko: kernel/virtio.ko\nkernel/virtio_net.ko: kernel/virtio.ko\nkernel/ahci.ko:\n"),
		strings.NewReader("alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\nalias virtio:d00000001v* virtio_net\nalias pci:v*d*sv*sd*bc01sc06i01* ahci\n"),
		nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sysfs := testfs.Tree(t, map[string]string{
		"bus/pci/devices/0000:00:02.0/modalias": "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00\n",
		"bus/pci/devices/0000:00:1f.2/modalias": "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01\n",
		"bus/pci/devices/0000:00:1f.3/modalias": "pci:v00008086d00002930sv00001AF4sd00001100bc0Csc05i00\n", // no driver
	}, nil)
	var mu sync.Mutex
	var order []string
	l := NewLoader(ix)
	l.load = func(path, _ string) error {
		name := Name(path)
		mu.Lock()
		order = append(order, name)
		mu.Unlock()
		if name == "virtio_pci" {
			dir := filepath.Join(sysfs, "bus/virtio/devices/virtio0")
			os.MkdirAll(dir, 0o755)
			os.WriteFile(filepath.Join(dir, "modalias"), []byte("virtio:d00000001v00001AF4\n"), 0o644)
		}
		return nil
	}
	d := &Drivers{Loader: l, Sysfs: sysfs}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d.Start(ctx)
	select {
	case <-d.Settled():
	case <-time.After(10 * time.Second):
		t.Fatal("coldplug did not settle")
	}
	want := []string{"virtio", "virtio_pci", "virtio_net", "ahci"}
	mu.Lock()
	defer mu.Unlock()
	if len(order) != len(want) {
		t.Fatalf("loaded %v, want %v", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("loaded %v, want %v (network drivers first, ahci last)", order, want)
		}
	}
	if got := d.Matches("virtio:d00000001v00001AF4"); len(got) != 1 || got[0] != "virtio_net" {
		t.Errorf("Matches(virtio net) = %v", got)
	}
}

func TestIsNetworkModalias(t *testing.T) {
	for ma, want := range map[string]bool{
		"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00": true,
		"pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01": false,
		"virtio:d00000001v00001AF4":                             true,
		"virtio:d00000002v00001AF4":                             false,
		"usb:v0BDAp8153d3000dc00dsc00dp00icFFiscFFip00in00":     false,
	} {
		if got := isNetworkModalias(ma); got != want {
			t.Errorf("isNetworkModalias(%s) = %v", ma, got)
		}
	}
}
