// Package inventory describes the machine being imaged — its network cards,
// disks, memory and DMI identity — from sysfs and procfs, so the server can
// show what it is imaging, and picks the disk to write to.
//
// Every reader takes the root of the tree to read ("/" on a real machine), so
// tests point it at a fake tree.
package inventory

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Machine is what a client tells the server about itself.
type Machine struct {
	NICs  []NIC  `json:"nics"`
	Disks []Disk `json:"disks"`
	// MemoryBytes is MemTotal from /proc/meminfo.
	MemoryBytes uint64 `json:"memory_bytes"`
	DMI         DMI    `json:"dmi"`
}

// NIC is one physical network interface.
type NIC struct {
	Name   string `json:"name"`
	MAC    string `json:"mac"`
	Driver string `json:"driver,omitempty"`
	// PCI is "vendor:device" in hex when the card is on PCI, e.g.
	// "8086:100e", for looking up a missing driver.
	PCI string `json:"pci,omitempty"`
}

// Disk is one whole block device from /sys/block.
type Disk struct {
	Name string `json:"name"` // e.g. "sda", "nvme0n1", "vda"
	// Path is the device node, /dev/<Name>.
	Path       string `json:"path"`
	SizeBytes  uint64 `json:"size_bytes"`
	SectorSize int    `json:"sector_size,omitempty"` // logical block size
	Model      string `json:"model,omitempty"`
	Serial     string `json:"serial,omitempty"`
	Removable  bool   `json:"removable"`
	Rotational bool   `json:"rotational"`
	// USB: the disk hangs off USB. A USB hard disk is "not removable" to
	// the kernel, but it is the technician's, never the machine's own.
	USB bool `json:"usb,omitempty"`
}

// DMI is the machine's firmware identity from /sys/class/dmi/id.
type DMI struct {
	Vendor  string `json:"vendor,omitempty"`
	Product string `json:"product,omitempty"`
	Serial  string `json:"serial,omitempty"`
	UUID    string `json:"uuid,omitempty"`
}

// Read collects everything. A part that cannot be read is left empty and
// named in the returned error; the rest is still returned, because a partial
// inventory is better than none on a machine the server knows nothing about.
func Read(root string) (Machine, error) {
	var m Machine
	var errs []error
	var err error
	if m.NICs, err = ReadNICs(root); err != nil {
		errs = append(errs, err)
	}
	if m.Disks, err = ReadDisks(root); err != nil {
		errs = append(errs, err)
	}
	if m.MemoryBytes, err = ReadMemory(root); err != nil {
		errs = append(errs, err)
	}
	// DMI is absent on many VMs and non-x86 boards: not an error.
	m.DMI = ReadDMI(root)
	return m, errors.Join(errs...)
}

// ReadNICs lists interfaces that are backed by a device (virtual ones such
// as lo, bridges, veth and tun have none), sorted by name.
func ReadNICs(root string) ([]NIC, error) {
	dir := filepath.Join(root, "sys/class/net")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("network interfaces: %w", err)
	}
	var nics []NIC
	for _, e := range entries {
		base := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(base, "device")); err != nil {
			continue
		}
		n := NIC{Name: e.Name(), MAC: readString(base, "address")}
		if target, err := os.Readlink(filepath.Join(base, "device/driver")); err == nil {
			n.Driver = filepath.Base(target)
		}
		vendor, device := readString(base, "device/vendor"), readString(base, "device/device")
		if vendor != "" && device != "" {
			n.PCI = strings.TrimPrefix(vendor, "0x") + ":" + strings.TrimPrefix(device, "0x")
		}
		nics = append(nics, n)
	}
	sort.Slice(nics, func(i, j int) bool { return nics[i].Name < nics[j].Name })
	return nics, nil
}

// ReadDisks lists the whole block devices in /sys/block, sorted by name,
// including ones ChooseDisk would never pick (loop, cdrom, removable).
func ReadDisks(root string) ([]Disk, error) {
	dir := filepath.Join(root, "sys/block")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("block devices: %w", err)
	}
	var disks []Disk
	for _, e := range entries {
		base := filepath.Join(dir, e.Name())
		sectors, err := readUint(base, "size")
		if err != nil {
			return nil, fmt.Errorf("block device %s: %w", e.Name(), err)
		}
		d := Disk{
			Name:       e.Name(),
			Path:       "/dev/" + e.Name(),
			SizeBytes:  sectors * 512, // sysfs counts 512-byte units whatever the sector size
			Model:      readString(base, "device/model"),
			Serial:     readSerial(base),
			Removable:  readString(base, "removable") == "1",
			Rotational: readString(base, "queue/rotational") == "1",
		}
		if ss, err := readUint(base, "queue/logical_block_size"); err == nil {
			d.SectorSize = int(ss)
		}
		if target, err := filepath.EvalSymlinks(base); err == nil {
			d.USB = strings.Contains(target, "/usb")
		}
		disks = append(disks, d)
	}
	sort.Slice(disks, func(i, j int) bool { return disks[i].Name < disks[j].Name })
	return disks, nil
}

// readSerial finds a disk's serial number where its driver puts it: virtio
// in "serial", NVMe and some others in "device/serial", SCSI/SATA in the VPD
// page 0x80 (4-byte header, then the serial).
func readSerial(base string) string {
	for _, p := range []string{"serial", "device/serial"} {
		if s := readString(base, p); s != "" {
			return s
		}
	}
	b, err := os.ReadFile(filepath.Join(base, "device/vpd_pg80"))
	if err != nil || len(b) <= 4 {
		return ""
	}
	return clean(b[4:])
}

// ReadMemory returns MemTotal in bytes.
func ReadMemory(root string) (uint64, error) {
	f, err := os.Open(filepath.Join(root, "proc/meminfo"))
	if err != nil {
		return 0, fmt.Errorf("memory: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("memory: unexpected MemTotal line %q", sc.Text())
		}
		kb, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("memory: MemTotal: %w", err)
		}
		return kb * 1024, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("memory: %w", err)
	}
	return 0, errors.New("memory: no MemTotal in /proc/meminfo")
}

// ReadDMI reads the firmware's vendor, product, serial and UUID; fields the
// firmware does not provide (or that need root) are empty.
func ReadDMI(root string) DMI {
	base := filepath.Join(root, "sys/class/dmi/id")
	return DMI{
		Vendor:  readString(base, "sys_vendor"),
		Product: readString(base, "product_name"),
		Serial:  readString(base, "product_serial"),
		UUID:    readString(base, "product_uuid"),
	}
}

// readString returns a sysfs attribute without padding, or "" when it does
// not exist or cannot be read.
func readString(base, name string) string {
	b, err := os.ReadFile(filepath.Join(base, name))
	if err != nil {
		return ""
	}
	return clean(b)
}

// clean trims whitespace and NULs (SCSI pads model and serial with both)
// and drops anything that is not printable ASCII.
func clean(b []byte) string {
	b = bytes.Trim(b, " \t\r\n\x00")
	return strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return -1
		}
		return r
	}, string(b))
}

func readUint(base, name string) (uint64, error) {
	s := readString(base, name)
	if s == "" {
		return 0, fmt.Errorf("%s: %w", name, fs.ErrNotExist)
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return v, nil
}
