// Package sfdisk parses the partition-table dumps that `sfdisk -d` writes
// (FOG keeps one per disk as dN.partitions): the header lines (label,
// label-id, first-lba, last-lba, sector-size, …) and one line per
// partition with start, size, type, uuid, name, attrs and bootable.
// Parsing is strict: a line it does not understand is an error naming the
// line, so a damaged dump is never half-applied.
package sfdisk

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// ErrSyntax wraps every parse error.
var ErrSyntax = errors.New("bad sfdisk dump")

// Dump is a parsed `sfdisk -d` dump.
type Dump struct {
	Label string // "dos" or "gpt"
	// ID is the disk identifier: "0x1234abcd" for dos, a GUID for gpt
	// (upper case); empty when the dump has none.
	ID     string
	Device string
	Unit   string
	// FirstLBA and LastLBA are the GPT usable area (0 when absent).
	FirstLBA, LastLBA uint64
	// SectorSize is the logical sector size the dump's numbers count in;
	// 512 when the dump does not say.
	SectorSize int
	// TableLength is the number of GPT entries (0 when absent = 128).
	TableLength int
	Partitions  []Partition
}

// Partition is one partition line. Start and Size count sectors of the
// dump's SectorSize.
type Partition struct {
	Number   int    // partition number, from the device node's trailing digits
	Node     string // device node as dumped, e.g. /dev/sda1
	Start    uint64
	Size     uint64
	Type     string // dos: hex byte without 0x ("83"); gpt: type GUID (upper case)
	UUID     string // gpt partition GUID (upper case), may be empty
	Name     string // gpt partition name
	Attrs    uint64 // gpt attribute bits
	Bootable bool   // dos active flag
}

// End is the last sector of the partition.
func (p Partition) End() uint64 { return p.Start + p.Size - 1 }

// TypeByte is a dos partition's type as a number.
func (p Partition) TypeByte() byte {
	v, _ := strconv.ParseUint(p.Type, 16, 8)
	return byte(v)
}

// Extended reports whether p is a dos extended partition (a container for
// logical partitions).
func (p Partition) Extended() bool {
	switch p.TypeByte() {
	case 0x05, 0x0F, 0x85:
		return true
	}
	return false
}

// Partition returns the partition with number n.
func (d *Dump) Partition(n int) (Partition, bool) {
	for _, p := range d.Partitions {
		if p.Number == n {
			return p, true
		}
	}
	return Partition{}, false
}

var (
	guidRE  = regexp.MustCompile(`^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$`)
	dosIDRE = regexp.MustCompile(`^0x[0-9A-Fa-f]{1,8}$`)
	digits  = regexp.MustCompile(`[0-9]+$`)
)

const maxLines = 10000

// Parse reads a dump. It checks the syntax and the consistency of the
// numbers (no overlaps, logical partitions inside their extended one); it
// knows nothing about the disk the dump will be written to.
func Parse(r io.Reader) (*Dump, error) {
	d := &Dump{SectorSize: 512}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	line := 0
	seen := map[string]bool{}
	for sc.Scan() {
		line++
		if line > maxLines {
			return nil, fmt.Errorf("%w: more than %d lines", ErrSyntax, maxLines)
		}
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		if err := d.parseLine(text, seen); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrSyntax, line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSyntax, err)
	}
	if err := d.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSyntax, err)
	}
	return d, nil
}

func (d *Dump) parseLine(text string, seen map[string]bool) error {
	// Header lines are "key: value"; partition lines "node : fields" or
	// bare fields (numbered after the previous partition, as sfdisk does).
	if i := strings.Index(text, ":"); i > 0 && !strings.Contains(text[:i], "=") && !strings.HasSuffix(text[:i], " ") {
		if len(d.Partitions) > 0 {
			return fmt.Errorf("header line %q after the partitions", text)
		}
		return d.header(strings.TrimSpace(text[:i]), strings.TrimSpace(text[i+1:]), seen)
	}
	node, fields := "", text
	if i := strings.Index(text, " : "); i >= 0 {
		node, fields = strings.TrimSpace(text[:i]), text[i+3:]
	} else if strings.Contains(text, " :") || strings.HasPrefix(text, ":") {
		return fmt.Errorf("cannot parse %q", text)
	}
	return d.partition(node, fields)
}

func (d *Dump) header(key, val string, seen map[string]bool) error {
	if seen[key] {
		return fmt.Errorf("%q given twice", key)
	}
	seen[key] = true
	var err error
	switch key {
	case "label":
		if val != "dos" && val != "gpt" {
			return fmt.Errorf("label %q (imgcast restores dos and gpt tables)", val)
		}
		d.Label = val
	case "label-id":
		d.ID = val
	case "device":
		d.Device = val
	case "unit":
		if val != "sectors" {
			return fmt.Errorf("unit %q (only sectors)", val)
		}
		d.Unit = val
	case "first-lba":
		d.FirstLBA, err = strconv.ParseUint(val, 10, 64)
	case "last-lba":
		d.LastLBA, err = strconv.ParseUint(val, 10, 64)
	case "sector-size":
		d.SectorSize, err = strconv.Atoi(val)
		if err == nil && d.SectorSize != 512 && d.SectorSize != 1024 && d.SectorSize != 2048 && d.SectorSize != 4096 {
			return fmt.Errorf("sector size %d", d.SectorSize)
		}
	case "table-length":
		d.TableLength, err = strconv.Atoi(val)
		if err == nil && (d.TableLength < 1 || d.TableLength > 4096) {
			return fmt.Errorf("table length %d", d.TableLength)
		}
	case "grain", "sector-size-physical":
		// Alignment hints for creating new partitions; nothing to restore.
	default:
		return fmt.Errorf("unknown header %q", key)
	}
	if err != nil {
		return fmt.Errorf("%s: %v", key, err)
	}
	return nil
}

func (d *Dump) partition(node, fields string) error {
	p := Partition{Node: node}
	if node != "" {
		m := digits.FindString(node)
		if m == "" {
			return fmt.Errorf("device node %q has no partition number", node)
		}
		n, err := strconv.Atoi(m)
		if err != nil || n < 1 || n > 4096 {
			return fmt.Errorf("partition number %q", m)
		}
		p.Number = n
	} else {
		p.Number = 1
		if k := len(d.Partitions); k > 0 {
			p.Number = d.Partitions[k-1].Number + 1
		}
	}
	toks, err := splitFields(fields)
	if err != nil {
		return err
	}
	got := map[string]bool{}
	for _, tok := range toks {
		key, val, hasVal := strings.Cut(tok, "=")
		key = strings.TrimSpace(key)
		val = strings.TrimSpace(val)
		if got[key] {
			return fmt.Errorf("%q given twice", key)
		}
		got[key] = true
		if !hasVal {
			if key != "bootable" {
				return fmt.Errorf("unknown flag %q", key)
			}
			p.Bootable = true
			continue
		}
		switch key {
		case "start":
			p.Start, err = strconv.ParseUint(val, 10, 64)
		case "size":
			p.Size, err = strconv.ParseUint(val, 10, 64)
		case "type", "Id":
			p.Type = val
		case "uuid":
			if !guidRE.MatchString(val) {
				return fmt.Errorf("uuid %q is not a GUID", val)
			}
			p.UUID = strings.ToUpper(val)
		case "name":
			p.Name, err = unquote(val)
		case "attrs":
			var s string
			if s, err = unquote(val); err == nil {
				p.Attrs, err = ParseAttrs(s)
			}
		default:
			return fmt.Errorf("unknown field %q", key)
		}
		if err != nil {
			return fmt.Errorf("%s: %v", key, err)
		}
	}
	if !got["start"] || !got["size"] || !got["type"] {
		return errors.New("a partition needs start=, size= and type=")
	}
	if p.Size == 0 {
		return errors.New("size=0")
	}
	if p.Start+p.Size < p.Start {
		return errors.New("start+size overflows")
	}
	d.Partitions = append(d.Partitions, p)
	return nil
}

// splitFields splits "a=1, b=\"x, y\", c" at commas outside quotes.
func splitFields(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	quoted := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && quoted && i+1 < len(s):
			cur.WriteByte(c)
			i++
			cur.WriteByte(s[i])
		case c == '"':
			quoted = !quoted
			cur.WriteByte(c)
		case c == ',' && !quoted:
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	if quoted {
		return nil, errors.New("unterminated quote")
	}
	if t := strings.TrimSpace(cur.String()); t != "" || len(out) > 0 {
		out = append(out, t)
	}
	for _, t := range out {
		if t == "" {
			return nil, errors.New("empty field")
		}
	}
	return out, nil
}

// unquote strips the double quotes sfdisk puts around names and attrs and
// resolves its \xNN escapes.
func unquote(s string) (string, error) {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return s, nil
	}
	s = s[1 : len(s)-1]
	var b bytes.Buffer
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+3 < len(s) && s[i+1] == 'x' {
			v, err := strconv.ParseUint(s[i+2:i+4], 16, 8)
			if err != nil {
				return "", fmt.Errorf("bad escape in %q", s)
			}
			b.WriteByte(byte(v))
			i += 3
			continue
		}
		if i+1 < len(s) {
			i++
			b.WriteByte(s[i])
			continue
		}
		return "", fmt.Errorf("bad escape in %q", s)
	}
	return b.String(), nil
}

// ParseAttrs turns sfdisk's GPT attribute string ("RequiredPartition
// LegacyBIOSBootable GUID:60,63") into the attribute bits.
func ParseAttrs(s string) (uint64, error) {
	var v uint64
	for _, tok := range strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '\t' }) {
		switch {
		case tok == "RequiredPartition":
			v |= 1 << 0
		case tok == "NoBlockIOProtocol":
			v |= 1 << 1
		case tok == "LegacyBIOSBootable":
			v |= 1 << 2
		case strings.HasPrefix(tok, "GUID:"):
			for _, n := range strings.Split(strings.TrimPrefix(tok, "GUID:"), ",") {
				bit, err := strconv.Atoi(n)
				if err != nil || bit < 48 || bit > 63 {
					return 0, fmt.Errorf("attribute bit %q (GUID: takes 48–63)", n)
				}
				v |= 1 << bit
			}
		default:
			bit, err := strconv.Atoi(tok)
			if err != nil || bit < 0 || bit > 63 {
				return 0, fmt.Errorf("unknown attribute %q", tok)
			}
			v |= 1 << bit
		}
	}
	return v, nil
}

func (d *Dump) check() error {
	if d.Label == "" {
		return errors.New("no \"label:\" line (not an sfdisk dump?)")
	}
	if d.ID != "" {
		if d.Label == "gpt" && !guidRE.MatchString(d.ID) {
			return fmt.Errorf("label-id %q is not a GUID", d.ID)
		}
		if d.Label == "dos" && !dosIDRE.MatchString(d.ID) {
			return fmt.Errorf("label-id %q is not a 32-bit hex number", d.ID)
		}
		if d.Label == "gpt" {
			d.ID = strings.ToUpper(d.ID)
		}
	}
	if d.Label == "dos" && (d.FirstLBA != 0 || d.LastLBA != 0 || d.TableLength != 0) {
		return errors.New("first-lba, last-lba or table-length in a dos dump")
	}
	if d.Label == "gpt" && d.FirstLBA != 0 && d.LastLBA != 0 && d.FirstLBA > d.LastLBA {
		return fmt.Errorf("first-lba %d after last-lba %d", d.FirstLBA, d.LastLBA)
	}
	nums := map[int]bool{}
	var ext *Partition
	for i := range d.Partitions {
		p := &d.Partitions[i]
		if nums[p.Number] {
			return fmt.Errorf("partition %d listed twice", p.Number)
		}
		nums[p.Number] = true
		switch d.Label {
		case "dos":
			if _, err := strconv.ParseUint(p.Type, 16, 8); err != nil || p.TypeByte() == 0 {
				return fmt.Errorf("partition %d: type %q is not a dos type byte", p.Number, p.Type)
			}
			p.Type = strings.ToLower(strconv.FormatUint(uint64(p.TypeByte()), 16))
			if p.UUID != "" || p.Name != "" || p.Attrs != 0 {
				return fmt.Errorf("partition %d: uuid, name or attrs in a dos dump", p.Number)
			}
			if p.End() > 0xFFFFFFFF {
				return fmt.Errorf("partition %d ends past sector 2^32, beyond what a dos table can hold", p.Number)
			}
			if p.Number > 4 && p.Extended() {
				return fmt.Errorf("partition %d: nested extended partition", p.Number)
			}
			if p.Number <= 4 && p.Extended() {
				if ext != nil {
					return errors.New("two extended partitions")
				}
				ext = p
			}
		case "gpt":
			if !guidRE.MatchString(p.Type) {
				return fmt.Errorf("partition %d: type %q is not a GUID", p.Number, p.Type)
			}
			p.Type = strings.ToUpper(p.Type)
			if p.Bootable {
				return fmt.Errorf("partition %d: bootable flag in a gpt dump", p.Number)
			}
			if len([]rune(p.Name)) > 36 {
				return fmt.Errorf("partition %d: name longer than 36 characters", p.Number)
			}
			if n := d.TableLength; (n != 0 && p.Number > n) || (n == 0 && p.Number > 128) {
				return fmt.Errorf("partition %d beyond the table length", p.Number)
			}
			if d.FirstLBA != 0 && p.Start < d.FirstLBA || d.LastLBA != 0 && p.End() > d.LastLBA {
				return fmt.Errorf("partition %d (%d–%d) outside the usable area %d–%d", p.Number, p.Start, p.End(), d.FirstLBA, d.LastLBA)
			}
		}
		if p.Start == 0 {
			return fmt.Errorf("partition %d starts at sector 0, over the partition table", p.Number)
		}
	}
	// Logical partitions must lie inside the extended one; everything else
	// must not overlap.
	var flat []Partition
	for _, p := range d.Partitions {
		if d.Label == "dos" && p.Number > 4 {
			if ext == nil {
				return fmt.Errorf("logical partition %d without an extended partition", p.Number)
			}
			if p.Start <= ext.Start || p.End() > ext.End() {
				return fmt.Errorf("logical partition %d lies outside extended partition %d", p.Number, ext.Number)
			}
		}
		if !p.Extended() || d.Label == "gpt" {
			flat = append(flat, p)
		}
	}
	sort.Slice(flat, func(i, j int) bool { return flat[i].Start < flat[j].Start })
	for i := 1; i < len(flat); i++ {
		if flat[i].Start <= flat[i-1].End() {
			return fmt.Errorf("partitions %d and %d overlap", flat[i-1].Number, flat[i].Number)
		}
	}
	return nil
}
