package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/imgcast/imgcast/pkg/netup"
	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
)

// firmwareSet is the firmware the staged modules ask for: what was found
// (as archive records) and what was not.
type firmwareSet struct {
	records []cpio.Record
	// byModule maps a module to the firmware files it names.
	byModule map[string][]string
	shipped  map[string]bool
	bytes    int64 // compressed size of what is shipped
}

// stageFirmware looks up each firmware file in dir, as it is or compressed
// (.xz, .zst), and stores it xz-compressed under lib/firmware/FILE.xz, the
// form the kernel's firmware loader reads when CONFIG_FW_LOADER_COMPRESS_XZ
// is set (Debian's kernels). wanted maps firmware files to the modules
// that name them.
func stageFirmware(dir string, wanted map[string][]string) (*firmwareSet, error) {
	fs := &firmwareSet{byModule: map[string][]string{}, shipped: map[string]bool{}}
	names := make([]string, 0, len(wanted))
	for fw, mods := range wanted {
		names = append(names, fw)
		for _, m := range mods {
			fs.byModule[m] = append(fs.byModule[m], fw)
		}
	}
	sort.Strings(names)
	for _, fws := range fs.byModule {
		sort.Strings(fws)
	}
	var found []string
	var data [][]byte
	var compressed []bool
	for _, fw := range names {
		b, isXZ, err := readFirmware(filepath.Join(dir, fw))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		found = append(found, fw)
		data = append(data, b)
		compressed = append(compressed, isXZ)
	}
	var plain [][]byte
	var plainIdx []int
	for i := range data {
		if !compressed[i] {
			plain = append(plain, data[i])
			plainIdx = append(plainIdx, i)
		}
	}
	if err := compressAll(plain, xzKernel); err != nil {
		return nil, err
	}
	for j, i := range plainIdx {
		data[i] = plain[j]
	}
	for i, fw := range found {
		fs.shipped[fw] = true
		fs.bytes += int64(len(data[i]))
		fs.records = append(fs.records, cpio.StaticFile(path.Join("lib/firmware", fw+".xz"), string(data[i]), 0o644))
	}
	return fs, nil
}

// readFirmware reads a firmware file from where Debian installs it: plain,
// or compressed as FILE.xz (returned as it is) or FILE.zst (decompressed:
// the kernel's loader reads only xz).
func readFirmware(file string) (data []byte, isXZ bool, err error) {
	if b, err := os.ReadFile(file); err == nil || !errors.Is(err, os.ErrNotExist) {
		return b, false, err
	}
	if b, err := os.ReadFile(file + ".xz"); err == nil || !errors.Is(err, os.ErrNotExist) {
		return b, true, err
	}
	f, err := os.Open(file + ".zst")
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	d, err := zstd.NewReader(f)
	if err != nil {
		return nil, false, fmt.Errorf("%s.zst: %w", file, err)
	}
	defer d.Close()
	b, err := io.ReadAll(d)
	if err != nil {
		return nil, false, fmt.Errorf("%s.zst: %w", file, err)
	}
	return b, false, nil
}

// report prints, module by module, the firmware shipped and missing, and
// for what is missing the Debian package that holds it.
func (fs *firmwareSet) report(w io.Writer, o options) {
	if len(fs.byModule) == 0 {
		fmt.Fprintf(w, "mkmodules: no staged module asks for firmware\n")
		return
	}
	mods := make([]string, 0, len(fs.byModule))
	for m := range fs.byModule {
		mods = append(mods, m)
	}
	sort.Strings(mods)
	if o.firmwareOut == "" {
		fmt.Fprintf(w, "mkmodules: firmware NOT shipped (no -firmware-out): %s ask for %d files, %d of them in %s\n",
			strings.Join(mods, ", "), len(fs.shippedOrMissing(true))+len(fs.shippedOrMissing(false)), len(fs.records), o.firmware)
		return
	}
	fmt.Fprintf(w, "mkmodules: firmware: %d files shipped (%.1f MB xz), %d missing -> %s\n",
		len(fs.records), float64(fs.bytes)/1e6, len(fs.shippedOrMissing(false)), o.firmwareOut)
	for _, m := range mods {
		var shipped, missing []string
		for _, fw := range fs.byModule[m] {
			if fs.shipped[fw] {
				shipped = append(shipped, fw)
			} else {
				missing = append(missing, fw)
			}
		}
		if len(shipped) > 0 {
			fmt.Fprintf(w, "mkmodules:   %s: shipped %s\n", m, strings.Join(shipped, " "))
		}
		if len(missing) > 0 {
			fmt.Fprintf(w, "mkmodules:   %s: MISSING %s (Debian package %s; scripts/deps.sh installs it)\n",
				m, strings.Join(missing, " "), netup.FirmwarePackage(missing[0]))
		}
	}
}

// shippedOrMissing lists the distinct firmware files found (true) or not.
func (fs *firmwareSet) shippedOrMissing(found bool) []string {
	seen := map[string]bool{}
	var out []string
	for _, fws := range fs.byModule {
		for _, fw := range fws {
			if !seen[fw] && fs.shipped[fw] == found {
				seen[fw] = true
				out = append(out, fw)
			}
		}
	}
	sort.Strings(out)
	return out
}
