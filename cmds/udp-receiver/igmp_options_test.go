package main

import (
	"testing"
	"time"
)

func TestIGMPReportIntervalOption(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    time.Duration
		wantErr bool
		ignore  bool // parsed as --ignore-lost-data
	}{
		{args: nil, want: 0}, // the receiver's default (5 s)
		{args: []string{"--igmp-report-interval", "10"}, want: 10 * time.Second},
		{args: []string{"--igmp-report-interval=0"}, want: -1},
		{args: []string{"--igmp-report-interval", "-3"}, wantErr: true},
		{args: []string{"--igmp-report", "3"}, wantErr: true}, // full name only
		{args: []string{"--ig"}, ignore: true},                // still udpcast's --ignore-lost-data
	} {
		o, err := parseOptions("udp-receiver", tc.args, noEnv, fakeResolver)
		if tc.wantErr {
			if err == nil {
				t.Errorf("%q: accepted", tc.args)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if o.igmpReport != tc.want || o.ignoreLostData != tc.ignore {
			t.Errorf("%q: interval %v ignore %v, want %v %v", tc.args, o.igmpReport, o.ignoreLostData, tc.want, tc.ignore)
		}
	}
}
