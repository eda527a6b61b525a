// imgcast is the imaging client.
//
// Synopsis:
//
//	imgcast                                  run as the client agent (u-root uinit)
//	imgcast agent [flags]                    same, with explicit flags
//	imgcast image [flags] IMAGE-URL|DIR      the imaging job by hand (multicast or unicast)
//	imgcast mcast-check send|recv [flags]    test multicast: a test stream, and the check with a verdict
//	imgcast restore-partition SOURCE TARGET  restore one partition image
//	imgcast restore-disk IMAGEDIR|URL TARGET restore a whole disk
//	imgcast keygen NAME                      write an Ed25519 key pair for signed images
//	imgcast sign -key NAME.key IMAGEDIR      write the folder's signed manifest
//
// Settings of the agent come from the kernel command line (see README.md).
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// subcommand is one imgcast verb; args exclude the verb itself.
type subcommand struct {
	summary string
	run     func(args []string, stdin io.Reader, stdout, stderr io.Writer) error
}

var subcommands = map[string]subcommand{
	"agent":             {"run the imaging client (default when started as uinit)", runAgent},
	"image":             {"run the imaging job by hand: [flags] IMAGE-URL|DIR (see imgcast image -h)", runImage},
	"mcast-check":       {"does multicast work here, and if not why: send | recv -server IP", runMcastCheck},
	"restore-partition": {"restore one partition image: SOURCE (file or -) TARGET (device or file)", runRestorePartition},
	"restore-disk":      {"restore a disk from an image folder or URL: IMAGEDIR|URL TARGET", runRestoreDisk},
	"keygen":            {"write an Ed25519 key pair for signed images: NAME (NAME.key, NAME.pub)", runKeygen},
	"sign":              {"sign an image folder: -key NAME.key IMAGEDIR (writes d1.manifest, d1.manifest.sig)", runSign},
}

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		if status, ok := err.(exitStatus); ok {
			os.Exit(int(status))
		}
		fmt.Fprintln(os.Stderr, "imgcast:", err)
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	// As uinit, imgcast gets flags (or nothing) but no verb.
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			usage(stderr)
			return nil
		}
		return runAgent(args, stdin, stdout, stderr)
	}
	sc, ok := subcommands[args[0]]
	if !ok {
		usage(stderr)
		return fmt.Errorf("unknown command %q", args[0])
	}
	return sc.run(args[1:], stdin, stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: imgcast [COMMAND] [ARGS]")
	names := make([]string, 0, len(subcommands))
	for n := range subcommands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-18s %s\n", n, subcommands[n].summary)
	}
}
