package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func fakeSysfs(t *testing.T, files map[string]string, links map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for p, target := range links {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, full); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestListAndChooseDisks(t *testing.T) {
	sysfs := fakeSysfs(t, map[string]string{
		"devices/pci/nvme/nvme0n1/size":         "1953525168\n", // 1 TB
		"devices/pci/nvme/nvme0n1/removable":    "0\n",
		"devices/pci/nvme/nvme0n1/device/model": "Samsung SSD 980\n",
		"devices/pci/ata/sda/size":              "976773168\n", // 500 GB
		"devices/pci/ata/sda/removable":         "0\n",
		"devices/pci/usb1/1-1/sdb/size":         "60000000\n", // USB disk, not removable
		"devices/pci/usb1/1-1/sdb/removable":    "0\n",
		"devices/pci/usb1/1-2/sdc/size":         "30000000\n", // USB stick
		"devices/pci/usb1/1-2/sdc/removable":    "1\n",
		"devices/virtual/loop0/size":            "100\n",
		"devices/pci/ata/sr0/size":              "0\n",
	}, map[string]string{
		"block/nvme0n1": "../devices/pci/nvme/nvme0n1",
		"block/sda":     "../devices/pci/ata/sda",
		"block/sdb":     "../devices/pci/usb1/1-1/sdb",
		"block/sdc":     "../devices/pci/usb1/1-2/sdc",
		"block/loop0":   "../devices/virtual/loop0",
		"block/sr0":     "../devices/pci/ata/sr0",
	})
	disks := listDisks(sysfs)
	var names []string
	for _, d := range disks {
		names = append(names, d.String())
	}
	want := "/dev/nvme0n1 931.5 GiB (Samsung SSD 980)|/dev/sda 465.8 GiB|/dev/sdb 28.6 GiB (USB)|/dev/sdc 14.3 GiB (USB, removable)"
	if got := strings.Join(names, "|"); got != want {
		t.Errorf("disks:\n got %s\nwant %s", got, want)
	}
	for _, tt := range []struct {
		named   string
		min     int64
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
		d, ok, err := chooseDisk(disks, tt.named, tt.min)
		if ok != tt.wantOK || (err != nil) != tt.wantErr || (ok && d.Path() != tt.want) {
			t.Errorf("chooseDisk(%q, %d) = %s %v %v", tt.named, tt.min, d.Path(), ok, err)
		}
	}
}

func TestWaitForDiskWakesOnDeviceEvents(t *testing.T) {
	sysfs := fakeSysfs(t, map[string]string{"block/.keep": ""}, nil)
	changed := make(chan struct{})
	go func() {
		time.Sleep(50 * time.Millisecond) // the disk appears later, then the uevent
		os.MkdirAll(filepath.Join(sysfs, "block", "sda"), 0o755)
		os.WriteFile(filepath.Join(sysfs, "block", "sda", "size"), []byte("2048\n"), 0o644)
		close(changed)
	}()
	d, err := waitForDisk(context.Background(), sysfs, "", 0, 10*time.Second, func() <-chan struct{} { return changed })
	if err != nil || d.Name != "sda" {
		t.Fatalf("waitForDisk = %v, %v", d, err)
	}
	_, err = waitForDisk(context.Background(), sysfs, "/dev/nvme0n1", 0, 20*time.Millisecond, nil)
	var de *DiskError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "disk /dev/nvme0n1 not found") || !strings.Contains(err.Error(), "/dev/sda 1.0 MiB") {
		t.Errorf("missing disk: err = %v", err)
	}
}
