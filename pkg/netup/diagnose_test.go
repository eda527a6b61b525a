package netup

import (
	"errors"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/testfs"
	"golang.org/x/sys/unix"

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

func TestFirmwareFailures(t *testing.T) {
	for _, tt := range []struct {
		name string
		msgs []string
		want []FirmwareFailure
	}{
		{"none", []string{"r8169 0000:02:00.0 eth0: RTL8168h/8111h, 52:54:00:12:34:56, XID 541, IRQ 35"}, nil},
		{"r8169 without its firmware", []string{
			"r8169 0000:02:00.0: Direct firmware load for rtl_nic/rtl8168h-2.fw failed with error -2",
			"r8169 0000:02:00.0: Unable to load firmware rtl_nic/rtl8168h-2.fw (-2)",
			"r8169 0000:02:00.0: Direct firmware load for rtl_nic/rtl8168h-2.fw failed with error -2", // again on the next open
		}, []FirmwareFailure{{Driver: "r8169", Device: "0000:02:00.0", File: "rtl_nic/rtl8168h-2.fw", Errno: -2}}},
		{"two drivers", []string{
			"bnx2 0000:03:00.0: Direct firmware load for bnx2/bnx2-mips-09-6.2.1b.fw failed with error -2",
			"tg3 0000:04:00.0: Direct firmware load for tigon/tg3_tso5.bin failed with error -22",
		}, []FirmwareFailure{
			{Driver: "bnx2", Device: "0000:03:00.0", File: "bnx2/bnx2-mips-09-6.2.1b.fw", Errno: -2},
			{Driver: "tg3", Device: "0000:04:00.0", File: "tigon/tg3_tso5.bin", Errno: -22},
		}},
		{"garbled", []string{
			": Direct firmware load for  failed with error -2",
			"x y: Direct firmware load for a.fw failed with error minus two",
			"x y: Direct firmware load for a.fw",
		}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := firmwareFailures(tt.msgs); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestFirmwareFailureText(t *testing.T) {
	for _, tt := range []struct {
		f    FirmwareFailure
		want string
	}{
		{FirmwareFailure{"r8169", "0000:02:00.0", "rtl_nic/rtl8168h-2.fw", -2},
			"driver r8169 (0000:02:00.0): rtl_nic/rtl8168h-2.fw, not in this image; Debian package firmware-realtek (component non-free-firmware)"},
		{FirmwareFailure{"bnx2x", "0000:05:00.0", "bnx2x/bnx2x-e2-7.13.15.0.fw", -22},
			"driver bnx2x (0000:05:00.0): bnx2x/bnx2x-e2-7.13.15.0.fw, error -22; Debian package firmware-bnx2x"},
		{FirmwareFailure{"ice", "0000:06:00.0", "intel/ice/ddp/ice.pkg", -2}, "Debian package firmware-misc-nonfree"},
		{FirmwareFailure{"foo", "0000:07:00.0", "foo/bar.bin", -2}, "Debian package firmware-misc-nonfree (or another firmware-* package)"},
	} {
		if got := tt.f.String(); !strings.Contains(got, tt.want) {
			t.Errorf("%+v: %q lacks %q", tt.f, got, tt.want)
		}
	}
}

// The diagnosis reads the kernel log and names the firmware that failed.
func TestDiagnosisNamesFailedFirmware(t *testing.T) {
	orig := readKernelLog
	t.Cleanup(func() { readKernelLog = orig })
	readKernelLog = func() ([]string, error) {
		return kmsgMessages(strings.NewReader(
			"6,339,5140900,-;r8169 0000:02:00.0: Direct firmware load for rtl_nic/rtl8168h-2.fw failed with error -2\n" +
				" SUBSYSTEM=pci\n DEVICE=+pci:0000:02:00.0\n")), nil
	}
	u := &upRun{cfg: Config{Sysfs: t.TempDir()}, start: time.Now()}
	d := u.diagnose(t.Context(), nil)
	want := []FirmwareFailure{{Driver: "r8169", Device: "0000:02:00.0", File: "rtl_nic/rtl8168h-2.fw", Errno: -2}}
	if !reflect.DeepEqual(d.Firmware, want) {
		t.Errorf("firmware %+v, want %+v", d.Firmware, want)
	}
	if !strings.Contains(d.Error(), "Firmware that failed to load:\n  driver r8169 (0000:02:00.0): rtl_nic/rtl8168h-2.fw, not in this image; Debian package firmware-realtek") {
		t.Errorf("diagnosis text:\n%s", d.Error())
	}
}

// kmsgReader returns one record per Read, as /dev/kmsg does, then EAGAIN.
type kmsgReader struct {
	records []string
	errs    []error
}

func (r *kmsgReader) Read(p []byte) (int, error) {
	if len(r.errs) > 0 {
		err := r.errs[0]
		r.errs = r.errs[1:]
		if err != nil {
			return 0, err
		}
	}
	if len(r.records) == 0 {
		return 0, unix.EAGAIN
	}
	n := copy(p, r.records[0])
	r.records = r.records[1:]
	return n, nil
}

func TestKmsgMessages(t *testing.T) {
	r := &kmsgReader{
		records: []string{
			"6,1,100,-;first message\n SUBSYSTEM=pci\n",
			"4,3,300,-;third: a;b\n",
			"no separator\n",
		},
		errs: []error{nil, unix.EPIPE}, // the second record was overwritten
	}
	got := kmsgMessages(r)
	want := []string{"first message", "third: a;b"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func FuzzFirmwareFailures(f *testing.F) {
	f.Add("r8169 0000:02:00.0: Direct firmware load for rtl_nic/rtl8168h-2.fw failed with error -2")
	f.Add(": Direct firmware load for  failed with error ")
	f.Fuzz(func(t *testing.T, msg string) {
		for _, ff := range firmwareFailures([]string{msg}) {
			if ff.File == "" || !strings.Contains(msg, ff.File) {
				t.Errorf("%q gave %+v", msg, ff)
			}
			_ = ff.String()
		}
	})
}

// Reading the real kernel log returns what is there and does not wait for
// more.
func TestReadKernelLogReturns(t *testing.T) {
	if _, err := os.Stat("/dev/kmsg"); err != nil {
		t.Skip("no /dev/kmsg")
	}
	done := make(chan error, 1)
	go func() {
		_, err := readKernelLog()
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, os.ErrPermission) {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("readKernelLog still reading after 10 s")
	}
}
