package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/testfs"
)

func TestListAndChooseDisks(t *testing.T) {
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
	disks := listDisks(root)
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
		d, ok, err := chooseDisk(disks, tt.named, tt.min)
		if ok != tt.wantOK || (err != nil) != tt.wantErr || (ok && d.Path != tt.want) {
			t.Errorf("chooseDisk(%q, %d) = %s %v %v", tt.named, tt.min, d.Path, ok, err)
		}
	}
	err := (&DiskError{MinSize: 2e12, Disks: disks}).Error()
	for _, want := range []string{"no disk of at least 1.8 TiB", "/dev/sdb 28.6 GiB (USB): on USB", "/dev/sdc 14.3 GiB (USB, removable): on USB",
		"/dev/loop0 50 KiB: not a physical disk", "/dev/sda 465.8 GiB: too small"} {
		if !strings.Contains(err, want) {
			t.Errorf("DiskError lacks %q:\n%s", want, err)
		}
	}
}

func TestWaitForDiskWakesOnDeviceEvents(t *testing.T) {
	root := testfs.Tree(t, map[string]string{"sys/block/.keep": ""}, nil)
	os.Remove(filepath.Join(root, "sys/block/.keep"))
	changed := make(chan struct{})
	go func() {
		time.Sleep(50 * time.Millisecond) // the disk appears later, then the uevent
		os.MkdirAll(filepath.Join(root, "sys/block/sda"), 0o755)
		os.WriteFile(filepath.Join(root, "sys/block/sda/size"), []byte("2048\n"), 0o644)
		close(changed)
	}()
	d, err := waitForDisk(context.Background(), root, "", 0, 10*time.Second, func() <-chan struct{} { return changed })
	if err != nil || d.Name != "sda" {
		t.Fatalf("waitForDisk = %v, %v", d, err)
	}
	_, err = waitForDisk(context.Background(), root, "/dev/nvme0n1", 0, 20*time.Millisecond, nil)
	var de *DiskError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "disk /dev/nvme0n1 not found") || !strings.Contains(err.Error(), "/dev/sda 1 MiB") {
		t.Errorf("missing disk: err = %v", err)
	}
}
