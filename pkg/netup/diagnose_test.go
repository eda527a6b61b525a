package netup

import (
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/testfs"
	"github.com/imgcast/imgcast/pkg/kmod"
)

func TestNetworkDevicesWithoutDriver(t *testing.T) {
	sysfs := testfs.Tree(t, map[string]string{
		// ne2k-pci NIC, no driver
		"bus/pci/devices/0000:00:03.0/class":    "0x020000\n",
		"bus/pci/devices/0000:00:03.0/vendor":   "0x10ec\n",
		"bus/pci/devices/0000:00:03.0/device":   "0x8029\n",
		"bus/pci/devices/0000:00:03.0/modalias": "pci:v000010ECd00008029sv00001AF4sd00001100bc02sc00i00\n",
		// e1000e NIC whose driver is bound
		"bus/pci/devices/0000:00:19.0/class":  "0x020000\n",
		"bus/pci/devices/0000:00:19.0/vendor": "0x8086\n",
		"bus/pci/devices/0000:00:19.0/device": "0x153a\n",
		// an unbound SATA controller: not a network device
		"bus/pci/devices/0000:00:1f.2/class": "0x010601\n",
		// virtio-net device without virtio_net
		"bus/virtio/devices/virtio0/device":   "0x0001\n",
		"bus/virtio/devices/virtio0/vendor":   "0x1af4\n",
		"bus/virtio/devices/virtio0/modalias": "virtio:d00000001v00001AF4\n",
		// virtio-blk device: not network
		"bus/virtio/devices/virtio1/device": "0x0002\n",
	}, map[string]string{
		"bus/pci/devices/0000:00:19.0/driver": "../../../bus/pci/drivers/e1000e",
	})
	ix, err := kmod.ParseIndex("/lib/modules/test", strings.NewReader("kernel/drivers/net/virtio_net.ko:\n"),
		strings.NewReader("alias virtio:d00000001v* virtio_net\n"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := networkDevicesWithoutDriver(sysfs, ix.Match)
	want := []NetDevice{
		{Bus: "pci", Addr: "0000:00:03.0", ID: "10ec:8029", Modalias: "pci:v000010ECd00008029sv00001AF4sd00001100bc02sc00i00"},
		{Bus: "virtio", Addr: "virtio0", ID: "1af4:0001", Modalias: "virtio:d00000001v00001AF4", Modules: []string{"virtio_net"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestDiagnosisText(t *testing.T) {
	nic := NIC{Name: "eth0", MAC: net.HardwareAddr{0x52, 0x54, 0, 1, 2, 3}, Driver: "e1000e", Device: "pci 0000:00:19.0"}
	d := &Diagnosis{
		Reason: "no DHCP lease on any NIC with carrier: is a DHCP server (or relay) serving this network?",
		Attempts: []*Attempt{
			{NIC: nic, Carrier: true, CarrierAfter: 120 * time.Millisecond, Err: &DHCPError{Interface: "eth0", Attempts: 4, Waited: 30 * time.Second, Err: errors.New("no answer from any DHCP server")}},
			{NIC: NIC{Name: "eth1", MAC: net.HardwareAddr{0x52, 0x54, 0, 1, 2, 4}}, Err: ErrNoCarrier},
		},
		NoDriver:      []NetDevice{{Bus: "pci", Addr: "0000:00:03.0", ID: "10ec:8029", Modalias: "pci:v000010ECd00008029"}},
		FailedModules: []kmod.Result{{Name: "r8169", Err: errors.New("module r8169: r8169.ko: exec format error")}},
		Tried:         []string{"watched for NICs and carrier for 15s"},
	}
	text := d.Error()
	for _, want := range []string{
		"no DHCP lease",
		"eth0 (52:54:00:01:02:03, driver e1000e, pci 0000:00:19.0): carrier after 120ms",
		"DHCP on eth0: no lease after 4 attempts in 30s",
		"eth1 (52:54:00:01:02:04): no carrier",
		"pci 0000:00:03.0 [10ec:8029]: no driver for it in this image",
		"module r8169: r8169.ko: exec format error",
		"What was tried:",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("diagnosis lacks %q:\n%s", want, text)
		}
	}
}

func TestIsPhysicalEthernet(t *testing.T) {
	sysfs := testfs.Tree(t, map[string]string{
		"class/net/eth0/type":        "1\n",
		"class/net/wlan0/type":       "1\n",
		"class/net/wlan0/wireless/x": "",
		"class/net/br0/type":         "1\n",
		"class/net/ib0/type":         "32\n",
		"devices/pci/0000:00:03.0/x": "",
	}, map[string]string{
		"class/net/eth0/device":  "../../../devices/pci/0000:00:03.0",
		"class/net/wlan0/device": "../../../devices/pci/0000:00:03.0",
		"class/net/ib0/device":   "../../../devices/pci/0000:00:03.0",
	})
	for name, want := range map[string]bool{"eth0": true, "wlan0": false, "br0": false, "ib0": false, "lo": false} {
		if got := IsPhysicalEthernet(sysfs, name); got != want {
			t.Errorf("IsPhysicalEthernet(%s) = %v, want %v", name, got, want)
		}
	}
}
