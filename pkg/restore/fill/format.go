package fill

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/imgcast/imgcast/pkg/restore/sfdisk"
)

// Format writes d as `sfdisk -d` does, so a computed table can be shown
// to a technician or fed to sfdisk; sfdisk.Parse reads it back unchanged.
func Format(d *sfdisk.Dump) string {
	var b strings.Builder
	fmt.Fprintf(&b, "label: %s\n", d.Label)
	if d.ID != "" {
		fmt.Fprintf(&b, "label-id: %s\n", d.ID)
	}
	if d.Device != "" {
		fmt.Fprintf(&b, "device: %s\n", d.Device)
	}
	b.WriteString("unit: sectors\n")
	if d.FirstLBA != 0 {
		fmt.Fprintf(&b, "first-lba: %d\n", d.FirstLBA)
	}
	if d.LastLBA != 0 {
		fmt.Fprintf(&b, "last-lba: %d\n", d.LastLBA)
	}
	if d.TableLength != 0 {
		fmt.Fprintf(&b, "table-length: %d\n", d.TableLength)
	}
	fmt.Fprintf(&b, "sector-size: %d\n\n", d.SectorSize)
	for _, p := range d.Partitions {
		fmt.Fprintf(&b, "%s : start=%12d, size=%12d, type=%s", node(d, p), p.Start, p.Size, p.Type)
		if p.UUID != "" {
			fmt.Fprintf(&b, ", uuid=%s", p.UUID)
		}
		if p.Name != "" {
			fmt.Fprintf(&b, ", name=%s", quote(p.Name))
		}
		if p.Attrs != 0 {
			fmt.Fprintf(&b, ", attrs=%s", quote(attrs(p.Attrs)))
		}
		if p.Bootable {
			b.WriteString(", bootable")
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// node is the partition's device name as dumped, or one made from the
// disk's (sfdisk takes the partition number from its trailing digits).
func node(d *sfdisk.Dump, p sfdisk.Partition) string {
	if p.Node != "" {
		return p.Node
	}
	dev := d.Device
	if dev == "" {
		dev = "/dev/sda"
	}
	if c := dev[len(dev)-1]; c >= '0' && c <= '9' {
		dev += "p"
	}
	return dev + strconv.Itoa(p.Number)
}

// quote puts a name in double quotes with sfdisk's \xNN escapes.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' || c == 0x7F {
			fmt.Fprintf(&b, `\x%02x`, c)
			continue
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String()
}

// attrs is the inverse of sfdisk.ParseAttrs.
func attrs(v uint64) string {
	var toks, guid []string
	names := map[int]string{0: "RequiredPartition", 1: "NoBlockIOProtocol", 2: "LegacyBIOSBootable"}
	for bit := 0; bit < 64; bit++ {
		if v&(1<<bit) == 0 {
			continue
		}
		switch {
		case names[bit] != "":
			toks = append(toks, names[bit])
		case bit >= 48:
			guid = append(guid, strconv.Itoa(bit))
		default:
			toks = append(toks, strconv.Itoa(bit))
		}
	}
	if len(guid) > 0 {
		toks = append(toks, "GUID:"+strings.Join(guid, ","))
	}
	return strings.Join(toks, " ")
}
