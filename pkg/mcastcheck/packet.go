package mcastcheck

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// A test packet: a 44-byte header, then zero padding up to the stream's
// packet size.
//
//	0  "IMCK"
//	4  version (1)
//	5  kind: 1 multicast, 2 unicast copy
//	6  reserved (2)
//	8  stream ID (8)
//	16 sequence number (8), from 0
//	24 send time, Unix nanoseconds (8)
//	32 rate, packets per second (4)
//	36 end: the sequence number the stream stops before, 0 if open-ended (8)
const (
	packetMagic   = "IMCK"
	packetVersion = 1
	headerLen     = 44
)

// Packet sizes. The default fills a 1500-byte Ethernet frame exactly as
// udp-sender's data packets do, so a path that cannot carry those fails
// the check too.
const (
	DefaultSize = 1472
	MinSize     = headerLen
	MaxSize     = 1472
)

// Kind says how a test packet was sent.
type Kind byte

// The kinds of test packets.
const (
	KindMulticast Kind = 1
	KindUnicast   Kind = 2
)

// Packet is a test packet's header.
type Packet struct {
	Kind   Kind
	Stream uint64
	Seq    uint64
	Sent   time.Time
	Rate   uint32
	End    uint64
}

// errNotTest is returned for datagrams that are not test packets.
var errNotTest = errors.New("not an imgcast test packet")

// Append appends p padded to size bytes (at least the header) to b.
func (p Packet) Append(b []byte, size int) []byte {
	start := len(b)
	b = append(b, packetMagic...)
	b = append(b, packetVersion, byte(p.Kind), 0, 0)
	b = binary.BigEndian.AppendUint64(b, p.Stream)
	b = binary.BigEndian.AppendUint64(b, p.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(p.Sent.UnixNano()))
	b = binary.BigEndian.AppendUint32(b, p.Rate)
	b = binary.BigEndian.AppendUint64(b, p.End)
	for len(b)-start < size {
		b = append(b, 0)
	}
	return b
}

// ParsePacket decodes a test packet's header. Anyone on the network can
// send to the test port: nothing in it is trusted beyond its format.
func ParsePacket(b []byte) (Packet, error) {
	if len(b) < headerLen || string(b[:4]) != packetMagic {
		return Packet{}, errNotTest
	}
	if b[4] != packetVersion {
		return Packet{}, fmt.Errorf("test packet version %d, want %d", b[4], packetVersion)
	}
	p := Packet{
		Kind:   Kind(b[5]),
		Stream: binary.BigEndian.Uint64(b[8:]),
		Seq:    binary.BigEndian.Uint64(b[16:]),
		Sent:   time.Unix(0, int64(binary.BigEndian.Uint64(b[24:]))),
		Rate:   binary.BigEndian.Uint32(b[32:]),
		End:    binary.BigEndian.Uint64(b[36:]),
	}
	if p.Kind != KindMulticast && p.Kind != KindUnicast {
		return Packet{}, fmt.Errorf("test packet of unknown kind %d", p.Kind)
	}
	return p, nil
}
