package imaging

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"time"

	"github.com/imgcast/imgcast/pkg/receiver"
)

// UDPCast receives streams from udpcast's udp-sender with pkg/receiver.
type UDPCast struct {
	// Interface is the NIC to receive on (the one the network came up
	// on); empty lets the receiver choose.
	Interface string
	// Rendezvous is where the handshake goes: the server's address (as
	// FOG clients use --mcast-rdv-address) or a multicast group; invalid
	// means the interface's broadcast address.
	Rendezvous netip.Addr
	TTL        int
	// FirstStartTimeout bounds the wait for the first stream's sender:
	// the server waits for every client to boot, so it is long.
	// StartTimeout bounds the later streams' waits: their senders start
	// as soon as the previous stream ended, so a long wait means the
	// session broke. ReceiveTimeout bounds silence mid-stream.
	FirstStartTimeout, StartTimeout, ReceiveTimeout time.Duration
	Logf                                            func(format string, args ...any)
}

// Receive implements Receiver.
func (u *UDPCast) Receive(ctx context.Context, s Stream, w io.Writer) error {
	timeout := u.StartTimeout
	if s.Index == 0 {
		timeout = u.FirstStartTimeout
	}
	cfg := receiver.Config{
		Port:           s.PortBase,
		Interface:      u.Interface,
		RendezvousAddr: u.Rendezvous,
		TTL:            u.TTL,
		StartTimeout:   timeout,
		ReceiveTimeout: u.ReceiveTimeout,
		Logf:           u.Logf,
	}
	_, err := receiver.Receive(ctx, cfg, w)
	var st *receiver.StartTimeoutError
	if errors.As(err, &st) && !st.Connected {
		return noSenderError{err}
	}
	return err
}

// noSenderError keeps the receiver's message ("no sender answered on
// 10.0.0.1:9001 within 30s") and matches ErrNoSender too.
type noSenderError struct{ err error }

func (e noSenderError) Error() string   { return e.err.Error() }
func (e noSenderError) Unwrap() []error { return []error{ErrNoSender, e.err} }
