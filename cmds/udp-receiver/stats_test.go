package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestFormatCount(t *testing.T) {
	for x, want := range map[uint64]string{
		0:                 "               ",
		1:                 "            1 ",
		1000:              "       1 000 ",
		163072:            "     163 072 ",
		500001:            "     500 001 ",
		3000001:           "  3 000 001 ",
		999_999_999:       "999 999 999 ",
		1_000_000_000:     "     976 562K",
		5_000_000_000_000: "  4 768 371M",
	} {
		if got := formatCount(x); got != want {
			t.Errorf("formatCount(%d) = %q, want %q", x, got, want)
		}
	}
}

func TestStatsLine(t *testing.T) {
	tests := []struct {
		bytes   int64
		elapsed time.Duration
		pos     int64
		want    string
	}{
		// Lines observed from udpcast's receiver.
		{163072, 3318 * time.Microsecond, -1, "bytes=     163 072  (393.18 Mbps)"},
		{0, 0, -1, "bytes=" + strings.Repeat(" ", 15) + " (  0.00 Mbps)"},
		{2053197, 545500 * time.Microsecond, 2701756, "bytes=  2 053 197  ( 30.11 Mbps)  2 701 756 "},
		{1 << 30, time.Second, -1, "bytes=  1 048 576K (8589.93 Mbps)"},
	}
	for _, tc := range tests {
		if got := statsLine(tc.bytes, tc.elapsed, tc.pos); got != tc.want {
			t.Errorf("statsLine(%d, %s, %d) =\n%q, want\n%q", tc.bytes, tc.elapsed, tc.pos, got, tc.want)
		}
	}
}

func TestConsoleBreaksStatsLine(t *testing.T) {
	var b bytes.Buffer
	c := &console{w: &b}
	c.println("Udp-receiver")
	c.status("bytes=1")
	c.status("bytes=2")
	c.info("Connected as #%d", 0)
	c.status("bytes=3")
	c.println("Transfer complete.")
	want := "Udp-receiver\nbytes=1\rbytes=2\r\nConnected as #0\nbytes=3\r\nTransfer complete.\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}
