package main

import (
	"errors"
	"io"
)

func runAgent(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return errors.New("agent: not implemented yet")
}
