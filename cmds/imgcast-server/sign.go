package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"

	"github.com/imgcast/imgcast/pkg/manifest"
	"github.com/imgcast/imgcast/pkg/server"
)

// signIfUnsigned signs the image folder the server is about to serve with
// the private key at keyPath (imgcast keygen) unless it already has a
// d1.manifest. An existing manifest is left alone: it may be signed by
// another key, and the clients check it anyway.
func signIfUnsigned(ctx context.Context, images, image, keyPath string, l *log.Logger) error {
	key, err := manifest.LoadPrivateKey(keyPath)
	if err != nil {
		return fmt.Errorf("--sign-key: %w", err)
	}
	name, err := server.FindImage(images, image)
	if err != nil {
		return err
	}
	dir := filepath.Join(images, name)
	if _, err := os.Stat(filepath.Join(dir, manifest.FileName(1))); err == nil {
		l.Printf("image %q already has %s: not signing it again (run imgcast sign after changing the image)", name, manifest.FileName(1))
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	m, err := manifest.SignFolder(ctx, dir, 1, name, key)
	if err != nil {
		return fmt.Errorf("--sign-key: signing %s: %w", dir, err)
	}
	l.Printf("signed image %q: %s covers %d files and %d partition images", name, manifest.FileName(1), len(m.Files), len(m.Streams))
	return nil
}
