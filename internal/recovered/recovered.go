// Package recovered turns a panic on a background goroutine into an
// error. The client must never end at a root shell or a kernel panic
// because of a bug: a goroutine the agent starts hands its panic to
// whoever can put it on the failure path (report failed, then
// imgcast.after).
package recovered

import (
	"fmt"
	"runtime/debug"
)

// PanicError is a recovered panic: where it happened, its value and the
// goroutine's stack.
type PanicError struct {
	Where string
	Value any
	Stack []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("internal error (a bug in imgcast) in %s: %v\n%s", e.Where, e.Value, e.Stack)
}

// Go runs fn on a new goroutine. A panic in fn is recovered and passed to
// onPanic as a *PanicError (where names the goroutine); with a nil onPanic
// the panic is not recovered.
func Go(where string, onPanic func(error), fn func()) {
	go func() {
		defer Handle(where, onPanic)
		fn()
	}()
}

// Handle is Go's recovery for goroutines started another way: call it
// deferred, first thing in the goroutine.
func Handle(where string, onPanic func(error)) {
	if onPanic == nil {
		return
	}
	if r := recover(); r != nil {
		onPanic(&PanicError{Where: where, Value: r, Stack: debug.Stack()})
	}
}
