package kmod

import (
	"strings"
	"testing"
)

func TestParseUevent(t *testing.T) {
	for _, tt := range []struct {
		name string
		msg  string
		want uevent
		ok   bool
	}{
		{"usb NIC", "add@/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0\x00ACTION=add\x00DEVPATH=/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0\x00SUBSYSTEM=usb\x00MODALIAS=usb:v0BDAp8153d3000dc00dsc00dp00icFFiscFFip00in00\x00SEQNUM=1234\x00",
			uevent{"add", "/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0", "usb", "usb:v0BDAp8153d3000dc00dsc00dp00icFFiscFFip00in00"}, true},
		{"no modalias", "remove@/devices/virtual/net/x\x00ACTION=remove\x00DEVPATH=/devices/virtual/net/x\x00SUBSYSTEM=net\x00",
			uevent{Action: "remove", Devpath: "/devices/virtual/net/x", Subsystem: "net"}, true},
		{"udev message", "libudev\x00\xfe\xed\xca\xfe", uevent{}, false},
		{"garbage", "", uevent{}, false},
		{"header only", "add@/x", uevent{}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseUevent([]byte(tt.msg))
			if ok != tt.ok || (ok && got != tt.want) {
				t.Errorf("parseUevent = %+v %v, want %+v %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func FuzzParseUevent(f *testing.F) {
	f.Add([]byte("add@/devices/x\x00ACTION=add\x00MODALIAS=pci:v1\x00"))
	f.Add([]byte("libudev\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, ok := parseUevent(b)
		if ok && ev.Action == "" {
			t.Error("ok without an action")
		}
		if ok && !strings.Contains(string(b), "ACTION="+ev.Action) {
			t.Error("action not from the message")
		}
	})
}
