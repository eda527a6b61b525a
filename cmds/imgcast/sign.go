package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/imgcast/imgcast/pkg/manifest"
)

// runKeygen: imgcast keygen NAME — writes NAME.key and NAME.pub.
func runKeygen(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: imgcast keygen NAME")
		fmt.Fprintln(stderr, "  writes an Ed25519 key pair: NAME.key (private, mode 0600: keep it on the server) and NAME.pub")
		fmt.Fprintln(stderr, "  (build it into the boot image: make initramfs PUBKEY=NAME.pub)")
	}
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() != 1 {
		fl.Usage()
		return errors.New("keygen: need NAME")
	}
	name := fl.Arg(0)
	if _, err := manifest.WriteKeyPair(name); err != nil {
		return fmt.Errorf("keygen: %w (an existing key is never overwritten)", err)
	}
	fmt.Fprintf(stdout, "wrote %s.key (private: keep it secret, on the imaging server only) and %s.pub\n", name, name)
	return nil
}

// runSign: imgcast sign -key NAME.key [-id ID] [-disk N] IMAGEDIR
func runSign(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("sign", flag.ContinueOnError)
	fl.SetOutput(stderr)
	keyPath := fl.String("key", "", "private key written by imgcast keygen (NAME.key)")
	id := fl.String("id", "", "image id the manifest names (default: the folder's name, as clients expect)")
	disk := fl.Int("disk", 1, "which disk of the folder (the N of dN.partitions)")
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: imgcast sign -key NAME.key [-id ID] [-disk N] IMAGEDIR")
		fmt.Fprintln(stderr, "  writes dN.manifest (size and SHA-256 of every dN.* and dNp* file, SHA-256 of every 4 MiB chunk")
		fmt.Fprintln(stderr, "  of every partition image) and dN.manifest.sig; sign again after changing the image")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() != 1 || *keyPath == "" {
		fl.Usage()
		return errors.New("sign: need -key NAME.key and IMAGEDIR")
	}
	dir := fl.Arg(0)
	key, err := manifest.LoadPrivateKey(*keyPath)
	if err != nil {
		return err
	}
	if *id == "" {
		*id = manifest.ImageID(dir)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m, err := manifest.SignFolder(ctx, dir, *disk, *id, key)
	if err != nil {
		return fmt.Errorf("sign %s: %w", dir, err)
	}
	chunks := 0
	for _, s := range m.Streams {
		chunks += len(s.Chunks)
	}
	fmt.Fprintf(stdout, "signed image %q in %s: %d files, %d partition images, %d chunks → %s, %s\n",
		m.ImageID, dir, len(m.Files), len(m.Streams), chunks, manifest.FileName(*disk), manifest.SignatureName(*disk))
	return nil
}
