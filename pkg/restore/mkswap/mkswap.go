// Package mkswap makes a Linux swap area, as util-linux's mkswap does, so
// a restored swap partition gets back the UUID the machine's /etc/fstab
// names (FOG records it at capture in dN.original.swapuuids).
//
// The format is the kernel's version-1 swap header (union swap_header in
// include/linux/swap.h): the first page holds 1024 bytes of boot-loader
// space, then version (1), the number of the last usable page, the count
// of bad pages (0), the UUID and a 16-byte label, in the machine's byte
// order; the page ends with the magic "SWAPSPACE2".
package mkswap

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

const (
	// MinPages is the smallest swap area the kernel and mkswap accept.
	MinPages = 10
	// wipeBytes is how much of each end of the area is cleared, so no
	// stale filesystem signature (btrfs keeps one at 64 KiB, ZFS and md
	// some near the end) is found next to the swap signature.
	wipeBytes = 1 << 20
)

// Options for Make. The zero value makes an area with a random UUID and no
// label for the running system's page size.
type Options struct {
	// UUID is the area's UUID as text ("1b4e28ba-2fa1-11d2-883f-b9a761bde3fb");
	// empty: a new random one.
	UUID string
	// Label is at most 16 bytes.
	Label string
	// PageSize defaults to os.Getpagesize().
	PageSize int
}

// ParseUUID reads a UUID in its text form into the 16 bytes the swap
// header (and blkid) use.
func ParseUUID(s string) ([16]byte, error) {
	var u [16]byte
	h := strings.ReplaceAll(s, "-", "")
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' || len(h) != 32 {
		return u, fmt.Errorf("%q is not a UUID", s)
	}
	if _, err := hex.Decode(u[:], []byte(h)); err != nil {
		return u, fmt.Errorf("%q is not a UUID", s)
	}
	return u, nil
}

// Header returns the first page of a swap area of size bytes.
func Header(size int64, opts Options) ([]byte, error) {
	ps := opts.PageSize
	if ps == 0 {
		ps = os.Getpagesize()
	}
	if ps < 4096 || ps&(ps-1) != 0 {
		return nil, fmt.Errorf("page size %d", ps)
	}
	pages := size / int64(ps)
	if pages < MinPages {
		return nil, fmt.Errorf("a swap area needs at least %d pages (%d bytes), this one has %d bytes", MinPages, MinPages*ps, size)
	}
	if pages-1 > 0xFFFFFFFF {
		return nil, fmt.Errorf("a swap area of %d pages is larger than the header can describe", pages)
	}
	if len(opts.Label) > 16 {
		return nil, fmt.Errorf("swap label %q is longer than 16 bytes", opts.Label)
	}
	var uuid [16]byte
	if opts.UUID != "" {
		var err error
		if uuid, err = ParseUUID(opts.UUID); err != nil {
			return nil, err
		}
	} else {
		if _, err := rand.Read(uuid[:]); err != nil {
			return nil, err
		}
		uuid[6] = uuid[6]&0x0F | 0x40 // version 4
		uuid[8] = uuid[8]&0x3F | 0x80 // RFC 4122 variant
	}
	page := make([]byte, ps)
	binary.NativeEndian.PutUint32(page[1024:], 1)
	binary.NativeEndian.PutUint32(page[1028:], uint32(pages-1))
	binary.NativeEndian.PutUint32(page[1032:], 0)
	copy(page[1036:1052], uuid[:])
	copy(page[1052:1068], opts.Label)
	copy(page[ps-10:], "SWAPSPACE2")
	return page, nil
}

// Make writes a swap area over bytes [offset, offset+size) of w (a disk,
// with the partition's offset, or the partition device itself with
// offset 0): it clears the first and last MiB, then writes the header.
// Nothing outside the range is touched.
func Make(w io.WriterAt, offset, size int64, opts Options) error {
	page, err := Header(size, opts)
	if err != nil {
		return err
	}
	zero := make([]byte, 64<<10)
	clearRange := func(from, to int64) error {
		for off := from; off < to; off += int64(len(zero)) {
			n := min(int64(len(zero)), to-off)
			if _, err := w.WriteAt(zero[:n], offset+off); err != nil {
				return fmt.Errorf("clearing the swap area: %w", err)
			}
		}
		return nil
	}
	if err := clearRange(int64(len(page)), min(size, wipeBytes)); err != nil {
		return err
	}
	if err := clearRange(max(int64(len(page)), size-wipeBytes), size); err != nil {
		return err
	}
	if _, err := w.WriteAt(page, offset); err != nil {
		return fmt.Errorf("writing the swap header: %w", err)
	}
	return nil
}

// ErrNotSwap is returned by Read for an area without the swap magic.
var ErrNotSwap = errors.New("not a swap area")

// Read returns the UUID (text form) and label of the swap area at offset.
func Read(r io.ReaderAt, offset int64, pageSize int) (uuid, label string, err error) {
	if pageSize == 0 {
		pageSize = os.Getpagesize()
	}
	page := make([]byte, pageSize)
	if _, err := r.ReadAt(page, offset); err != nil {
		return "", "", err
	}
	if string(page[pageSize-10:]) != "SWAPSPACE2" || binary.NativeEndian.Uint32(page[1024:]) != 1 {
		return "", "", ErrNotSwap
	}
	u := hex.EncodeToString(page[1036:1052])
	uuid = u[0:8] + "-" + u[8:12] + "-" + u[12:16] + "-" + u[16:20] + "-" + u[20:32]
	return uuid, strings.TrimRight(string(page[1052:1068]), "\x00"), nil
}
