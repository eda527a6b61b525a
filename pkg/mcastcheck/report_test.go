package mcastcheck

import (
	"reflect"
	"testing"

	"github.com/imgcast/imgcast/pkg/status"
)

func TestStatusReport(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Result
		want status.MulticastCheck
	}{
		{"ok, with unicast and a querier",
			Result{OK: true, Verdict: "ok", Group: "234.0.0.1", Port: 9998,
				Multicast: Stats{Packets: 498, Expected: 500, LossPercent: 0.4, Rate: 11.8e6, FirstPacket: 0.3},
				Unicast:   &Stats{Packets: 500, Expected: 500, Rate: 11.9e6, FirstPacket: 0.1},
				Querier:   Querier{Checked: true, Seen: true, Address: "10.77.0.1", Version: 2, Interval: 125}},
			status.MulticastCheck{Verdict: "ok", LossPercent: 0.4, Querier: "10.77.0.1", QuerierVersion: 2, QueryInterval: 125,
				FirstPacket: 0.3, MulticastRate: 11.8e6, UnicastRate: 11.9e6}},
		{"blocked, no querier seen, no unicast copy",
			Result{Verdict: "PROBLEM — multicast is blocked", Multicast: Stats{Expected: 500, LossPercent: 100, FirstPacket: 7},
				Querier: Querier{Checked: true, Note: "ignored"}},
			status.MulticastCheck{Verdict: "PROBLEM — multicast is blocked", LossPercent: 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.in.StatusReport()
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", *got, tc.want)
			}
			// What the client sends, the server accepts.
			rep := status.Report{MAC: "52:54:00:12:34:56", State: status.Ready, MulticastCheck: got}
			if err := rep.Validate(); err != nil {
				t.Errorf("the server refuses it: %v", err)
			}
		})
	}
}
