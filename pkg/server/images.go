package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/imgcast/imgcast/pkg/fogmc"
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

// partImage matches FOG's per-partition image names: d<disk>p<part>.img,
// optionally followed by a split suffix .NNN.
var partImage = regexp.MustCompile(`^d([0-9]+)p([0-9]+)\.img(?:\.([0-9]{3}))?$`)

// ScanImage lists the partition images of disk 1 of a FOG image folder in
// partition order — the order the client receives them in, one stream per
// partition on portbase+2*i. A split image is "d1pN.img" or "d1pN.img.000"
// followed by ".001", ".002", … without gaps.
//
// Only disk 1 is sent: the client restores one disk (d1.partitions), and a
// sender for a disk no client asks for would wait for receivers forever.
func ScanImage(dir string) ([]ImageStream, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("image folder: %w", err)
	}
	pieces := map[int]map[int]string{} // partition -> piece number -> name
	var otherDisks, legacy []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "sys.img") || strings.HasPrefix(name, "rec.img") {
			legacy = append(legacy, name)
			continue
		}
		m := partImage.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		if m[1] != "1" {
			otherDisks = append(otherDisks, name)
			continue
		}
		part, _ := strconv.Atoi(m[2])
		piece := 0
		if m[3] != "" {
			piece, _ = strconv.Atoi(m[3])
		}
		if pieces[part] == nil {
			pieces[part] = map[int]string{}
		}
		if prev, dup := pieces[part][piece]; dup {
			return nil, fmt.Errorf("image folder %s: both %s and %s claim to be the first piece of partition %d; remove one", dir, prev, name, part)
		}
		pieces[part][piece] = name
	}
	if len(pieces) == 0 {
		switch {
		case len(legacy) > 0:
			return nil, fmt.Errorf("image folder %s has only legacy FOG images (%s), which imgcast does not send; recapture it as d1pN.img", dir, strings.Join(legacy, ", "))
		case len(otherDisks) > 0:
			return nil, fmt.Errorf("image folder %s has no images for disk 1 (d1pN.img), only %s", dir, strings.Join(otherDisks, ", "))
		}
		return nil, fmt.Errorf("image folder %s has no partition images (d1pN.img or d1pN.img.000)", dir)
	}
	parts := make([]int, 0, len(pieces))
	for p := range pieces {
		parts = append(parts, p)
	}
	sort.Ints(parts)
	var streams []ImageStream
	for _, p := range parts {
		s := ImageStream{Partition: p}
		for i := 0; i < len(pieces[p]); i++ {
			name, ok := pieces[p][i]
			if !ok {
				return nil, fmt.Errorf("image folder %s: partition %d is split into %d pieces but piece .%03d is missing", dir, p, len(pieces[p]), i)
			}
			info, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				return nil, fmt.Errorf("image folder: %w", err)
			}
			if !info.Mode().IsRegular() {
				return nil, fmt.Errorf("image folder %s: %s is not a regular file", dir, name)
			}
			s.Files = append(s.Files, name)
			s.Size += info.Size()
		}
		s.ID = fogmc.IDForFile(s.Files[0])
		streams = append(streams, s)
	}
	return streams, nil
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
		if m := partImage.FindStringSubmatch(e.Name()); m != nil && m[1] == "1" {
			return true
		}
	}
	return false
}
