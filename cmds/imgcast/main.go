// imgcast is the imaging client agent. It runs as u-root's uinit on a
// PXE-booted machine; its subcommands are also usable on their own.
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "imgcast:", err)
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return fmt.Errorf("not implemented yet")
}
