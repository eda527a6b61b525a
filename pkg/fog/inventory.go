package fog

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"

	"github.com/imgcast/imgcast/pkg/inventory"
)

// Inventory is what FOS's inventory.php call carries: 27 fields, each sent
// base64-encoded. FOG shows them on the host's inventory page.
type Inventory struct {
	// MACs are the machine's MAC addresses; sent as one "a|b" list.
	MACs []string

	SysMan, SysProduct, SysVersion, SysSerial, SysUUID, SysType string
	BIOSVersion, BIOSVendor, BIOSDate                           string
	MBMan, MBProductName, MBVersion, MBSerial, MBAsset          string
	CPUMan, CPUVersion, CPUCurrent, CPUMax                      string
	// Mem is /proc/meminfo's MemTotal line, as FOS sends it.
	Mem string
	// HDInfo describes the target disk as "model=M, fwrev=F, serialno=S",
	// the form FOG splits into the disk's model, firmware and serial.
	HDInfo                                  string
	CaseMan, CaseVer, CaseSerial, CaseAsset string
	GPUVendors, GPUProducts                 string
}

// InventoryFrom fills an Inventory from what pkg/inventory reads: MACs,
// DMI vendor, product, serial and UUID, memory, and the disk at diskPath
// (or the first disk when diskPath is empty). Fields it has no source for
// stay empty.
func InventoryFrom(m inventory.Machine, diskPath string) Inventory {
	inv := Inventory{
		SysMan:     m.DMI.Vendor,
		SysProduct: m.DMI.Product,
		SysSerial:  m.DMI.Serial,
		SysUUID:    strings.ToLower(m.DMI.UUID),
	}
	for _, n := range m.NICs {
		if n.MAC != "" {
			inv.MACs = append(inv.MACs, n.MAC)
		}
	}
	if m.MemoryBytes > 0 {
		inv.Mem = fmt.Sprintf("MemTotal: %d kB", m.MemoryBytes/1024)
	}
	for _, d := range m.Disks {
		if d.Path == diskPath || diskPath == "" {
			inv.HDInfo = fmt.Sprintf("model=%s, fwrev=, serialno=%s", d.Model, d.Serial)
			break
		}
	}
	return inv
}

// Form is the inventory.php request body.
func (inv Inventory) Form() url.Values {
	f := url.Values{}
	for _, kv := range []struct{ k, v string }{
		{"mac", strings.Join(inv.MACs, "|")},
		{"sysman", inv.SysMan}, {"sysproduct", inv.SysProduct}, {"sysversion", inv.SysVersion},
		{"sysserial", inv.SysSerial}, {"sysuuid", inv.SysUUID}, {"systype", inv.SysType},
		{"biosversion", inv.BIOSVersion}, {"biosvendor", inv.BIOSVendor}, {"biosdate", inv.BIOSDate},
		{"mbman", inv.MBMan}, {"mbproductname", inv.MBProductName}, {"mbversion", inv.MBVersion},
		{"mbserial", inv.MBSerial}, {"mbasset", inv.MBAsset},
		{"cpuman", inv.CPUMan}, {"cpuversion", inv.CPUVersion}, {"cpucurrent", inv.CPUCurrent}, {"cpumax", inv.CPUMax},
		{"mem", inv.Mem}, {"hdinfo", inv.HDInfo},
		{"caseman", inv.CaseMan}, {"casever", inv.CaseVer}, {"caseserial", inv.CaseSerial}, {"caseasset", inv.CaseAsset},
		{"gpuvendors", inv.GPUVendors}, {"gpuproducts", inv.GPUProducts},
	} {
		f.Set(kv.k, encode64(kv.v))
	}
	return f
}

// InventoryFields is the number of fields inventory.php receives.
const InventoryFields = 27

func encode64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
