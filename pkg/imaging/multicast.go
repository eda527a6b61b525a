package imaging

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/imgcast/imgcast/pkg/layout"
	"github.com/imgcast/imgcast/pkg/receiver"
	"github.com/imgcast/imgcast/pkg/restore"
	"github.com/imgcast/imgcast/pkg/status"
)

// stream is where one partition's multicast stream comes from.
type stream struct {
	id   string // the FOGMC1 id it must carry
	port int    // its UDPcast port base
}

// planStreams asks the server whether its multicast session can still be
// joined and decides the transfer (a session that cannot be joined is an
// error, or a switch to unicast with FallbackHTTP), and where each
// partition's stream comes from: the ports the session lists, or, from a
// server that lists none, imgcast-server's layout on PortBase.
func (j *job) planStreams(ctx context.Context, images []restore.PlannedPartition) (map[int]stream, Transfer, error) {
	computed, err := imgcastStreams(images, j.PortBase)
	if err != nil {
		return nil, "", err
	}
	if j.SessionURL == "" {
		return computed, Multicast, nil
	}
	s, err := j.waitForSession(ctx)
	var fetchErr *sessionFetchError
	if errors.As(err, &fetchErr) {
		// A FOG server, or an older imgcast-server, has no session
		// endpoint: go ahead; the receiver's start timeout still bounds
		// the wait.
		j.logf("session check skipped: %v", fetchErr.err)
		return computed, Multicast, nil
	}
	if err != nil && !errors.Is(err, status.ErrNotJoinable) {
		return nil, "", err
	}
	if err := s.CanJoin(); err != nil {
		if j.FallbackHTTP {
			j.printf("Multicast session cannot be joined (%s); falling back to HTTP (imgcast.fallback=http)\n", s.Message)
			return nil, Unicast, nil
		}
		return nil, "", err
	}
	if s.Phase == status.Unicast {
		j.printf("The server runs no multicast session; fetching the image over HTTP\n")
		return nil, Unicast, nil
	}
	if len(s.Streams) == 0 {
		if s.PortBase != 0 && s.PortBase != j.PortBase {
			// The server's own port base: with rolling sessions, each
			// session has its own.
			computed, err = imgcastStreams(images, s.PortBase)
		}
		return computed, Multicast, err
	}
	listed, err := sessionStreams(s.Streams, computed)
	if err != nil {
		return nil, "", fmt.Errorf("the server's session (%s) does not match the image folder: %w", j.SessionURL, err)
	}
	return listed, Multicast, nil
}

// sessionFetchError is a server that did not answer the first question
// about its session.
type sessionFetchError struct{ err error }

func (e *sessionFetchError) Error() string { return e.err.Error() }
func (e *sessionFetchError) Unwrap() error { return e.err }

// waitForSession asks the server which session this machine is to join
// (status.WaitForSession). When the server runs rolling sessions and the
// running one started without this machine, it is queued for the next
// one: the wait is shown on the console (which session, since when) and
// bounded by SessionWait.
func (j *job) waitForSession(ctx context.Context) (status.Session, error) {
	client := j.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	since := time.Now()
	if j.SessionWait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, j.SessionWait,
			fmt.Errorf("the server kept this machine queued for longer than %s (imgcast.sessionwait)", j.SessionWait))
		defer cancel()
	}
	queued := false
	s, err := status.WaitForSession(ctx, client, j.SessionURL, j.MAC, func(format string, args ...any) {
		queued = true
		j.printf("Rolling session: %s (since %s)\n", fmt.Sprintf(format, args...), since.Format(time.TimeOnly))
	})
	switch {
	case err == nil:
	case ctx.Err() != nil:
		if cause := context.Cause(ctx); !errors.Is(err, cause) {
			err = fmt.Errorf("%w: %w", err, cause)
		}
		return s, err
	case !queued && !errors.Is(err, status.ErrNotJoinable):
		return s, &sessionFetchError{err}
	default:
		return s, err
	}
	if queued {
		j.printf("Rolling session %d opened after %s of waiting; joining it on port base %d\n",
			s.ID, time.Since(since).Round(time.Second), s.PortBase)
	}
	return s, nil
}

// imgcastStreams is imgcast-server's layout of the partitions with images.
func imgcastStreams(images []restore.PlannedPartition, portBase int) (map[int]stream, error) {
	var files []layout.File
	for _, pp := range images {
		for _, pc := range pp.Image.Pieces {
			files = append(files, layout.File{Name: pc.Name, Size: pc.Size})
		}
	}
	ls, err := layout.Imgcast(files, portBase)
	if err != nil {
		return nil, err
	}
	out := map[int]stream{}
	for _, s := range ls {
		out[s.Partition] = stream{id: s.ID, port: s.Port}
	}
	return out, nil
}

// sessionStreams takes each partition's port from the streams the server
// lists (untrusted: checked), and checks they carry the files this client
// expects.
func sessionStreams(listed []status.Stream, want map[int]stream) (map[int]stream, error) {
	out := map[int]stream{}
	for part, w := range want {
		found := false
		for _, s := range listed {
			if s.Partition != part {
				continue
			}
			if s.ID != w.id {
				return nil, fmt.Errorf("it sends %q for partition %d, the image folder has %q", s.ID, part, w.id)
			}
			if s.Port < 1 || s.Port > 65534 {
				return nil, fmt.Errorf("it lists port %d for partition %d", s.Port, part)
			}
			out[part] = stream{id: s.ID, port: s.Port}
			found = true
			break
		}
		if !found {
			return nil, fmt.Errorf("it does not send partition %d (%s)", part, w.id)
		}
	}
	return out, nil
}

// receiverConfig is the reception of partition p's stream.
func (j *job) receiverConfig(p partition, progress func(receiver.Progress)) receiver.Config {
	start := j.NextStartTimeout
	if start == 0 {
		start = DefaultNextStartTimeout
	}
	if p.index == 0 {
		start = j.FirstStartTimeout
	}
	ttl := j.TTL
	switch {
	case !j.Rendezvous.IsValid():
		ttl = 1 // keep the handshake on the broadcast address
	case ttl == 0:
		ttl = DefaultTTL
	}
	label := fmt.Sprintf("d1p%d: ", p.number)
	return receiver.Config{
		Port:               p.stream.port,
		Interface:          j.Interface,
		RendezvousAddr:     j.Rendezvous,
		TTL:                ttl,
		StartTimeout:       start,
		ReceiveTimeout:     j.ReceiveTimeout,
		IGMPReportInterval: j.IGMPReportInterval,
		Progress:           progress,
		Logf: func(format string, args ...any) {
			if strings.HasPrefix(format, "received message") {
				j.debugf(label+format, args...) // the sender's capabilities: a detail
				return
			}
			j.logf(label+format, args...)
		},
	}
}

// noSender marks a reception no sender answered as ErrNoSender, keeping
// the receiver's message ("no sender answered on 10.0.0.1:9001 within
// 30s").
func noSender(err error) error {
	var st *receiver.StartTimeoutError
	if errors.As(err, &st) && !st.Connected {
		return noSenderError{err}
	}
	return err
}

type noSenderError struct{ err error }

func (e noSenderError) Error() string   { return e.err.Error() }
func (e noSenderError) Unwrap() []error { return []error{ErrNoSender, e.err} }
