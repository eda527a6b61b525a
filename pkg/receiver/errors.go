package receiver

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Errors Receive returns can be classified with errors.Is against these.
var (
	// ErrStartTimeout: no sender answered, or a sender answered but did not
	// start sending, within Config.StartTimeout. Nothing was written to
	// the output. The error is a *StartTimeoutError.
	ErrStartTimeout = errors.New("start timeout")
	// ErrReceiveTimeout: the sender went silent mid-transfer for longer
	// than Config.ReceiveTimeout.
	ErrReceiveTimeout = errors.New("receive timeout")
	// ErrDropped: the sender moved on without us (we fell more than one
	// slice behind, or lost data an async sender will not resend).
	ErrDropped = errors.New("dropped by sender")
	// ErrRefused: the sender refused the connection (its client table is
	// full, or it serves a single point-to-point receiver already).
	ErrRefused = errors.New("refused by sender")
	// ErrProtocol: the sender sent something this receiver cannot work with.
	ErrProtocol = errors.New("protocol error")
	// ErrWrite: the output writer failed; the writer's own error is
	// wrapped too (errors.Is(err, syscall.ENOSPC) works).
	ErrWrite = errors.New("writing the output failed")
	// ErrSetup: the interface or the sockets could not be set up.
	ErrSetup = errors.New("network setup failed")
)

// StartTimeoutError is the error for ErrStartTimeout.
type StartTimeoutError struct {
	// Addr is where the receiver looked for a sender (the rendezvous
	// address and port P+1), or the sender once connected.
	Addr      netip.AddrPort
	Timeout   time.Duration
	Connected bool // a sender answered but never started the transfer
}

func (e *StartTimeoutError) Error() string {
	if e.Connected {
		return fmt.Sprintf("sender %s accepted us but sent no data within %s", e.Addr, e.Timeout)
	}
	return fmt.Sprintf("no sender answered on %s within %s", e.Addr, e.Timeout)
}

// Is makes errors.Is(err, ErrStartTimeout) true.
func (e *StartTimeoutError) Is(target error) bool { return target == ErrStartTimeout }

// kindError carries one of the sentinel kinds, a message, and optionally
// an underlying cause.
type kindError struct {
	kind  error
	msg   string
	cause error
}

func (e *kindError) Error() string {
	if e.cause != nil {
		return e.msg + ": " + e.cause.Error()
	}
	return e.msg
}

func (e *kindError) Unwrap() []error {
	if e.cause != nil {
		return []error{e.kind, e.cause}
	}
	return []error{e.kind}
}

func errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

func wrapf(kind, cause error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...), cause: cause}
}
