// Package receivertest plays udp-sender's side of the UDPcast protocol
// with hand-built datagrams, for tests of receivers against crafted or
// hostile traffic (as net/http/httptest does for HTTP servers).
//
// The message builders write exactly what udpcast's udp-sender 20120424
// puts on the wire (big-endian, fixed sizes, HELLO opcode 0x0500); a
// Sender is a UDP socket on the sender's port P+1 that sends them and
// reads the receiver's answers. Nothing here imports pkg/receiver, so its
// own tests can use it too.
package receivertest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
)

// Opcodes.
const (
	OpOK             = 0
	OpRetransmit     = 1
	OpGo             = 2
	OpConnectReq     = 3
	OpDisconnect     = 4
	OpReqAck         = 6
	OpConnectReply   = 7
	OpData           = 8
	OpFEC            = 9
	OpHelloStreaming = 11
	OpHello          = 0x0500
)

// Capabilities a sender announces: CapsSender normally, CapsAsync for
// udp-sender --async.
const (
	CapsSender = 0x09
	CapsAsync  = 0x29
)

// Hello is a HELLO (op OpHello or OpHelloStreaming): 28 bytes, with the
// garbage udp-sender leaves in bytes 12..23 and 26..27.
func Hello(op uint16, caps uint32, dataAddr netip.Addr, blockSize uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, op)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint32(b, caps)
	b = append(b, addr4(dataAddr)...)
	b = append(b, "garbage-garb"...) // 12 bytes
	b = binary.BigEndian.AppendUint16(b, blockSize)
	return append(b, 0xde, 0xad)
}

// ConnectReply is a CONNECT_REPLY (32 bytes); client -1 refuses.
func ConnectReply(client int32, blockSize, caps uint32, dataAddr netip.Addr) []byte {
	b := binary.BigEndian.AppendUint16(nil, OpConnectReply)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(client))
	b = binary.BigEndian.AppendUint32(b, blockSize)
	b = binary.BigEndian.AppendUint32(b, caps)
	b = append(b, addr4(dataAddr)...)
	return append(b, "garbage-garb"...) // 12 bytes
}

// Data is a DATA packet: block of a slice of sliceBytes bytes.
func Data(slice int32, block, sliceBytes int, payload []byte) []byte {
	return dataHeader(OpData, 0, slice, block, sliceBytes, payload)
}

// FEC is a FEC packet: FEC block f of a slice sent with the given
// interleave (stripes).
func FEC(slice int32, stripes, f, sliceBytes int, payload []byte) []byte {
	return dataHeader(OpFEC, uint16(stripes), slice, f, sliceBytes, payload)
}

func dataHeader(op, second uint16, slice int32, block, sliceBytes int, payload []byte) []byte {
	b := binary.BigEndian.AppendUint16(make([]byte, 0, 16+len(payload)), op)
	b = binary.BigEndian.AppendUint16(b, second)
	b = binary.BigEndian.AppendUint32(b, uint32(slice))
	b = binary.BigEndian.AppendUint32(b, uint32(block)<<16)
	b = binary.BigEndian.AppendUint32(b, uint32(sliceBytes))
	return append(b, payload...)
}

// ReqAck is a REQACK (144 bytes); ready lists the client numbers that
// have already acknowledged the slice.
func ReqAck(slice int32, sliceBytes, rxmit int, ready ...int) []byte {
	b := binary.BigEndian.AppendUint16(nil, OpReqAck)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(slice))
	b = binary.BigEndian.AppendUint32(b, uint32(sliceBytes))
	b = binary.BigEndian.AppendUint32(b, uint32(rxmit))
	m := make([]byte, 128)
	for _, c := range ready {
		m[c/8] |= 1 << (c % 8)
	}
	return append(b, m...)
}

func addr4(a netip.Addr) []byte {
	if !a.IsValid() {
		return make([]byte, 4)
	}
	v := a.As4()
	return v[:]
}

// Message is a receiver's datagram, decoded.
type Message struct {
	Op    uint16
	From  netip.AddrPort
	Len   int
	Slice int32  // OK, RETRANSMIT
	Rxmit int32  // RETRANSMIT
	Have  []byte // RETRANSMIT: bitmap of received blocks, LSB-first
}

// Has reports whether a RETRANSMIT says block b was received.
func (m Message) Has(b int) bool { return m.Have[b/8]&(1<<(b%8)) != 0 }

func parse(b []byte, from netip.AddrPort) Message {
	m := Message{From: from, Len: len(b)}
	if len(b) < 2 {
		return m
	}
	m.Op = binary.BigEndian.Uint16(b)
	if (m.Op == OpOK || m.Op == OpRetransmit) && len(b) >= 8 {
		m.Slice = int32(binary.BigEndian.Uint32(b[4:]))
	}
	if m.Op == OpRetransmit && len(b) >= 140 {
		m.Rxmit = int32(binary.BigEndian.Uint32(b[8:]))
		m.Have = append([]byte(nil), b[12:140]...)
	}
	return m
}

// Sender is a UDP socket standing for udp-sender (or for a host
// pretending to be one).
type Sender struct {
	conn *net.UDPConn
	buf  []byte
}

// Listen opens a sender socket on addr (the sender's IP and port P+1).
func Listen(addr netip.AddrPort) (*Sender, error) {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, err
	}
	return &Sender{conn: c, buf: make([]byte, 65536)}, nil
}

// Close closes the socket.
func (s *Sender) Close() error { return s.conn.Close() }

// Send sends one datagram.
func (s *Sender) Send(to netip.AddrPort, b []byte) error {
	_, err := s.conn.WriteToUDPAddrPort(b, to)
	return err
}

// Recv waits up to timeout for a datagram.
func (s *Sender) Recv(timeout time.Duration) (Message, error) {
	if err := s.conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return Message{}, err
	}
	n, from, err := s.conn.ReadFromUDPAddrPort(s.buf)
	if err != nil {
		return Message{}, err
	}
	return parse(s.buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port())), nil
}

// Expect waits up to timeout for a message with opcode op, skipping
// others.
func (s *Sender) Expect(op uint16, timeout time.Duration) (Message, error) {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return Message{}, fmt.Errorf("no message with opcode %d within %s", op, timeout)
		}
		m, err := s.Recv(left)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return Message{}, err
		}
		if m.Op == op {
			return m, nil
		}
	}
}

// Accept waits for a CONNECT_REQ and answers it with client number 0 and
// blockSize; it returns the receiver's address.
func (s *Sender) Accept(blockSize uint32, timeout time.Duration) (netip.AddrPort, error) {
	m, err := s.Expect(OpConnectReq, timeout)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return m.From, s.Send(m.From, ConnectReply(0, blockSize, CapsSender, netip.Addr{}))
}

// Slices cuts data into slices of at most sliceBytes.
func Slices(data []byte, sliceBytes int) [][]byte {
	var out [][]byte
	for len(data) > 0 {
		n := min(len(data), sliceBytes)
		out = append(out, data[:n])
		data = data[n:]
	}
	return out
}

// DataPackets returns the DATA packets of slice number n holding sl.
func DataPackets(n int32, sl []byte, blockSize int) [][]byte {
	var pkts [][]byte
	for b := 0; b*blockSize < len(sl); b++ {
		pkts = append(pkts, Data(n, b, len(sl), sl[b*blockSize:min(len(sl), (b+1)*blockSize)]))
	}
	return pkts
}

// Acknowledge plays the REQACK rounds of slice n (sl is its content, nil
// for the end slice) as a non-async udp-sender does, resending what a
// RETRANSMIT asks for, until the receiver (client 0) answers OK.
func (s *Sender) Acknowledge(to netip.AddrPort, n int32, sl []byte, blockSize int) error {
	for rxmit := range 50 {
		if err := s.Send(to, ReqAck(n, len(sl), rxmit)); err != nil {
			return err
		}
		m, err := s.Recv(200 * time.Millisecond)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return err
		}
		switch {
		case m.Op == OpOK && m.Slice == n:
			return nil
		case m.Op == OpRetransmit && m.Slice == n:
			for b, p := range DataPackets(n, sl, blockSize) {
				if !m.Has(b) {
					if err := s.Send(to, p); err != nil {
						return err
					}
				}
			}
		}
	}
	return fmt.Errorf("slice %d: no OK after 50 REQACKs", n)
}

// Stream sends data as a non-async udp-sender does once the transfer has
// started, from slice first on: each slice's DATA, then REQACKs until OK;
// then the zero-byte end slice, acknowledged the same way.
func (s *Sender) Stream(to netip.AddrPort, first int32, data []byte, blockSize, sliceBytes int) error {
	n := first
	for _, sl := range Slices(data, sliceBytes) {
		for _, p := range DataPackets(n, sl, blockSize) {
			if err := s.Send(to, p); err != nil {
				return err
			}
		}
		if err := s.Acknowledge(to, n, sl, blockSize); err != nil {
			return err
		}
		n++
	}
	return s.Acknowledge(to, n, nil, blockSize)
}
