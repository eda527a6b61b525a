package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/imgcast/imgcast/pkg/layout"
)

// ImageStream is one partition image of an image folder: the file, or the
// split pieces, sent as one udpcast stream.
type ImageStream struct {
	Partition int
	// ID names the stream in its FOGMC1 header, e.g. "d1p1.img".
	ID string
	// Files are the pieces in sending order, as names inside the folder.
	Files []string
	Size  int64
}

// ScanImage lists the partition images of disk 1 of a FOG image folder in
// the order imgcast-server sends them (package layout's Imgcast layout:
// partition order, split pieces joined, one stream per partition on
// portbase+2*i).
func ScanImage(dir string) ([]ImageStream, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("image folder: %w", err)
	}
	var files []layout.File
	for _, e := range entries {
		if n, ok := layout.ParseName(e.Name()); !ok || n.Disk != 1 {
			files = append(files, layout.File{Name: e.Name(), Size: -1})
			continue
		}
		info, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("image folder: %w", err)
		}
		if !info.Mode().IsRegular() {
			return nil, fmt.Errorf("image folder %s: %s is not a regular file", dir, e.Name())
		}
		files = append(files, layout.File{Name: e.Name(), Size: info.Size()})
	}
	streams, err := layout.Imgcast(files, 0)
	if err != nil {
		return nil, fmt.Errorf("image folder %s: %w", dir, err)
	}
	out := make([]ImageStream, len(streams))
	for i, s := range streams {
		out[i] = ImageStream{Partition: s.Partition, ID: s.ID, Files: s.Files, Size: s.Size}
	}
	return out, nil
}

// FindImage picks the image folder to send inside root: name if given,
// otherwise the only subfolder that holds partition images.
func FindImage(root, name string) (string, error) {
	if name != "" {
		if strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
			return "", fmt.Errorf("image name %q must be a folder name inside %s", name, root)
		}
		if _, err := os.Stat(filepath.Join(root, name)); err != nil {
			return "", fmt.Errorf("image %q: %w", name, err)
		}
		return name, nil
	}
	if isImageFolder(root) {
		return "", fmt.Errorf("%s is itself an image folder: pass its parent as --images and %q as --image", root, filepath.Base(root))
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return "", fmt.Errorf("images: %w", err)
	}
	var found []string
	for _, e := range entries {
		if e.IsDir() && isImageFolder(filepath.Join(root, e.Name())) {
			found = append(found, e.Name())
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no image folders (with d1pN.img files) in %s", root)
	case 1:
		return found[0], nil
	}
	return "", errors.New("several images in " + root + " (" + strings.Join(found, ", ") + "): choose one with --image")
}

func isImageFolder(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if n, ok := layout.ParseName(e.Name()); ok && n.Disk == 1 {
			return true
		}
	}
	return false
}
