package receiver

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime/debug"
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
	// ErrInternal: a bug in the receiver (a recovered panic). The
	// reception is abandoned; the output is incomplete.
	ErrInternal = errors.New("internal error")
)

// StartTimeoutError is the error for ErrStartTimeout.
type StartTimeoutError struct {
	// Addr is where the receiver looked for a sender (the rendezvous
	// address and port P+1), or the sender once connected.
	Addr      netip.AddrPort
	Timeout   time.Duration
	Connected bool // a sender answered but never started the transfer
	// Ignored counts handshake messages (HELLO, CONNECT_REPLY) that were
	// ignored because they did not come from the rendezvous address;
	// IgnoredFrom is the source of the last one.
	Ignored     int
	IgnoredFrom netip.AddrPort
}

func (e *StartTimeoutError) Error() string {
	if e.Connected {
		return fmt.Sprintf("sender %s accepted us but sent no data within %s", e.Addr, e.Timeout)
	}
	msg := fmt.Sprintf("no sender answered on %s within %s", e.Addr, e.Timeout)
	if e.Ignored > 0 {
		msg += fmt.Sprintf(" (ignored %d handshake messages from %s: only the rendezvous address %s is accepted)",
			e.Ignored, e.IgnoredFrom, e.Addr.Addr())
	}
	return msg
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

// internalError is a recovered panic.
type internalError struct {
	msg   string
	stack []byte
}

func newInternalError(where string, r any) *internalError {
	return &internalError{
		msg:   fmt.Sprintf("internal error in the receiver's %s (a bug; please report it): %v", where, r),
		stack: debug.Stack(),
	}
}

func (e *internalError) Error() string { return e.msg }

// Is makes errors.Is(err, ErrInternal) true.
func (e *internalError) Is(target error) bool { return target == ErrInternal }

func errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

func wrapf(kind, cause error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...), cause: cause}
}
