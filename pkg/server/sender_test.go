package server

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSenderArgs(t *testing.T) {
	for _, tt := range []struct {
		name      string
		cfg       SenderConfig
		index     int
		receivers int
		want      string
	}{
		{
			name:      "minimal",
			cfg:       SenderConfig{Interface: "br0", PortBase: 9000, Clients: 2},
			receivers: 2,
			want:      "--nokbd --interface br0 --portbase 9000 --min-receivers 2",
		},
		{
			name:      "third partition, waits rounded up to seconds",
			cfg:       SenderConfig{Interface: "eth1", PortBase: 9000, Clients: 30, MaxWait: 90*time.Second + time.Millisecond, MinWait: 500 * time.Millisecond},
			index:     2,
			receivers: 28,
			want:      "--nokbd --interface eth1 --portbase 9004 --min-receivers 28 --max-wait 91 --min-wait 1",
		},
		{
			name: "pass-through options",
			cfg: SenderConfig{Interface: "br0", PortBase: 63100, Clients: 1, RetriesUntilDrop: 50, MaxBitrate: "600m",
				FEC: "8x8/128", RdvAddress: "239.1.2.3", TTL: 32, Extra: []string{"--slice-size", "64"}},
			index:     1,
			receivers: 1,
			want:      "--nokbd --interface br0 --portbase 63102 --min-receivers 1 --retries-until-drop 50 --max-bitrate 600m --fec 8x8/128 --mcast-rdv-address 239.1.2.3 --ttl 32 --slice-size 64",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := strings.Join(tt.cfg.Args(tt.index, tt.receivers), " ")
			if got != tt.want {
				t.Errorf("Args(%d) =\n  %s\nwant\n  %s", tt.index, got, tt.want)
			}
		})
	}
}

func TestSenderConfigValidate(t *testing.T) {
	good := SenderConfig{Interface: "br0", PortBase: 9000, Clients: 1}
	if err := good.validate(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		change func(*SenderConfig)
		want   string
	}{
		{func(c *SenderConfig) { c.Interface = "" }, "interface"},
		{func(c *SenderConfig) { c.Clients = 0 }, "clients"},
		{func(c *SenderConfig) { c.PortBase = 9001 }, "even"},
		{func(c *SenderConfig) { c.PortBase = 80 }, "between"},
		{func(c *SenderConfig) { c.MaxWait = -time.Second }, "negative"},
	} {
		c := good
		tt.change(&c)
		if err := c.validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("validate(%+v) = %v, want %q", c, err, tt.want)
		}
	}
}

func TestLineWriter(t *testing.T) {
	var got []string
	w := &lineWriter{line: func(l string) { got = append(got, l) }}
	// Written in awkward pieces, as a pipe delivers them.
	in := "Udp-sender 20120424\nbytes=  1 000  re-xmits=0\rbytes=  2 000  re-xmits=0\rTransfer complete.\a\nlast"
	for i := 0; i < len(in); i += 7 {
		w.Write([]byte(in[i:min(i+7, len(in))]))
	}
	w.flush()
	want := []string{"Udp-sender 20120424", "bytes=  1 000  re-xmits=0", "bytes=  2 000  re-xmits=0", "Transfer complete.\a", "last"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
