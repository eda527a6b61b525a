package receiver

import (
	"encoding/binary"
	"net/netip"
)

// Opcodes: the first two bytes (big-endian) of every datagram.
const (
	opOK             = 0
	opRetransmit     = 1
	opGo             = 2
	opConnectReq     = 3
	opDisconnect     = 4
	opReqAck         = 6
	opConnectReply   = 7
	opData           = 8
	opFEC            = 9
	opHelloNew       = 10
	opHelloStreaming = 11
	opHello          = 0x0500 // opcode 5 sent unswapped by a little-endian host, long ago
)

// Capability bits.
const (
	capNewGen    = 0x0001
	capBigEndian = 0x0008
	capAsync     = 0x0020

	// receiverCaps is what every receiver announces.
	receiverCaps = capNewGen | capBigEndian
)

// Fixed wire sizes.
const (
	sizeConnectReq   = 12
	sizeGo           = 4
	sizeDisconnect   = 4
	sizeOK           = 8
	sizeRetransmit   = 140
	sizeHello        = 26 // meaningful bytes; 28 on the wire with padding
	sizeConnectReply = 20 // meaningful bytes; 32 on the wire
	sizeReqAck       = 144
	sizeDataHeader   = 16

	maxBlocksPerSlice = 1024
	maxClients        = 1024
	bitmapBytes       = maxBlocksPerSlice / 8

	// maxBlockSize is the largest block that fits in one UDP datagram
	// after the 16-byte header.
	maxBlockSize = 65507 - sizeDataHeader
	// maxFECRows is the most FEC blocks per stripe the code allows.
	maxFECRows = 128
	// maxStripes is the largest interleave the sender can use.
	maxStripes = 256
)

func opcode(b []byte) (uint16, bool) {
	if len(b) < 2 {
		return 0, false
	}
	return binary.BigEndian.Uint16(b), true
}

// hello is HELLO, HELLO_NEW or HELLO_STREAMING.
type hello struct {
	streaming bool
	caps      uint32
	dataAddr  netip.Addr
	blockSize int
}

func parseHello(b []byte) (hello, bool) {
	op, _ := opcode(b)
	if len(b) < sizeHello || (op != opHello && op != opHelloNew && op != opHelloStreaming) {
		return hello{}, false
	}
	// Bytes 12..23 and 26..27 are uninitialised in the C sender: never look.
	return hello{
		streaming: op == opHelloStreaming,
		caps:      binary.BigEndian.Uint32(b[4:]),
		dataAddr:  netip.AddrFrom4([4]byte(b[8:12])),
		blockSize: int(binary.BigEndian.Uint16(b[24:])),
	}, true
}

type connectReply struct {
	client    int32 // -1: the sender's table is full
	blockSize uint32
	caps      uint32
	dataAddr  netip.Addr
}

func parseConnectReply(b []byte) (connectReply, bool) {
	if op, _ := opcode(b); op != opConnectReply || len(b) < sizeConnectReply {
		return connectReply{}, false
	}
	return connectReply{
		client:    int32(binary.BigEndian.Uint32(b[4:])),
		blockSize: binary.BigEndian.Uint32(b[8:]),
		caps:      binary.BigEndian.Uint32(b[12:]),
		dataAddr:  netip.AddrFrom4([4]byte(b[16:20])),
	}, true
}

// dataHeader is the common header of DATA and FEC packets.
type dataHeader struct {
	fec     bool
	stripes int // FEC only
	slice   int32
	block   int // DATA: block number; FEC: FEC block number
	bytes   int32
}

func parseDataHeader(b []byte) (dataHeader, bool) {
	op, _ := opcode(b)
	if len(b) < sizeDataHeader || (op != opData && op != opFEC) {
		return dataHeader{}, false
	}
	h := dataHeader{
		fec:   op == opFEC,
		slice: int32(binary.BigEndian.Uint32(b[4:])),
		block: int(binary.BigEndian.Uint16(b[8:])),
		bytes: int32(binary.BigEndian.Uint32(b[12:])),
	}
	if h.fec {
		h.stripes = int(binary.BigEndian.Uint16(b[2:]))
	}
	return h, true
}

type reqAck struct {
	slice int32
	bytes int32
	rxmit int32
	ready []byte // readySet bitmap, LSB-first; aliases the packet
}

func parseReqAck(b []byte) (reqAck, bool) {
	if op, _ := opcode(b); op != opReqAck || len(b) < sizeReqAck {
		return reqAck{}, false
	}
	return reqAck{
		slice: int32(binary.BigEndian.Uint32(b[4:])),
		bytes: int32(binary.BigEndian.Uint32(b[8:])),
		rxmit: int32(binary.BigEndian.Uint32(b[12:])),
		ready: b[16:sizeReqAck],
	}, true
}

// hasClient reports whether client c is set in a readySet bitmap.
func (r reqAck) hasClient(c int) bool {
	return c >= 0 && c < maxClients && bitIsSet(r.ready, c)
}

func bitIsSet(m []byte, i int) bool { return m[i/8]&(1<<(i%8)) != 0 }

func appendConnectReq(b []byte, rcvbuf uint32) []byte {
	b = binary.BigEndian.AppendUint16(b, opConnectReq)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint32(b, receiverCaps)
	return binary.BigEndian.AppendUint32(b, rcvbuf)
}

func appendGo(b []byte) []byte {
	return binary.BigEndian.AppendUint32(b, opGo<<16)
}

func appendDisconnect(b []byte) []byte {
	return binary.BigEndian.AppendUint32(b, opDisconnect<<16)
}

func appendOK(b []byte, slice int32) []byte {
	b = binary.BigEndian.AppendUint32(b, opOK<<16)
	return binary.BigEndian.AppendUint32(b, uint32(slice))
}

// appendRetransmit appends a RETRANSMIT message. have is the slice's
// received-block bitmap (128 bytes, 1 = received).
func appendRetransmit(b []byte, slice, rxmit int32, have *[bitmapBytes]byte) []byte {
	b = binary.BigEndian.AppendUint32(b, opRetransmit<<16)
	b = binary.BigEndian.AppendUint32(b, uint32(slice))
	b = binary.BigEndian.AppendUint32(b, uint32(rxmit))
	return append(b, have[:]...)
}
