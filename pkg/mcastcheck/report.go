package mcastcheck

import "github.com/imgcast/imgcast/pkg/status"

// StatusReport is the check's result as a status report carries it
// (status.Report's mcast_check): the verdict and the figures behind it.
// The querier is empty when none was seen; the unicast figures are zero
// when no unicast copy was compared.
func (r Result) StatusReport() *status.MulticastCheck {
	m := &status.MulticastCheck{
		Verdict:       r.Verdict,
		LossPercent:   r.Multicast.LossPercent,
		MulticastRate: r.Multicast.Rate,
	}
	if r.Multicast.Packets > 0 {
		m.FirstPacket = r.Multicast.FirstPacket
	}
	if u := r.Unicast; u != nil {
		m.UnicastLossPercent, m.UnicastRate = u.LossPercent, u.Rate
	}
	if q := r.Querier; q.Seen {
		m.Querier, m.QuerierVersion, m.QueryInterval = q.Address, q.Version, q.Interval
	}
	return m
}
