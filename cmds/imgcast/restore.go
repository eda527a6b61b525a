package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/imgcast/imgcast/internal/bytesize"
	"github.com/imgcast/imgcast/pkg/manifest"
	"github.com/imgcast/imgcast/pkg/restore"
	"github.com/imgcast/imgcast/pkg/restore/decompress"
)

// runRestorePartition: imgcast restore-partition [flags] SOURCE TARGET
func runRestorePartition(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("restore-partition", flag.ContinueOnError)
	fl.SetOutput(stderr)
	ignore := fl.Bool("ignore-checksums", false, "do not verify partclone data checksums (header and bitmap CRCs are still checked)")
	raw := fl.Bool("raw", false, "write a stream that is not a partclone image as it is")
	sum := fl.String("sha256", "", "fail unless the SHA-256 of SOURCE as read (compressed) is this")
	format := fl.String("format", "", "compression of SOURCE instead of sniffing it: gzip, zstd, xz, lz4, bzip2 or none")
	quiet := fl.Bool("q", false, "no progress output")
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: imgcast restore-partition [flags] SOURCE TARGET")
		fmt.Fprintln(stderr, "  SOURCE: a partclone image (gzip, zstd, xz, lz4, bzip2 or uncompressed), or - for standard input")
		fmt.Fprintln(stderr, "  TARGET: a partition device, or a file (created with the image's device size if missing)")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() != 2 {
		fl.Usage()
		return errors.New("restore-partition: need SOURCE and TARGET")
	}
	src, target := fl.Arg(0), fl.Arg(1)

	opts := restore.Options{IgnoreChecksums: *ignore, AllowRaw: *raw, Logf: logTo(stderr), Compression: decompress.Kind(*format)}
	switch opts.Compression {
	case decompress.Auto, decompress.None, decompress.Gzip, decompress.Zstd, decompress.Xz, decompress.Lz4, decompress.Bzip2:
	default:
		return fmt.Errorf("-format %q: want gzip, zstd, xz, lz4, bzip2 or none", *format)
	}
	var in io.Reader = stdin
	if src != "-" {
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			opts.InputSize = st.Size()
		}
	}
	if *sum != "" {
		d, err := hex.DecodeString(*sum)
		if err != nil || len(d) != 32 {
			return fmt.Errorf("-sha256 %q is not 64 hex digits", *sum)
		}
		opts.Verify = []restore.Segment{{Name: src, Size: -1, SHA256: d}}
	}
	if !*quiet {
		opts.Progress = progressPrinter(stderr)
	}
	t, err := restore.OpenTarget(target)
	if err != nil {
		return err
	}
	defer t.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := restore.RestorePartition(ctx, in, t, opts)
	if err != nil {
		return fmt.Errorf("restoring %s to %s: %w", src, target, err)
	}
	describe(stdout, src, target, res)
	return nil
}

func describe(w io.Writer, src, target string, res *restore.Result) {
	what := "raw stream"
	if res.Header != nil {
		what = res.Header.String()
	}
	fmt.Fprintf(w, "%s → %s: %s, %s compression; %s written in %v (%s/s)\n", src, target, what, res.Compression,
		bytesize.Format(res.Written), res.Elapsed.Round(time.Millisecond), bytesize.Format(int64(float64(res.Written)/max(res.Elapsed.Seconds(), 1e-3))))
}

// runRestoreDisk: imgcast restore-disk [flags] IMAGEDIR|URL TARGET
func runRestoreDisk(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("restore-disk", flag.ContinueOnError)
	fl.SetOutput(stderr)
	ignore := fl.Bool("ignore-checksums", false, "do not verify partclone data checksums")
	disk := fl.Int("disk", 1, "which disk of the image folder (the N of dN.partitions)")
	sectorSize := fl.Int64("sector-size", 0, "logical sector size of an image-file TARGET (default 512)")
	quiet := fl.Bool("q", false, "no progress output")
	pubkey := fl.String("pubkey", "", "require dN.manifest signed by this key (NAME.pub) and verify every chunk before it is used")
	imageID := fl.String("image-id", "", "with -pubkey: the image id the manifest must name (default: the folder's name)")
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: imgcast restore-disk [flags] IMAGEDIR|URL TARGET")
		fmt.Fprintln(stderr, "  IMAGEDIR|URL: a FOG image folder (dN.partitions, dN.mbr, dNpM.img…), local or http(s)")
		fmt.Fprintln(stderr, "  TARGET: a whole-disk device, or an existing disk image file")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() != 2 {
		fl.Usage()
		return errors.New("restore-disk: need IMAGEDIR|URL and TARGET")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var lo restore.LoadOptions
	if *pubkey != "" {
		var err error
		if lo.PublicKey, err = manifest.LoadPublicKey(*pubkey); err != nil {
			return err
		}
		lo.ImageID = *imageID
	}
	di, err := restore.OpenImage(ctx, fl.Arg(0), *disk, lo)
	if err != nil {
		return err
	}
	folder := di.Folder
	if di.Manifest != nil {
		fmt.Fprintf(stdout, "%s: signed manifest of image %q verified; every chunk is checked before it is used\n", folder, di.Manifest.ImageID)
	}
	f, g, err := restore.OpenDisk(fl.Arg(1), *sectorSize)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(stdout, "%s: %s table, %d partitions; %s: %s, %d-byte sectors\n", folder, di.Dump.Label,
		len(di.Dump.Partitions), f.Name(), bytesize.Format(g.Size), g.LogicalSectorSize)
	opts := restore.DiskOptions{IgnoreChecksums: *ignore, Logf: logTo(stderr)}
	if !*quiet {
		opts.Progress = progressPrinter(stderr)
	}
	start := time.Now()
	if err := restore.RestoreDisk(ctx, di, f, g, opts); err != nil {
		return fmt.Errorf("restoring %s to %s: %w", folder, f.Name(), err)
	}
	fmt.Fprintf(stdout, "restored %s to %s in %v\n", folder, f.Name(), time.Since(start).Round(time.Millisecond))
	return nil
}

func logTo(w io.Writer) func(string, ...any) {
	return func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
}

// progressPrinter prints one line per report: on a terminal it rewrites
// the line, elsewhere (logs, serial consoles) it appends.
func progressPrinter(w io.Writer) func(restore.Progress) {
	eol := "\n"
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			eol = "\x1b[K\r"
		}
	}
	return func(p restore.Progress) {
		name := "image"
		if p.Partition > 0 {
			name = fmt.Sprintf("partition %d", p.Partition)
		}
		pct := "?"
		if v := p.Percent(); v >= 0 {
			pct = fmt.Sprintf("%.1f%%", v)
		}
		eta := ""
		if p.ETA > 0 {
			eta = ", ETA " + p.ETA.Round(time.Second).String()
		}
		end := eol
		if p.Phase == "done" {
			end = "\n"
		}
		fmt.Fprintf(w, "%s: %s %s, %s written at %.1f MB/s, %s read%s%s", name, p.Phase, pct,
			bytesize.Format(p.Written), p.Rate/1e6, bytesize.Format(p.In), eta, end)
	}
}
