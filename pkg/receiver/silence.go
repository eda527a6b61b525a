package receiver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/imgcast/imgcast/pkg/ping"
)

// silenceProbeTimeout bounds how long a timed-out reception asks the
// sender's host by ping whether it is still there.
const silenceProbeTimeout = 2 * time.Second

// silenceError is a timeout error with what a unicast probe of the
// sender's host says about the likely cause. It unwraps to the timeout
// error, so errors.Is and errors.As see through it.
type silenceError struct {
	err   error
	cause string
}

func (e *silenceError) Error() string { return e.err.Error() + "; " + e.cause }
func (e *silenceError) Unwrap() error { return e.err }

// explainSilence adds the likely cause to err, the error of a sender
// that accepted us and then sent nothing (more) for too long: it pings
// the sender's host. A sender that still answers by unicast while its
// multicast data do not arrive points at the network: a switch that
// stopped forwarding the group (IGMP snooping without a querier) or a
// firewall that drops multicast.
func (s *session) explainSilence(err error) error {
	if !s.sender.IsValid() || s.ctx.Err() != nil {
		return err
	}
	host := s.sender.Addr()
	ctx, cancel := context.WithTimeout(s.ctx, silenceProbeTimeout)
	defer cancel()
	_, perr := ping.Echo(ctx, s.ifc.IP, host)
	group := s.advertised
	multicast := s.path == PathMulticast || (!s.dataStarted && group.IsValid() && group.IsMulticast())
	var cause string
	switch {
	case errors.Is(perr, os.ErrPermission):
		cause = fmt.Sprintf("could not ask %s by ping whether it is still there (%v)", host, perr)
	case perr != nil && s.ctx.Err() != nil:
		return err
	case perr != nil:
		cause = fmt.Sprintf("%s does not answer ping either: its machine, its link or the network to it may be down (or it drops ping)", host)
	case multicast && s.dataStarted:
		cause = fmt.Sprintf("multicast data stopped while %s still answers by unicast (ping): a switch may have stopped forwarding the group %s "+
			"(IGMP snooping without a querier: enable the switch's IGMP querier, or multicast_querier on a Linux bridge), or a firewall drops multicast", host, group)
	case multicast:
		cause = fmt.Sprintf("no data arrived while %s still answers by unicast (ping): if it sends to the group %s, multicast is blocked on the way "+
			"(a firewall drops it, or a switch does not forward the group); `imgcast mcast-check recv -server %s` tells which", host, group, host)
	default:
		cause = fmt.Sprintf("%s still answers by unicast (ping): udp-sender there may have stopped, or dropped this receiver", host)
	}
	return &silenceError{err: err, cause: cause}
}
