package imaging

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/imgcast/imgcast/internal/recovered"
	"github.com/imgcast/imgcast/pkg/fogmc"
	"github.com/imgcast/imgcast/pkg/receiver"
)

// Stream is one UDPcast stream to receive (ReceiveStream).
type Stream struct {
	// Receiver configures the reception (port, rendezvous, timeouts).
	Receiver receiver.Config
	// Receive receives it (nil: receiver.Receive).
	Receive ReceiveFunc
	// Name is the file the stream carries, for messages; ID the FOGMC1
	// id its header must name when it has one.
	Name, ID string
	// RequireHeader refuses a stream without a FOGMC1 header.
	RequireHeader bool
}

// ReceiveStream receives one stream and hands its data, the FOGMC1 header
// checked and stripped, to consume as it arrives: the receiver writes
// into a pipe that consume reads, so nothing is buffered beyond the
// pipe. When consume fails, the receiver is stopped and the error
// returned is the receiver's own if it failed first (a truncated stream
// is only the symptom of a silent sender), else consume's. A stream no
// sender answered wraps ErrNoSender.
func ReceiveStream(ctx context.Context, s Stream, consume func(io.Reader) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	receive := s.Receive
	if receive == nil {
		receive = receiver.Receive
	}
	pr, pw := io.Pipe()
	recvDone := make(chan error, 1)
	recovered.Go("the receiver of "+s.Name, func(err error) {
		pw.CloseWithError(err)
		recvDone <- err
	}, func() {
		_, err := receive(ctx, s.Receiver, pw)
		err = noSender(err)
		if err != nil {
			pw.CloseWithError(fmt.Errorf("receiving %s: %w", s.Name, err))
		} else {
			pw.Close()
		}
		recvDone <- err
	})
	stop := func(err error) error {
		cancel()
		pr.CloseWithError(errStopped)
		if rerr := <-recvDone; rerr != nil && !errors.Is(rerr, errStopped) && !errors.Is(rerr, context.Canceled) {
			return rerr
		}
		return err
	}
	src, found, err := fogmc.Strip(pr, s.ID)
	if err != nil {
		return stop(err)
	}
	if !found && s.RequireHeader {
		return stop(fmt.Errorf("the stream on port %d has no FOGMC1 header naming %s; refusing it (nothing was written)", s.Receiver.Port, s.Name))
	}
	if err := consume(src); err != nil {
		return stop(err)
	}
	return <-recvDone
}

// errStopped is what the receiver sees when the restore side gave up.
var errStopped = errors.New("restore stopped reading")
