// Package igmp builds and parses IGMP messages (versions 1, 2 and 3, RFC
// 1112, 2236 and 3376) and sends and receives them on a raw socket. It
// exists for two jobs the kernel does not do:
//
//   - keep a multicast group flowing through a switch that snoops IGMP but
//     has no querier: such a switch stops forwarding a group a few minutes
//     after the last membership report it saw, and the kernel reports only
//     when it joins and when a querier asks. Reporter sends an unsolicited
//     report for each group every few seconds;
//   - find out whether the network has a querier at all: Conn.ReadQuery
//     returns the queries that reach this host, with the querier's
//     address, IGMP version and, for IGMPv3, its query interval.
//
// Raw sockets need CAP_NET_RAW (root).
package igmp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Version is an IGMP version: 1, 2 or 3.
type Version int

// The IGMP versions.
const (
	V1 Version = 1
	V2 Version = 2
	V3 Version = 3
)

func (v Version) String() string {
	if v >= V1 && v <= V3 {
		return fmt.Sprintf("IGMPv%d", int(v))
	}
	return fmt.Sprintf("IGMP version %d", int(v))
}

// Message types.
const (
	TypeQuery    = 0x11
	TypeV1Report = 0x12
	TypeV2Report = 0x16
	TypeLeave    = 0x17
	TypeV3Report = 0x22
)

// IGMPv3 group record types (RFC 3376 section 4.2.12).
const (
	ModeIsInclude   = 1
	ModeIsExclude   = 2
	ChangeToInclude = 3
	ChangeToExclude = 4
	AllowNewSources = 5
	BlockOldSources = 6
)

// Well-known groups.
var (
	AllHosts   = netip.AddrFrom4([4]byte{224, 0, 0, 1})  // general queries go here
	AllRouters = netip.AddrFrom4([4]byte{224, 0, 0, 2})  // IGMPv2 leaves go here
	V3Routers  = netip.AddrFrom4([4]byte{224, 0, 0, 22}) // IGMPv3 reports go here
)

// ErrMalformed is wrapped by Parse's errors.
var ErrMalformed = errors.New("malformed IGMP message")

// Query is a membership query.
type Query struct {
	Version Version
	// Group is the group a group-specific query asks about; the
	// unspecified address for a general query.
	Group netip.Addr
	// MaxResponse is how long hosts may wait before answering (0 for
	// IGMPv1).
	MaxResponse time.Duration
	// Interval is the querier's query interval, carried only by IGMPv3
	// (its QQIC field); 0 when not carried.
	Interval time.Duration
	// Robustness is IGMPv3's QRV (0 when not carried).
	Robustness int
	// Sources is how many sources an IGMPv3 group-and-source-specific
	// query lists.
	Sources int
}

// General reports whether q is a general query (not about one group).
func (q Query) General() bool { return !q.Group.IsValid() || q.Group.IsUnspecified() }

// Message is one parsed IGMP message.
type Message struct {
	Type byte
	// Query is set for TypeQuery.
	Query Query
	// Groups are the groups a report or a leave is about (one for
	// versions 1 and 2, every group record's for IGMPv3).
	Groups []netip.Addr
}

// maxV3Records bounds the group records Parse reads from one IGMPv3
// report, whatever its count says.
const maxV3Records = 256

// Parse checks an IGMP message (the IP payload) and decodes it. Messages
// of other types parse with only Type set.
func Parse(b []byte) (Message, error) {
	if len(b) < 8 {
		return Message{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	if checksum(b) != 0 {
		return Message{}, fmt.Errorf("%w: bad checksum", ErrMalformed)
	}
	m := Message{Type: b[0]}
	group := netip.AddrFrom4([4]byte(b[4:8]))
	switch m.Type {
	case TypeQuery:
		q, err := parseQuery(b)
		if err != nil {
			return Message{}, err
		}
		m.Query = q
	case TypeV1Report, TypeV2Report, TypeLeave:
		m.Groups = []netip.Addr{group}
	case TypeV3Report:
		n := int(binary.BigEndian.Uint16(b[6:8]))
		rest := b[8:]
		for i := 0; i < n; i++ {
			if i == maxV3Records {
				return Message{}, fmt.Errorf("%w: more than %d group records", ErrMalformed, maxV3Records)
			}
			if len(rest) < 8 {
				return Message{}, fmt.Errorf("%w: group record %d is cut short", ErrMalformed, i)
			}
			aux, nsrc := int(rest[1]), int(binary.BigEndian.Uint16(rest[2:4]))
			size := 8 + 4*nsrc + 4*aux
			if len(rest) < size {
				return Message{}, fmt.Errorf("%w: group record %d is cut short", ErrMalformed, i)
			}
			m.Groups = append(m.Groups, netip.AddrFrom4([4]byte(rest[4:8])))
			rest = rest[size:]
		}
	}
	return m, nil
}

// parseQuery tells the version apart by length, as RFC 3376 section 7.1
// says: 8 bytes is IGMPv1 (max response 0) or IGMPv2, 12 or more IGMPv3;
// other lengths are ignored.
func parseQuery(b []byte) (Query, error) {
	q := Query{Group: netip.AddrFrom4([4]byte(b[4:8]))}
	switch {
	case len(b) == 8 && b[1] == 0:
		q.Version = V1
	case len(b) == 8:
		q.Version = V2
		q.MaxResponse = time.Duration(b[1]) * 100 * time.Millisecond
	case len(b) >= 12:
		q.Version = V3
		q.MaxResponse = time.Duration(decodeCode(b[1])) * 100 * time.Millisecond
		q.Robustness = int(b[8] & 7)
		q.Interval = time.Duration(decodeCode(b[9])) * time.Second
		q.Sources = int(binary.BigEndian.Uint16(b[10:12]))
		if len(b) < 12+4*q.Sources {
			return Query{}, fmt.Errorf("%w: query lists %d sources in %d bytes", ErrMalformed, q.Sources, len(b))
		}
	default:
		return Query{}, fmt.Errorf("%w: query of %d bytes", ErrMalformed, len(b))
	}
	return q, nil
}

// decodeCode decodes IGMPv3's Max Resp Code and QQIC: below 128 the value
// itself, else a floating-point form 1|exp(3)|mant(4) meaning
// (mant|0x10) << (exp+3).
func decodeCode(c byte) int {
	if c < 128 {
		return int(c)
	}
	exp, mant := int(c>>4&7), int(c&0x0f)
	return (mant | 0x10) << (exp + 3)
}

// encodeCode is decodeCode's inverse, rounding down to what the format
// can say (at most 31744).
func encodeCode(v int) byte {
	if v < 128 {
		return byte(max(v, 0))
	}
	for exp := 0; exp < 8; exp++ {
		if mant := v>>(exp+3) - 0x10; mant < 0x10 {
			return byte(0x80 | exp<<4 | mant)
		}
	}
	return 0xff
}

// Packet is an IGMP message and the address it goes to.
type Packet struct {
	Dst     netip.Addr
	Payload []byte
}

// Reports are the membership reports for groups in version v: one
// message per group for versions 1 and 2 (each sent to its group), one
// IGMPv3 report to 224.0.0.22 listing every group as "mode is exclude,
// no sources" — what the kernel answers to a general query.
func Reports(v Version, groups []netip.Addr) []Packet {
	switch v {
	case V1, V2:
		typ := byte(TypeV2Report)
		if v == V1 {
			typ = TypeV1Report
		}
		var ps []Packet
		for _, g := range groups {
			ps = append(ps, Packet{Dst: g, Payload: simple(typ, 0, g)})
		}
		return ps
	}
	return v3Reports(ModeIsExclude, groups)
}

// Leaves are the messages that leave groups in version v: an IGMPv2
// leave to 224.0.0.2 per group, or an IGMPv3 report changing each group
// to "include no sources". IGMPv1 has no leave.
func Leaves(v Version, groups []netip.Addr) []Packet {
	switch v {
	case V1:
		return nil
	case V2:
		var ps []Packet
		for _, g := range groups {
			ps = append(ps, Packet{Dst: AllRouters, Payload: simple(TypeLeave, 0, g)})
		}
		return ps
	}
	return v3Reports(ChangeToInclude, groups)
}

// maxRecordsPerReport keeps an IGMPv3 report within a 1500-byte frame.
const maxRecordsPerReport = 180

func v3Reports(recordType byte, groups []netip.Addr) []Packet {
	var ps []Packet
	for len(groups) > 0 {
		n := min(len(groups), maxRecordsPerReport)
		b := make([]byte, 8, 8+8*n)
		b[0] = TypeV3Report
		binary.BigEndian.PutUint16(b[6:8], uint16(n))
		for _, g := range groups[:n] {
			a := g.As4()
			b = append(b, recordType, 0, 0, 0, a[0], a[1], a[2], a[3])
		}
		binary.BigEndian.PutUint16(b[2:4], checksum(b))
		ps = append(ps, Packet{Dst: V3Routers, Payload: b})
		groups = groups[n:]
	}
	return ps
}

// simple builds an 8-byte IGMPv1/v2 message.
func simple(typ, maxResp byte, group netip.Addr) []byte {
	a := group.As4()
	b := []byte{typ, maxResp, 0, 0, a[0], a[1], a[2], a[3]}
	binary.BigEndian.PutUint16(b[2:4], checksum(b))
	return b
}

// AppendQuery appends q, encoded in q.Version, to b. Sources are not
// encoded (Sources must be 0). Tests use it to play the querier.
func AppendQuery(b []byte, q Query) []byte {
	group := netip.IPv4Unspecified()
	if q.Group.IsValid() {
		group = q.Group
	}
	start := len(b)
	switch q.Version {
	case V1:
		b = append(b, simple(TypeQuery, 0, group)...)
		return b
	case V2:
		b = append(b, simple(TypeQuery, byte(min(q.MaxResponse/(100*time.Millisecond), 255)), group)...)
		return b
	}
	a := group.As4()
	b = append(b, TypeQuery, encodeCode(int(q.MaxResponse/(100*time.Millisecond))), 0, 0, a[0], a[1], a[2], a[3],
		byte(q.Robustness&7), encodeCode(int(q.Interval/time.Second)), 0, 0)
	binary.BigEndian.PutUint16(b[start+2:start+4], checksum(b[start:]))
	return b
}

// checksum is the Internet checksum (RFC 1071) of b; it is 0 over a
// message that carries its correct checksum.
func checksum(b []byte) uint16 {
	var sum uint32
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
