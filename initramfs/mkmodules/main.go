// mkmodules stages the kernel modules the imgcast client needs into a cpio
// archive, to be appended to the initramfs, and the firmware they ask for
// into another.
//
// Synopsis:
//
//	mkmodules -kver KVER -list FILE [-root /lib/modules] [-compress xz|zstd|none]
//	          [-firmware /lib/firmware] [-firmware-out FIRMWARE.cpio] -o OUT.cpio
//
// Description:
//
//	Every module named in the list (one per line; '#' comments; a trailing
//	'?' marks a module that may be missing from this kernel) is staged with
//	its dependencies from modules.dep and its soft "pre" dependencies from
//	modules.softdep, under lib/modules/KVER/ with the kernel's own layout.
//	The archive gets filtered modules.dep, modules.alias and modules.softdep
//	that name only the staged modules, plus modules.builtin, so the
//	client's coldplug matches device aliases against exactly what it has.
//
//	Modules are stored compressed with xz -9e by default (.ko.xz, by the
//	xz command; 10% smaller than zstd -19, which -compress zstd gives):
//	the initramfs stays in RAM for the whole job, and the client
//	decompresses only the few modules it loads. Already compressed
//	modules are recompressed the same way, so the client handles one
//	format. Each file's xz dictionary is no larger than the file, so a
//	decoder allocates no more than that (-9e alone would ask for 64 MiB).
//
//	The firmware files the staged modules name (modinfo -F firmware) are
//	looked up in -firmware (plain, .xz or .zst) and, with -firmware-out,
//	written to their own archive, xz-compressed (CRC32, as the kernel's
//	firmware loader reads them), so an image can be built with or without
//	firmware. Every module's firmware is listed as shipped or missing,
//	with the Debian package that holds what is missing.
//
// Options:
//
//	-kver          kernel version (directory under -root); required
//	-list          file naming the wanted modules; required
//	-root          module trees (default /lib/modules)
//	-compress      xz, zstd or none (default xz)
//	-firmware      firmware directory (default /lib/firmware)
//	-firmware-out  firmware archive (uncompressed newc of .xz files); none if empty
//	-o             output cpio archive (uncompressed newc); required
package main

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/imgcast/imgcast/pkg/kmod"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		log.Fatalf("mkmodules: %v", err)
	}
}

type options struct {
	kver, list, root, firmware, firmwareOut, compress, out string
}

func run(args []string, stdout io.Writer) error {
	var o options
	fs := flag.NewFlagSet("mkmodules", flag.ContinueOnError)
	fs.StringVar(&o.kver, "kver", "", "kernel version")
	fs.StringVar(&o.list, "list", "", "file naming the wanted modules")
	fs.StringVar(&o.root, "root", "/lib/modules", "module trees")
	fs.StringVar(&o.firmware, "firmware", "/lib/firmware", "firmware directory")
	fs.StringVar(&o.firmwareOut, "firmware-out", "", "firmware archive (none if empty)")
	fs.StringVar(&o.compress, "compress", "xz", "module compression: xz, zstd or none")
	fs.StringVar(&o.out, "o", "", "output cpio archive")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.kver == "" || o.list == "" || o.out == "" || fs.NArg() > 0 {
		return errors.New("usage: mkmodules -kver KVER -list FILE -o OUT.cpio [-root DIR] [-compress xz|zstd|none] [-firmware DIR] [-firmware-out FILE]")
	}
	if _, ok := moduleCompressors[o.compress]; !ok && o.compress != "none" {
		return fmt.Errorf("-compress %q: want xz, zstd or none", o.compress)
	}
	wanted, err := readList(o.list)
	if err != nil {
		return err
	}
	st, err := stage(o, wanted)
	if err != nil {
		return err
	}
	if err := writeArchive(o.out, st.records); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "mkmodules: %d modules (%d named, the rest dependencies) for %s, %.1f MB of modules -> %s\n",
		len(st.modules), len(wanted), o.kver, float64(st.moduleBytes)/1e6, o.out)
	for _, m := range st.skipped {
		fmt.Fprintf(stdout, "mkmodules: optional module %s is not in this kernel; skipped\n", m)
	}
	fw, err := stageFirmware(o.firmware, st.firmware)
	if err != nil {
		return err
	}
	if o.firmwareOut != "" {
		if err := writeArchive(o.firmwareOut, fw.records); err != nil {
			return err
		}
	}
	fw.report(stdout, o)
	return nil
}

// writeArchive writes records as an uncompressed newc cpio archive.
func writeArchive(file string, records []cpio.Record) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	w := cpio.Newc.Writer(f)
	if err := cpio.WriteRecordsAndDirs(w, records); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", file, err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", file, err)
	}
	return f.Close()
}

// wantedModule is one line of the list.
type wantedModule struct {
	name     string
	optional bool
}

func readList(file string) ([]wantedModule, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []wantedModule
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		for _, w := range strings.Fields(line) {
			optional := strings.HasSuffix(w, "?")
			out = append(out, wantedModule{kmod.Name(strings.TrimSuffix(w, "?")), optional})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s names no modules", file)
	}
	return out, nil
}

type staged struct {
	records     []cpio.Record
	modules     []string
	moduleBytes int64
	// firmware maps each firmware file the staged modules name to the
	// modules that name it.
	firmware map[string][]string
	skipped  []string
}

func stage(o options, wanted []wantedModule) (*staged, error) {
	dir := filepath.Join(o.root, o.kver)
	ix, err := kmod.ReadIndex(dir)
	if err != nil {
		return nil, err
	}
	st := &staged{firmware: map[string][]string{}}
	set := map[string]bool{}
	var missing []string
	for _, w := range wanted {
		order, err := ix.LoadOrder(w.name)
		var nf *kmod.NotFoundError
		switch {
		case errors.As(err, &nf) && w.optional && nf.Name == w.name:
			st.skipped = append(st.skipped, w.name)
			continue
		case errors.As(err, &nf):
			missing = append(missing, nf.Name)
			continue
		case err != nil:
			return nil, err
		}
		for _, m := range order {
			set[m] = true
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("modules not in %s: %s (mark a module optional with a trailing '?')", dir, strings.Join(missing, " "))
	}
	for m := range set {
		st.modules = append(st.modules, m)
	}
	sort.Strings(st.modules)

	base := path.Join("lib/modules", o.kver)
	newPath := map[string]string{} // module name -> staged path relative to base
	data := make([][]byte, len(st.modules))
	for i, m := range st.modules {
		b, err := readModule(filepath.Join(dir, ix.Path(m)))
		if err != nil {
			return nil, err
		}
		for _, fw := range firmwareOf(b) {
			st.firmware[fw] = append(st.firmware[fw], m)
		}
		data[i] = b
		newPath[m] = stripCompression(ix.Path(m))
	}
	if c, ok := moduleCompressors[o.compress]; ok {
		if err := compressAll(data, c.compress); err != nil {
			return nil, err
		}
		for m := range newPath {
			newPath[m] += c.ext
		}
	}
	for i, m := range st.modules {
		st.moduleBytes += int64(len(data[i]))
		st.records = append(st.records, cpio.StaticFile(path.Join(base, newPath[m]), string(data[i]), 0o644))
	}

	files, err := indexFiles(dir, ix, set, newPath)
	if err != nil {
		return nil, err
	}
	for name, content := range files {
		st.records = append(st.records, cpio.StaticFile(path.Join(base, name), content, 0o644))
	}
	sort.Slice(st.records, func(i, j int) bool { return st.records[i].Name < st.records[j].Name })
	return st, nil
}

// readModule returns a module file's contents, decompressed.
func readModule(file string) ([]byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if filepath.Ext(file) == ".ko" {
		return data, nil
	}
	out, err := kmod.Decompress(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return out, nil
}

func stripCompression(p string) string {
	for _, ext := range []string{".gz", ".xz", ".zst"} {
		p = strings.TrimSuffix(p, ext)
	}
	return p
}

// zstd19 compresses like `zstd -19` (better than any level of the Go
// encoder, which matters for an image that must fit in a few MB). The
// frame records the content size, which also bounds the window to it: a
// decoder then needs no more memory than the module's size (without it,
// -19 asks for an 8 MiB window per decoder).
func zstd19(data []byte) ([]byte, error) {
	return filter(data, "zstd", "-19", "-q", "-c", fmt.Sprintf("--stream-size=%d", len(data)), "-")
}

// moduleCompressors are the -compress choices other than none.
var moduleCompressors = map[string]struct {
	compress func([]byte) ([]byte, error)
	ext      string
}{
	"xz":   {xzKernel, ".xz"},
	"zstd": {zstd19, ".zst"},
}

// xzKernel compresses like xz -9e so that the kernel can decompress: CRC32
// checks (the kernel's xz decoder does not do CRC64), and a dictionary no
// larger than the data. The header names the dictionary size and streaming
// decoders allocate that much (the client's module loader and the kernel's
// firmware loader both stream); -9e alone names 64 MiB, and a dictionary
// larger than the data compresses no better.
func xzKernel(data []byte) ([]byte, error) {
	dict := max(len(data), xzMinDict)
	return filter(data, "xz", "--check=crc32", fmt.Sprintf("--lzma2=preset=9e,dict=%d", dict), "-T1", "-q", "-c", "-")
}

// xzMinDict is the smallest dictionary xz accepts.
const xzMinDict = 4096

// filter runs a command with data on its stdin and returns its stdout.
func filter(data []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(data)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %v: %s", name, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// compressAll replaces every element of data by its compressed form, as many
// at a time as there are CPUs.
func compressAll(data [][]byte, compress func([]byte) ([]byte, error)) error {
	errs := make([]error, len(data))
	sem := make(chan struct{}, runtime.NumCPU())
	var wg sync.WaitGroup
	for i := range data {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			data[i], errs[i] = compress(data[i])
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// firmwareOf lists the firmware files a module declares (modinfo -F
// firmware). Files that are not ELF modules yield nothing.
func firmwareOf(module []byte) []string {
	f, err := elf.NewFile(bytes.NewReader(module))
	if err != nil {
		return nil
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil
	}
	data, err := sec.Data()
	if err != nil {
		return nil
	}
	var out []string
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("firmware=")); ok && len(v) > 0 {
			out = append(out, string(v))
		}
	}
	return out
}

// indexFiles writes modules.dep, modules.alias and modules.softdep that
// name only the staged modules (under their staged paths), and copies
// modules.builtin.
func indexFiles(dir string, ix *kmod.Index, set map[string]bool, newPath map[string]string) (map[string]string, error) {
	out := map[string]string{}

	var dep strings.Builder
	if err := eachLine(filepath.Join(dir, "modules.dep"), func(line string) {
		file, rest, _ := strings.Cut(line, ":")
		name := kmod.Name(file)
		if !set[name] {
			return
		}
		dep.WriteString(newPath[name] + ":")
		for _, d := range strings.Fields(rest) {
			dep.WriteString(" " + newPath[kmod.Name(d)])
		}
		dep.WriteString("\n")
	}); err != nil {
		return nil, err
	}
	out["modules.dep"] = dep.String()

	for _, file := range []string{"modules.alias", "modules.softdep"} {
		var b strings.Builder
		err := eachLine(filepath.Join(dir, file), func(line string) {
			f := strings.Fields(line)
			if len(f) < 3 {
				return
			}
			name := f[len(f)-1] // alias PATTERN MODULE
			if f[0] == "softdep" {
				name = f[1] // softdep MODULE pre: ...
			}
			if set[kmod.Name(name)] {
				b.WriteString(line + "\n")
			}
		})
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		out[file] = b.String()
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		out["modules.builtin"] = string(b)
	}
	return out, nil
}

func eachLine(file string, fn func(string)) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			fn(line)
		}
	}
	return sc.Err()
}
