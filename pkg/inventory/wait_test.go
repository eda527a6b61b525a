package inventory

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/imgcast/imgcast/internal/testfs"
)

// events stands for kmod.Drivers' device events.
type events struct {
	mu sync.Mutex
	ch chan struct{}
}

func newEvents() *events { return &events{ch: make(chan struct{})} }

func (e *events) Changed() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ch
}

func (e *events) fire() {
	e.mu.Lock()
	close(e.ch)
	e.ch = make(chan struct{})
	e.mu.Unlock()
}

// addDisk makes a disk appear in the fake sysfs (512-byte sectors).
func addDisk(t *testing.T, root, name string, sectors string) {
	t.Helper()
	dir := filepath.Join(root, "sys/block", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for file, v := range map[string]string{"size": sectors + "\n", "removable": "0\n"} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func setFile(t *testing.T, root, path, content string) {
	t.Helper()
	full := filepath.Join(root, path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func emptyRoot(t *testing.T) string {
	root := testfs.Tree(t, map[string]string{"sys/block/.keep": ""}, nil)
	os.Remove(filepath.Join(root, "sys/block/.keep"))
	return root
}

type waitResult struct {
	d   Disk
	err error
	at  time.Duration
}

func waitInBackground(w DiskWait, minSize uint64) <-chan waitResult {
	out := make(chan waitResult, 1)
	start := time.Now()
	go func() {
		d, err := w.WaitDisk(context.Background(), minSize)
		out <- waitResult{d, err, time.Since(start)}
	}()
	return out
}

// Defect 4: a SATA data disk that is there first must not win over the
// NVMe system disk whose controller is still starting.
func TestWaitDiskWaitsForNVMeController(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := emptyRoot(t)
		addDisk(t, root, "sda", "976773168")
		setFile(t, root, "sys/class/nvme/nvme0/state", "resetting\n")
		ev := newEvents()
		loaded := make(chan struct{})
		close(loaded) // the nvme and ahci modules are loaded; nvme probes in the background
		res := waitInBackground(DiskWait{Root: root, Timeout: 10 * time.Second, Changed: ev.Changed, Loaded: loaded}, 1<<30)

		time.Sleep(3 * time.Second) // much longer than the settle window
		synctest.Wait()
		select {
		case r := <-res:
			t.Fatalf("chose %s (%v) while the NVMe controller was still resetting", r.d.Name, r.err)
		default:
		}
		setFile(t, root, "sys/class/nvme/nvme0/state", "live\n")
		os.MkdirAll(filepath.Join(root, "sys/class/nvme/nvme0/nvme0n1"), 0o755)
		addDisk(t, root, "nvme0n1", "1000215216")
		ev.fire()
		r := <-res
		if r.err != nil || r.d.Name != "nvme0n1" {
			t.Fatalf("WaitDisk = %s, %v; want nvme0n1", r.d.Name, r.err)
		}
		if r.at < 3*time.Second+DefaultSettle {
			t.Errorf("chose after %s, before the disks had settled", r.at)
		}
	})
}

// Defect 4: the choice waits for driver loading and for the disks to
// settle, so a SATA disk behind a controller whose driver is still loading
// wins over a virtio disk that was there first.
func TestWaitDiskWaitsForDriversAndSettles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := emptyRoot(t)
		addDisk(t, root, "vda", "2097152")
		ev := newEvents()
		loaded := make(chan struct{})
		res := waitInBackground(DiskWait{Root: root, Timeout: 10 * time.Second, Changed: ev.Changed, Loaded: loaded}, 1<<20)

		time.Sleep(2 * time.Second) // ahci is loading
		close(loaded)
		time.Sleep(300 * time.Millisecond) // the SATA link comes up, then the disk
		addDisk(t, root, "sda", "2097152")
		ev.fire()
		r := <-res
		if r.err != nil || r.d.Name != "sda" {
			t.Fatalf("WaitDisk = %s, %v; want sda", r.d.Name, r.err)
		}
		if want := 2300*time.Millisecond + DefaultSettle; r.at != want {
			t.Errorf("chose after %s, want %s (the settle window after the last disk appeared)", r.at, want)
		}
	})
}

// Disks that settled before the wait began are not waited for again; a
// disk appearing during the wait restarts the window.
func TestWaitDiskSettledBefore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := emptyRoot(t)
		addDisk(t, root, "sda", "2097152")
		lastEvent := time.Now()
		time.Sleep(5 * time.Second)
		start := time.Now()
		d, err := DiskWait{Root: root, Timeout: 10 * time.Second, LastChange: func() time.Time { return lastEvent }}.WaitDisk(context.Background(), 1<<20)
		if err != nil || d.Name != "sda" || time.Since(start) != 0 {
			t.Fatalf("WaitDisk = %s, %v after %s; want sda at once", d.Name, err, time.Since(start))
		}

		root = emptyRoot(t)
		ev := newEvents()
		res := waitInBackground(DiskWait{Root: root, Timeout: 10 * time.Second, Changed: ev.Changed, LastChange: func() time.Time { return lastEvent }}, 1<<20)
		time.Sleep(200 * time.Millisecond)
		addDisk(t, root, "sdb", "2097152")
		ev.fire()
		r := <-res
		if r.err != nil || r.d.Name != "sdb" || r.at != 200*time.Millisecond+DefaultSettle {
			t.Fatalf("WaitDisk = %s, %v after %s; want sdb a settle window after it appeared", r.d.Name, r.err, r.at)
		}
	})
}

// Defect 1: a named disk is waited for (on device events) and its size
// checked.
func TestWaitDiskNamed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := emptyRoot(t)
		ev := newEvents()
		res := waitInBackground(DiskWait{Root: root, Named: "/dev/sdb", Timeout: 10 * time.Second, Changed: ev.Changed}, 1<<20)
		time.Sleep(4 * time.Second)
		addDisk(t, root, "sdb", "4096")
		ev.fire()
		r := <-res
		if r.err != nil || r.d.Path != "/dev/sdb" || r.at != 4*time.Second {
			t.Fatalf("WaitDisk = %+v after %s, %v; want /dev/sdb at once when it appears", r.d, r.at, r.err)
		}

		_, err := DiskWait{Root: root, Named: "/dev/sdb", Timeout: time.Second}.WaitDisk(context.Background(), 1<<30)
		var de *DiskError
		if !errors.As(err, &de) || !strings.Contains(err.Error(), "disk /dev/sdb has 2 MiB, the image needs 1 GiB") {
			t.Errorf("too small named disk: %v", err)
		}
		start := time.Now()
		_, err = DiskWait{Root: root, Named: "/dev/nvme0n1", Timeout: 10 * time.Second, Changed: ev.Changed}.WaitDisk(context.Background(), 0)
		if !errors.As(err, &de) || !strings.Contains(err.Error(), "disk /dev/nvme0n1 not found after 10s") ||
			!strings.Contains(err.Error(), "/dev/sdb 2 MiB") || time.Since(start) != 10*time.Second {
			t.Errorf("missing named disk: %v", err)
		}
	})
}

// A disk named by serial: kernel names follow probe order, the serial
// stays with the drive.
func TestWaitDiskNamedBySerial(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := emptyRoot(t)
		addDisk(t, root, "nvme0n1", "4096")
		setFile(t, root, "sys/block/nvme0n1/device/serial", "S4EVNX0N111111      \n") // NVMe pads with spaces
		ev := newEvents()
		res := waitInBackground(DiskWait{Root: root, Named: "serial:s4evnx0n222222", Timeout: 10 * time.Second, Changed: ev.Changed}, 1<<20)
		time.Sleep(3 * time.Second)
		addDisk(t, root, "nvme1n1", "8192")
		setFile(t, root, "sys/block/nvme1n1/device/serial", "S4EVNX0N222222      \n")
		ev.fire()
		r := <-res
		if r.err != nil || r.d.Path != "/dev/nvme1n1" || r.at != 3*time.Second {
			t.Fatalf("WaitDisk = %+v after %s, %v; want /dev/nvme1n1 as soon as it appears", r.d, r.at, r.err)
		}

		for _, tt := range []struct {
			name, serial string
			min          uint64
			want         string // the disk's path, or a part of the error
		}{
			{"exact", "serial:S4EVNX0N111111", 0, "/dev/nvme0n1"},
			{"case and spaces", "serial: s4evnx0n111111 ", 0, "/dev/nvme0n1"},
			{"too small", "serial:S4EVNX0N111111", 1 << 30, "disk serial:S4EVNX0N111111 (/dev/nvme0n1) has 2 MiB, the image needs 1 GiB"},
			{"absent", "serial:S4EVNX0N333333", 0, "disk serial:S4EVNX0N333333 not found after 1s"},
			{"a prefix is not a match", "serial:S4EVNX0N", 0, "not found"},
			{"a path is not a serial", "serial:/dev/nvme0n1", 0, "not found"},
		} {
			d, err := DiskWait{Root: root, Named: tt.serial, Timeout: time.Second}.WaitDisk(context.Background(), tt.min)
			if strings.HasPrefix(tt.want, "/dev/") {
				if err != nil || d.Path != tt.want {
					t.Errorf("%s: WaitDisk = %s, %v; want %s", tt.name, d.Path, err, tt.want)
				}
				continue
			}
			var de *DiskError
			if !errors.As(err, &de) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s: err = %v; want a DiskError with %q", tt.name, err, tt.want)
			}
		}

		// Two drives behind one USB bridge may report one serial: neither
		// is taken, at once, and the error names both.
		addDisk(t, root, "sda", "8192")
		setFile(t, root, "sys/block/sda/device/vpd_pg80", "\x00\x80\x00\x0eS4EVNX0N111111")
		start := time.Now()
		_, err := DiskWait{Root: root, Named: "serial:S4EVNX0N111111", Timeout: 10 * time.Second}.WaitDisk(context.Background(), 0)
		if err == nil || !strings.Contains(err.Error(), `2 disks report serial "S4EVNX0N111111" (/dev/nvme0n1, /dev/sda)`) || time.Since(start) != 0 {
			t.Errorf("a serial two disks report: %v after %s", err, time.Since(start))
		}
	})
}

func TestWaitDiskTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := emptyRoot(t)
		addDisk(t, root, "sda", "2048")
		_, err := DiskWait{Root: root, Timeout: 10 * time.Second}.WaitDisk(context.Background(), 1<<30)
		if err == nil || !strings.Contains(err.Error(), "no disk of at least 1 GiB found after 10s") || !strings.Contains(err.Error(), "/dev/sda 1 MiB: too small") {
			t.Errorf("err = %v", err)
		}
	})
}

func TestChooseDiskPrefersNVMeThenSCSIThenVirtio(t *testing.T) {
	d := func(name string) Disk { return Disk{Name: name, Path: "/dev/" + name, SizeBytes: 1 << 40} }
	for _, tt := range []struct {
		disks []Disk
		want  string
	}{
		{[]Disk{d("sda"), d("nvme0n1"), d("vda")}, "nvme0n1"},
		{[]Disk{d("vda"), d("sdb"), d("sda")}, "sda"},
		{[]Disk{d("vdb"), d("mmcblk0"), d("vda")}, "vda"},
		{[]Disk{d("nvme10n1"), d("nvme2n1")}, "nvme2n1"},
		{[]Disk{d("sdaa"), d("sdb")}, "sdb"},
		{[]Disk{d("mmcblk0"), {Name: "sda", Path: "/dev/sda", SizeBytes: 1 << 40, USB: true}}, "mmcblk0"},
	} {
		got, err := ChooseDisk(tt.disks, 1<<30)
		if err != nil || got.Name != tt.want {
			t.Errorf("ChooseDisk(%v) = %s, %v; want %s", tt.disks, got.Name, err, tt.want)
		}
	}
}

func TestDiskString(t *testing.T) {
	d := Disk{Path: "/dev/nvme0n1", SizeBytes: 500107862016, Model: "Samsung SSD 970", Serial: "S4EV"}
	if got, want := d.String(), "/dev/nvme0n1 465.8 GiB (Samsung SSD 970, serial S4EV)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// TestListNameAndChooseDisks: the disks as listed and described, a named
// disk taken as it is (the operator knows), and the error listing why
// each disk was passed over.
func TestListNameAndChooseDisks(t *testing.T) {
	root := testfs.Tree(t, map[string]string{
		"sys/devices/pci/nvme/nvme0n1/size":         "1953525168\n", // 1 TB
		"sys/devices/pci/nvme/nvme0n1/removable":    "0\n",
		"sys/devices/pci/nvme/nvme0n1/device/model": "Samsung SSD 980\n",
		"sys/devices/pci/ata/sda/size":              "976773168\n", // 500 GB
		"sys/devices/pci/ata/sda/removable":         "0\n",
		"sys/devices/pci/usb1/1-1/sdb/size":         "60000000\n", // USB disk, not removable
		"sys/devices/pci/usb1/1-1/sdb/removable":    "0\n",
		"sys/devices/pci/usb1/1-2/sdc/size":         "30000000\n", // USB stick
		"sys/devices/pci/usb1/1-2/sdc/removable":    "1\n",
		"sys/devices/virtual/loop0/size":            "100\n",
		"sys/devices/pci/ata/sr0/size":              "0\n",
	}, map[string]string{
		"sys/block/nvme0n1": "../devices/pci/nvme/nvme0n1",
		"sys/block/sda":     "../devices/pci/ata/sda",
		"sys/block/sdb":     "../devices/pci/usb1/1-1/sdb",
		"sys/block/sdc":     "../devices/pci/usb1/1-2/sdc",
		"sys/block/loop0":   "../devices/virtual/loop0",
		"sys/block/sr0":     "../devices/pci/ata/sr0",
	})
	disks, err := ReadDisks(root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range disks {
		names = append(names, d.String())
	}
	want := "/dev/loop0 50 KiB|/dev/nvme0n1 931.5 GiB (Samsung SSD 980)|/dev/sda 465.8 GiB|/dev/sdb 28.6 GiB (USB)|/dev/sdc 14.3 GiB (USB, removable)|/dev/sr0 0 B"
	if got := strings.Join(names, "|"); got != want {
		t.Errorf("disks:\n got %s\nwant %s", got, want)
	}
	for _, tt := range []struct {
		named   string
		min     uint64
		want    string
		wantOK  bool
		wantErr bool
	}{
		{"", 0, "/dev/nvme0n1", true, false},
		{"", 600e9, "/dev/nvme0n1", true, false},
		{"", 2e12, "", false, false},
		{"/dev/sda", 0, "/dev/sda", true, false},
		{"/dev/sdc", 0, "/dev/sdc", true, false}, // named: the operator knows
		{"/dev/sda", 600e9, "", false, true},
		{"/dev/vdz", 0, "", false, false},
	} {
		var d Disk
		var err error
		if tt.named == "" {
			d, err = ChooseDisk(disks, tt.min)
		} else {
			d, err = DiskWait{Root: root, Named: tt.named}.WaitDisk(context.Background(), tt.min)
		}
		var de *DiskError
		ok := err == nil
		tooSmall := errors.As(err, &de) && de.Err != nil
		if ok != tt.wantOK || tooSmall != tt.wantErr || (ok && d.Path != tt.want) {
			t.Errorf("choosing (%q, %d) = %s %v", tt.named, tt.min, d.Path, err)
		}
	}
	msg := (&DiskError{MinSize: 2e12, Disks: disks}).Error()
	for _, want := range []string{"no disk of at least 1.8 TiB", "/dev/sdb 28.6 GiB (USB): on USB", "/dev/sdc 14.3 GiB (USB, removable): on USB",
		"/dev/loop0 50 KiB: not a physical disk", "/dev/sda 465.8 GiB: too small"} {
		if !strings.Contains(msg, want) {
			t.Errorf("DiskError lacks %q:\n%s", want, msg)
		}
	}
}
