package main

import (
	"context"
	"errors"
)

// The imaging jobs (issue 5): metadata over HTTP, the ready report, the
// partitions received by multicast (or unicast) and restored to the disk.

// errNotImplemented is what the imaging modes return until they exist.
var errNotImplemented = errors.New("not implemented yet")

type notImplementedError struct{ mode Mode }

func (e notImplementedError) Error() string {
	return "imaging in " + string(e.mode) + " mode is " + errNotImplemented.Error()
}

func (e notImplementedError) Unwrap() error { return errNotImplemented }

func (e notImplementedError) Hint() string {
	return "use imgcast.mode=debug and udp-receiver on the shell for now"
}

func multicastJob(ctx context.Context, env *Env) error { return notImplementedError{ModeMulticast} }

func unicastJob(ctx context.Context, env *Env) error { return notImplementedError{ModeUnicast} }
