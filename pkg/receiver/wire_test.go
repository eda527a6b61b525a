package receiver

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEncodeMessages(t *testing.T) {
	var have [bitmapBytes]byte
	have[0] = 0x05 // blocks 0 and 2
	have[127] = 0x80
	retransmit := appendRetransmit(nil, 7, 3, &have)
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"CONNECT_REQ", appendConnectReq(nil, 212992), "0003 0000 00000009 00034000"},
		{"GO", appendGo(nil), "0002 0000"},
		{"DISCONNECT", appendDisconnect(nil), "0004 0000"},
		{"OK", appendOK(nil, 0x01020304), "0000 0000 01020304"},
		{"OK negative", appendOK(nil, -1), "0000 0000 ffffffff"},
		{"RETRANSMIT head", retransmit[:14], "0001 0000 00000007 00000003 0500"},
	}
	for _, tc := range tests {
		if want := unhex(t, tc.want); !bytes.Equal(tc.got, want) {
			t.Errorf("%s = % x, want % x", tc.name, tc.got, want)
		}
	}
	if len(retransmit) != sizeRetransmit || retransmit[sizeRetransmit-1] != 0x80 {
		t.Errorf("RETRANSMIT is %d bytes, last %#x; want 140 bytes ending 0x80", len(retransmit), retransmit[len(retransmit)-1])
	}
	if n := len(appendConnectReq(nil, 0)); n != sizeConnectReq {
		t.Errorf("CONNECT_REQ %d bytes", n)
	}
}

func TestParseHello(t *testing.T) {
	// A 28-byte HELLO as captured: garbage in 12..23 and 26..27.
	pkt := unhex(t, "0500 0000 00000009 ea630001 deadbeefdeadbeefdeadbeef 05b0 abcd")
	h, ok := parseHello(pkt)
	if !ok {
		t.Fatal("HELLO not parsed")
	}
	want := hello{caps: 9, dataAddr: netip.MustParseAddr("234.99.0.1"), blockSize: 1456}
	if h != want {
		t.Errorf("got %+v, want %+v", h, want)
	}
	pkt[1] = 0x0b // opcode 0x050b is nothing
	if _, ok := parseHello(pkt); ok {
		t.Error("0x050b accepted as HELLO")
	}
	for _, op := range []string{"000a", "000b"} {
		copy(pkt, unhex(t, op))
		h, ok := parseHello(pkt)
		if !ok || h.streaming != (op == "000b") {
			t.Errorf("opcode %s: ok=%v streaming=%v", op, ok, h.streaming)
		}
	}
	copy(pkt, unhex(t, "0005")) // the obsolete byte order is not a HELLO
	if _, ok := parseHello(pkt); ok {
		t.Error("opcode 5 accepted as HELLO")
	}
	if _, ok := parseHello(pkt[:25]); ok {
		t.Error("short HELLO accepted")
	}
}

func TestParseConnectReply(t *testing.T) {
	pkt := unhex(t, "0007 0000 00000003 000005b0 00000029 0a63000b 112233445566778899aabbcc")
	r, ok := parseConnectReply(pkt)
	want := connectReply{client: 3, blockSize: 1456, caps: 0x29, dataAddr: netip.MustParseAddr("10.99.0.11")}
	if !ok || r != want {
		t.Errorf("got %+v %v, want %+v", r, ok, want)
	}
	copy(pkt[4:], unhex(t, "ffffffff"))
	if r, _ := parseConnectReply(pkt); r.client != -1 {
		t.Errorf("table-full reply parsed as client %d", r.client)
	}
	if _, ok := parseConnectReply(pkt[:19]); ok {
		t.Error("short reply accepted")
	}
}

func TestParseDataAndFEC(t *testing.T) {
	data := unhex(t, "0008 0000 0000002a 0070 0000 00027d00 cafe")
	h, ok := parseDataHeader(data)
	if want := (dataHeader{slice: 42, block: 112, bytes: 163072}); !ok || h != want {
		t.Errorf("DATA: got %+v, want %+v", h, want)
	}
	fec := unhex(t, "0009 0008 00000001 003f 0000 00000251")
	h, ok = parseDataHeader(fec)
	if want := (dataHeader{fec: true, stripes: 8, slice: 1, block: 63, bytes: 593}); !ok || h != want {
		t.Errorf("FEC: got %+v, want %+v", h, want)
	}
	if _, ok := parseDataHeader(fec[:15]); ok {
		t.Error("short header accepted")
	}
}

func TestParseReqAck(t *testing.T) {
	pkt := make([]byte, sizeReqAck)
	copy(pkt, unhex(t, "0006 0000 00000005 00000000 00000002"))
	pkt[16] = 0x02     // client 1
	pkt[16+127] = 0x80 // client 1023
	r, ok := parseReqAck(pkt)
	if !ok || r.slice != 5 || r.bytes != 0 || r.rxmit != 2 {
		t.Fatalf("got %+v %v", r, ok)
	}
	for c, want := range map[int]bool{0: false, 1: true, 2: false, 1023: true, 1024: false, -1: false} {
		if r.hasClient(c) != want {
			t.Errorf("hasClient(%d) = %v", c, !want)
		}
	}
	if _, ok := parseReqAck(pkt[:143]); ok {
		t.Error("short REQACK accepted")
	}
}

// FuzzParse feeds arbitrary datagrams to every parser of received bytes.
func FuzzParse(f *testing.F) {
	f.Add(unhex(f, "0500 0000 00000009 ea630001 deadbeefdeadbeefdeadbeef 05b0 abcd"))
	f.Add(unhex(f, "0007 0000 ffffffff 000005b0 00000029 0a63000b"))
	f.Add(unhex(f, "0009 0000 00000001 ffff 0000 80000000"))
	f.Add(append(unhex(f, "0006 0000 00000005 00000000 00000002"), make([]byte, 128)...))
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, b []byte) {
		opcode(b)
		parseHello(b)
		parseConnectReply(b)
		parseDataHeader(b)
		if r, ok := parseReqAck(b); ok {
			for c := -1; c <= maxClients; c++ {
				r.hasClient(c)
			}
		}
	})
}
