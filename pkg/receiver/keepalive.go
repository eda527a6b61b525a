package receiver

import (
	"net/netip"
	"time"

	"github.com/imgcast/imgcast/pkg/igmp"
)

// DefaultIGMPReportInterval is how often a receiver reports its groups
// when Config.IGMPReportInterval is 0.
const DefaultIGMPReportInterval = 5 * time.Second

// keepAlive sends our own IGMP membership reports for the groups the
// session joined (see igmp.Reporter: without them a switch that snoops
// IGMP but has no querier stops forwarding the data group minutes into a
// long transfer). It is nil until the first group is joined, and its
// reporter is nil when the keep-alive is off.
type keepAlive struct {
	reporter *igmp.Reporter
}

// keepJoined makes the keep-alive report group, starting it on the first
// group. Without a raw socket (not root) it warns once and stays off.
func (s *session) keepJoined(group netip.Addr) {
	if s.cfg.IGMPReportInterval < 0 {
		return
	}
	if s.keep == nil {
		s.keep = &keepAlive{}
		interval := s.cfg.IGMPReportInterval
		if interval == 0 {
			interval = DefaultIGMPReportInterval
		}
		c, err := igmp.Open(s.ifi, s.ifc.IP)
		if err != nil {
			s.logf("IGMP keep-alive is off: %v; behind a switch that snoops IGMP without a querier, multicast may stop after a few minutes", err)
			return
		}
		s.keep.reporter = c.KeepReporting(interval, s.logf)
	}
	if s.keep.reporter != nil {
		s.keep.reporter.Add(group)
	}
}

// keepLeft stops reporting a group the session left.
func (s *session) keepLeft(group netip.Addr) {
	if s.keep != nil && s.keep.reporter != nil {
		s.keep.reporter.Remove(group)
	}
}

// stopKeepAlive ends the reports when the reception ends.
func (s *session) stopKeepAlive() {
	if s.keep != nil && s.keep.reporter != nil {
		s.keep.reporter.Close()
	}
}
