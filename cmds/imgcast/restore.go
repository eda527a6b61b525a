package main

import (
	"errors"
	"io"
)

func runRestorePartition(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return errors.New("restore-partition: not implemented yet")
}

func runRestoreDisk(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return errors.New("restore-disk: not implemented yet")
}
