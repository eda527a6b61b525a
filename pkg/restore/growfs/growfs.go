// Package growfs grows a restored filesystem to fill its partition, as
// FOG's client does after each partition of a resizable ("n") image:
// ext2/3/4 with e2fsck and resize2fs, NTFS with ntfsresize, using the
// same tools and flags as FOS (Debian's e2fsprogs and ntfs-3g, shipped in
// the client image). Growing either filesystem means rewriting its
// allocation structures (ext4 block groups and their descriptors, NTFS's
// $Bitmap and boot sectors); those tools are the reference
// implementations, so they are used rather than a new Go one.
//
// The filesystem's size is read natively from its superblock or boot
// sector before and after, so a filesystem that already fills its
// partition is left alone and the result can be reported.
//
// The tools open the partition exclusively (O_EXCL), which the kernel
// refuses while another process holds the whole disk exclusively: close
// an O_EXCL handle on the disk before calling Grow.
package growfs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// Kind is a filesystem family this package knows.
type Kind string

const (
	Ext  Kind = "ext"  // ext2, ext3, ext4 (partclone's "EXTFS")
	NTFS Kind = "ntfs" // partclone's "NTFS"
	None Kind = ""     // not grown
)

// KindOf maps the filesystem name in a partclone image header to a Kind,
// and says why when the filesystem is not grown.
func KindOf(partcloneFS string) (Kind, string) {
	switch fs := strings.TrimSpace(partcloneFS); strings.ToUpper(fs) {
	case "EXTFS", "EXT2", "EXT3", "EXT4":
		return Ext, ""
	case "NTFS":
		return NTFS, ""
	case "BTRFS", "XFS", "F2FS":
		return None, fs + " is not grown by imgcast (FOS mounts it to grow it; imgcast's image has no such driver): it keeps its captured size"
	case "":
		return None, "no filesystem named in the image header"
	default:
		return None, fs + " is not a resizable filesystem: it keeps its captured size"
	}
}

// Runner runs a command with stdin and returns its combined output; a
// non-zero exit is an *exec.ExitError (or anything with ExitCode()).
type Runner func(ctx context.Context, stdin string, name string, args ...string) ([]byte, error)

// Options tune Grow.
type Options struct {
	Run  Runner // default: the tools found in PATH
	Logf func(format string, args ...any)
}

// Result says what Grow did.
type Result struct {
	Kind          Kind
	Before, After int64 // filesystem size in bytes
	Grown         bool
	// Skipped says why nothing was done, when nothing was.
	Skipped string
}

// ToolError is a tool that failed; its output is kept for the report.
type ToolError struct {
	Tool   string
	Args   []string
	Code   int
	Output string
	Err    error
}

func (e *ToolError) Error() string {
	out := strings.TrimSpace(e.Output)
	if len(out) > 2000 {
		out = "…" + out[len(out)-2000:]
	}
	return fmt.Sprintf("%s %s failed (%v): %s", e.Tool, strings.Join(e.Args, " "), e.Err, out)
}

func (e *ToolError) Unwrap() error { return e.Err }

// ErrMissingTool: the tool to grow this filesystem is not installed.
var ErrMissingTool = errors.New("tool not found")

// Grow grows the filesystem on dev (a partition device, or a file holding
// a partition image) to the size of dev. fs is the filesystem name from
// the partclone header. It returns with Skipped set, and no error, for
// filesystems it does not grow.
func Grow(ctx context.Context, dev, fs string, opts Options) (*Result, error) {
	kind, why := KindOf(fs)
	res := &Result{Kind: kind}
	if kind == None {
		res.Skipped = why
		return res, nil
	}
	if opts.Run == nil {
		opts.Run = execRunner
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	devSize, before, err := sizes(dev, kind)
	if err != nil {
		return nil, err
	}
	res.Before, res.After = before, before
	if before >= devSize-slack(kind) {
		res.Skipped = "the filesystem already fills its partition"
		return res, nil
	}
	switch kind {
	case Ext:
		err = growExt(ctx, dev, opts.Run, logf)
	case NTFS:
		err = growNTFS(ctx, dev, opts.Run, logf)
	}
	if err != nil {
		return nil, err
	}
	if _, res.After, err = sizes(dev, kind); err != nil {
		return nil, fmt.Errorf("after growing: %w", err)
	}
	if res.After <= before {
		return nil, fmt.Errorf("the %s filesystem on %s is still %d bytes after growing it (partition: %d bytes)", kind, dev, res.After, devSize)
	}
	res.Grown = true
	return res, nil
}

// slack is how far short of the partition's end a grown filesystem may
// stop: ext ends on a block boundary (block sizes go up to 64 KiB), NTFS
// keeps its backup boot sector after its last cluster (up to 2 MiB).
func slack(k Kind) int64 {
	if k == NTFS {
		return 2 << 20
	}
	return 64 << 10
}

// fsck runs e2fsck -fp, and -fy if -fp will not fix what it found, as
// FOS does. Exit 1 and 2 mean errors were corrected: logged, not fatal.
func fsck(ctx context.Context, dev string, run Runner, logf func(string, ...any)) error {
	out, err := run(ctx, "", "e2fsck", "-fp", dev)
	code := exitCode(err)
	if code < 0 {
		return toolErr("e2fsck", []string{"-fp", dev}, out, err)
	}
	if code >= 4 {
		logf("e2fsck -fp %s could not repair everything (exit %d); running e2fsck -fy", dev, code)
		out, err = run(ctx, "", "e2fsck", "-fy", dev)
		if code = exitCode(err); code < 0 || code >= 4 {
			return toolErr("e2fsck", []string{"-fy", dev}, out, err)
		}
	}
	if code != 0 {
		logf("e2fsck corrected errors on %s: %s", dev, strings.TrimSpace(string(out)))
	}
	return nil
}

func growExt(ctx context.Context, dev string, run Runner, logf func(string, ...any)) error {
	if err := fsck(ctx, dev, run, logf); err != nil {
		return fmt.Errorf("checking before the resize: %w", err)
	}
	if out, err := run(ctx, "", "resize2fs", dev); err != nil {
		return toolErr("resize2fs", []string{dev}, out, err)
	}
	if err := fsck(ctx, dev, run, logf); err != nil {
		return fmt.Errorf("checking after the resize: %w", err)
	}
	return nil
}

// growNTFS runs ntfsresize -f -b -P (force despite the dirty flag, accept
// bad-sector lists, no progress bar) answering its question, then clears
// the dirty flag it leaves with ntfsfix -b -d, as FOS does.
func growNTFS(ctx context.Context, dev string, run Runner, logf func(string, ...any)) error {
	args := []string{"-f", "-b", "-P", dev}
	if out, err := run(ctx, strings.Repeat("y\n", 4), "ntfsresize", args...); err != nil {
		return toolErr("ntfsresize", args, out, err)
	}
	return ResetNTFS(ctx, dev, run)
}

// ResetNTFS clears an NTFS volume's dirty flag and bad-sector list
// (ntfsfix -b -d). FOS does it after restoring any NTFS partition, so
// Windows does not start with a disk check.
func ResetNTFS(ctx context.Context, dev string, run Runner) error {
	if run == nil {
		run = execRunner
	}
	args := []string{"-b", "-d", dev}
	if out, err := run(ctx, "", "ntfsfix", args...); err != nil {
		return toolErr("ntfsfix", args, out, err)
	}
	return nil
}

func toolErr(tool string, args []string, out []byte, err error) error {
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, ErrMissingTool) {
		return fmt.Errorf("%w: %s is not in this image, so the filesystem cannot be grown", ErrMissingTool, tool)
	}
	return &ToolError{Tool: tool, Args: args, Code: exitCode(err), Output: string(out), Err: err}
}

// exitCode is 0 for success, the exit status of a command that ran, or -1
// when it did not run.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) && ec.ExitCode() >= 0 {
		return ec.ExitCode()
	}
	return -1
}

// toolDirs are searched when a tool is not in PATH (u-root's PATH has
// them, a test machine's user PATH may not).
var toolDirs = []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"}

func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range toolDirs {
		if st, err := os.Stat(d + "/" + name); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return d + "/" + name, nil
		}
	}
	return "", fmt.Errorf("%w: %s", ErrMissingTool, name)
}

func execRunner(ctx context.Context, stdin, name string, args ...string) ([]byte, error) {
	path, err := lookTool(name)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	return out.Bytes(), err
}

// sizes returns the size of dev and of the filesystem on it.
func sizes(dev string, kind Kind) (devSize, fsSize int64, err error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	if devSize, err = f.Seek(0, io.SeekEnd); err != nil {
		return 0, 0, fmt.Errorf("size of %s: %w", dev, err)
	}
	if kind == Ext {
		fsSize, err = ExtSize(f)
	} else {
		fsSize, err = NTFSSize(f)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", dev, err)
	}
	return devSize, fsSize, nil
}

// ErrNotFS: the superblock or boot sector is not the expected one.
var ErrNotFS = errors.New("no such filesystem")

// ExtSize reads an ext2/3/4 superblock: blocks × block size.
func ExtSize(r io.ReaderAt) (int64, error) {
	sb := make([]byte, 1024)
	if _, err := r.ReadAt(sb, 1024); err != nil {
		return 0, fmt.Errorf("reading the ext superblock: %w", err)
	}
	if binary.LittleEndian.Uint16(sb[56:]) != 0xEF53 {
		return 0, fmt.Errorf("%w: no ext superblock", ErrNotFS)
	}
	logBlock := binary.LittleEndian.Uint32(sb[24:])
	if logBlock > 6 {
		return 0, fmt.Errorf("%w: ext block size 2^%d KiB", ErrNotFS, logBlock)
	}
	blocks := uint64(binary.LittleEndian.Uint32(sb[4:]))
	if binary.LittleEndian.Uint32(sb[0x60:])&0x80 != 0 { // INCOMPAT_64BIT
		blocks |= uint64(binary.LittleEndian.Uint32(sb[0x150:])) << 32
	}
	size := blocks << (10 + logBlock)
	if blocks >= 1<<48 || size > 1<<62 {
		return 0, fmt.Errorf("%w: ext block count %d", ErrNotFS, blocks)
	}
	return int64(size), nil
}

// NTFSSize reads an NTFS boot sector: the volume's sectors × sector size
// (the backup boot sector lies just after it).
func NTFSSize(r io.ReaderAt) (int64, error) {
	bs := make([]byte, 512)
	if _, err := r.ReadAt(bs, 0); err != nil {
		return 0, fmt.Errorf("reading the NTFS boot sector: %w", err)
	}
	if string(bs[3:11]) != "NTFS    " {
		return 0, fmt.Errorf("%w: no NTFS boot sector", ErrNotFS)
	}
	bps := int64(binary.LittleEndian.Uint16(bs[11:]))
	sectors := binary.LittleEndian.Uint64(bs[40:])
	if bps < 256 || bps > 4096 || bps&(bps-1) != 0 || sectors >= 1<<48 {
		return 0, fmt.Errorf("%w: NTFS geometry %d × %d", ErrNotFS, sectors, bps)
	}
	return int64(sectors) * bps, nil
}
