package inventory

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// tree writes a fake root: files maps paths to contents, and a value
// starting with "->" makes a symlink to the rest.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// lab is a machine with two NICs, a SATA disk, an NVMe disk, a virtio disk,
// a USB stick, a DVD drive, a loop device and zram.
var lab = map[string]string{
	"sys/class/net/lo/address":                   "00:00:00:00:00:00\n",
	"sys/class/net/br0/address":                  "aa:bb:cc:dd:ee:ff\n",
	"sys/class/net/eno1/address":                 "52:54:00:12:34:56\n",
	"sys/class/net/eno1/device/driver":           "->../../../bus/pci/drivers/e1000e",
	"sys/class/net/eno1/device/vendor":           "0x8086\n",
	"sys/class/net/eno1/device/device":           "0x15bb\n",
	"sys/class/net/enp3s0/address":               "52:54:00:ab:cd:ef\n",
	"sys/class/net/enp3s0/device/driver":         "->../../../../bus/virtio/drivers/virtio_net",
	"sys/block/sda/size":                         "976773168\n",
	"sys/block/sda/removable":                    "0\n",
	"sys/block/sda/queue/rotational":             "1\n",
	"sys/block/sda/queue/logical_block_size":     "512\n",
	"sys/block/sda/device/model":                 "ST500DM002-1BD14\n",
	"sys/block/sda/device/vpd_pg80":              "\x00\x80\x00\x14      Z3TABCDE\x00",
	"sys/block/nvme0n1/size":                     "1000215216\n",
	"sys/block/nvme0n1/removable":                "0\n",
	"sys/block/nvme0n1/queue/rotational":         "0\n",
	"sys/block/nvme0n1/queue/logical_block_size": "4096\n",
	"sys/block/nvme0n1/device/model":             "Samsung SSD 970 EVO Plus 500GB          \n",
	"sys/block/nvme0n1/device/serial":            "S4EVNX0N123456      \n",
	"sys/block/vda/size":                         "196608\n",
	"sys/block/vda/removable":                    "0\n",
	"sys/block/vda/queue/rotational":             "1\n",
	"sys/block/vda/serial":                       "imgcast-test\n",
	"sys/block/sdb/size":                         "31266816\n",
	"sys/block/sdb/removable":                    "1\n",
	"sys/block/sdb/device/model":                 "Cruzer Blade    \n",
	"sys/block/sr0/size":                         "2097151\n",
	"sys/block/sr0/removable":                    "1\n",
	"sys/block/loop0/size":                       "0\n",
	"sys/block/zram0/size":                       "8388608\n",
	"proc/meminfo":                               "MemTotal:         262144 kB\nMemFree:          100000 kB\n",
	"sys/class/dmi/id/sys_vendor":                "Dell Inc.\n",
	"sys/class/dmi/id/product_name":              "OptiPlex 3070\n",
	"sys/class/dmi/id/product_serial":            "ABC1234\n",
	"sys/class/dmi/id/product_uuid":              "4c4c4544-0042-3010-8050-b2c04f4d3432\n",
}

func TestRead(t *testing.T) {
	m, err := Read(tree(t, lab))
	if err != nil {
		t.Fatal(err)
	}
	wantNICs := []NIC{
		{Name: "eno1", MAC: "52:54:00:12:34:56", Driver: "e1000e", PCI: "8086:15bb"},
		{Name: "enp3s0", MAC: "52:54:00:ab:cd:ef", Driver: "virtio_net"},
	}
	if !reflect.DeepEqual(m.NICs, wantNICs) {
		t.Errorf("NICs = %+v\nwant %+v", m.NICs, wantNICs)
	}
	if m.MemoryBytes != 256<<20 {
		t.Errorf("MemoryBytes = %d, want %d", m.MemoryBytes, 256<<20)
	}
	wantDMI := DMI{Vendor: "Dell Inc.", Product: "OptiPlex 3070", Serial: "ABC1234", UUID: "4c4c4544-0042-3010-8050-b2c04f4d3432"}
	if m.DMI != wantDMI {
		t.Errorf("DMI = %+v, want %+v", m.DMI, wantDMI)
	}
	var names []string
	for _, d := range m.Disks {
		names = append(names, d.Name)
	}
	if got := strings.Join(names, " "); got != "loop0 nvme0n1 sda sdb sr0 vda zram0" {
		t.Errorf("disks = %s", got)
	}
	byName := map[string]Disk{}
	for _, d := range m.Disks {
		byName[d.Name] = d
	}
	for _, want := range []Disk{
		{Name: "sda", Path: "/dev/sda", SizeBytes: 976773168 * 512, SectorSize: 512, Model: "ST500DM002-1BD14", Serial: "Z3TABCDE", Rotational: true},
		{Name: "nvme0n1", Path: "/dev/nvme0n1", SizeBytes: 1000215216 * 512, SectorSize: 4096, Model: "Samsung SSD 970 EVO Plus 500GB", Serial: "S4EVNX0N123456"},
		{Name: "vda", Path: "/dev/vda", SizeBytes: 96 << 20, Serial: "imgcast-test", Rotational: true},
		{Name: "sdb", Path: "/dev/sdb", SizeBytes: 31266816 * 512, Model: "Cruzer Blade", Removable: true},
	} {
		if got := byName[want.Name]; got != want {
			t.Errorf("disk %s = %+v\nwant %+v", want.Name, got, want)
		}
	}
}

func TestReadPartialTree(t *testing.T) {
	for _, tt := range []struct {
		name    string
		files   map[string]string
		wantErr []string // substrings; nil = no error
	}{
		{name: "VM without DMI", files: map[string]string{
			"sys/class/net/eth0/address": "52:54:00:00:00:01\n", "sys/class/net/eth0/device/driver": "->x/virtio_net",
			"sys/block/vda/size": "2048\n", "proc/meminfo": "MemTotal: 1024 kB\n",
		}},
		{name: "nothing at all", files: map[string]string{"etc/hostname": "x"},
			wantErr: []string{"network interfaces", "block devices", "memory"}},
		{name: "bad meminfo", files: map[string]string{
			"sys/class/net/.keep": "", "sys/block/.keep/size": "1", "proc/meminfo": "MemTotal: lots\n",
		}, wantErr: []string{"unexpected MemTotal"}},
		{name: "unreadable disk size", files: map[string]string{
			"sys/class/net/.keep": "", "sys/block/sda/size": "many\n", "proc/meminfo": "MemTotal: 1 kB\n",
		}, wantErr: []string{"block device sda"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Read(tree(t, tt.files))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Read: %v", err)
				}
				if len(m.NICs) != 1 || len(m.Disks) != 1 || m.MemoryBytes != 1<<20 || m.DMI != (DMI{}) {
					t.Fatalf("Read = %+v", m)
				}
				return
			}
			if err == nil {
				t.Fatalf("Read succeeded, want errors %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestChooseDisk(t *testing.T) {
	root := tree(t, lab)
	disks, err := ReadDisks(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		disks   []Disk
		minSize uint64
		want    string
		wantErr []string
	}{
		{name: "first fixed disk by name", disks: disks, minSize: 64 << 20, want: "nvme0n1"},
		{name: "skips too small", disks: disks, minSize: 600 << 30, want: ""},
		{name: "small image fits the virtio disk too", disks: disks[5:], minSize: 80 << 20, want: "vda"},
		{name: "too small named", disks: disks[5:], minSize: 100 << 20,
			wantErr: []string{"vda: too small (96 MiB < 100 MiB)", "zram0: not a physical disk"}},
		{name: "only removable and virtual", disks: []Disk{byName(disks, "sdb"), byName(disks, "sr0"), byName(disks, "loop0")}, minSize: 1,
			wantErr: []string{"sdb: removable", "sr0: not a physical disk", "loop0: not a physical disk"}},
		{name: "no medium", disks: []Disk{{Name: "sdc"}}, minSize: 1, wantErr: []string{"sdc: no medium"}},
		{name: "eMMC boot area", disks: []Disk{{Name: "mmcblk0boot0", SizeBytes: 4 << 20}, {Name: "mmcblk0", SizeBytes: 32 << 30}}, minSize: 1 << 20, want: "mmcblk0"},
		{name: "no disks", disks: nil, minSize: 1, wantErr: []string{"no block devices at all"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, err := ChooseDisk(tt.disks, tt.minSize)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("ChooseDisk = %s, want an error", d.Name)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				return
			}
			if tt.want == "" {
				if err == nil {
					t.Fatalf("ChooseDisk = %s, want an error", d.Name)
				}
				return
			}
			if err != nil || d.Name != tt.want {
				t.Fatalf("ChooseDisk = %q, %v; want %q", d.Name, err, tt.want)
			}
		})
	}
}

func byName(disks []Disk, name string) Disk {
	for _, d := range disks {
		if d.Name == name {
			return d
		}
	}
	panic(name)
}

func TestHumanBytes(t *testing.T) {
	for _, tt := range []struct {
		in   uint64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1024, "1 KiB"}, {96 << 20, "96 MiB"}, {3 << 29, "1.5 GiB"}, {500107862016, "465.8 GiB"}} {
		if got := HumanBytes(tt.in); got != tt.want {
			t.Errorf("HumanBytes(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestReadRealMachine(t *testing.T) {
	// The running machine has at least memory and block devices; this
	// catches sysfs layouts the fake tree does not model.
	m, err := Read("/")
	if err != nil {
		t.Logf("partial inventory: %v", err)
	}
	if m.MemoryBytes == 0 {
		t.Errorf("no memory read from /proc/meminfo: %+v", m)
	}
	t.Logf("%+v", m)
}

// A USB hard disk reports itself as not removable; it is still never
// the disk to image by default, for every user of ChooseDisk.
func TestUSBDiskIsNotChosen(t *testing.T) {
	root := tree(t, map[string]string{
		"sys/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host6/target6:0:0/6:0:0:0/block/sda/size":      "1953525168\n",
		"sys/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host6/target6:0:0/6:0:0:0/block/sda/removable": "0\n",
		"sys/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sdb/size":                  "976773168\n",
		"sys/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sdb/removable":             "0\n",
		"sys/block/sda": "->../devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host6/target6:0:0/6:0:0:0/block/sda",
		"sys/block/sdb": "->../devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sdb",
	})
	disks, err := ReadDisks(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(disks) != 2 || !disks[0].USB || disks[1].USB {
		t.Fatalf("disks %+v: want sda on USB, sdb not", disks)
	}
	d, err := ChooseDisk(disks, 1<<30)
	if err != nil || d.Name != "sdb" {
		t.Fatalf("ChooseDisk = %q, %v; want sdb (sda is a USB disk)", d.Name, err)
	}
	_, err = ChooseDisk(disks[:1], 1<<30)
	if err == nil || !strings.Contains(err.Error(), "sda: on USB") {
		t.Fatalf("ChooseDisk with only the USB disk: %v, want an error naming sda: on USB", err)
	}
}
