// mkmodules stages the kernel modules the imgcast client needs into a cpio
// archive, to be appended to the initramfs.
//
// Synopsis:
//
//	mkmodules -kver KVER -list FILE [-root /lib/modules] [-firmware /lib/firmware] [-compress zstd|none] -o OUT.cpio
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
//	Firmware files the staged modules ask for are copied from -firmware
//	when present; missing ones are listed.
//
//	Modules are stored compressed with zstd by default (.ko.zst): the
//	initramfs stays in RAM for the whole job, and the client decompresses
//	only the few modules it loads. Already compressed modules are
//	recompressed the same way, so the client handles one format fast.
//
// Options:
//
//	-kver      kernel version (directory under -root); required
//	-list      file naming the wanted modules; required
//	-root      module trees (default /lib/modules)
//	-firmware  firmware directory (default /lib/firmware)
//	-compress  zstd or none (default zstd)
//	-o         output cpio archive (uncompressed newc); required
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
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"

	"github.com/imgcast/imgcast/pkg/kmod"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		log.Fatalf("mkmodules: %v", err)
	}
}

type options struct {
	kver, list, root, firmware, compress, out string
}

func run(args []string, stdout io.Writer) error {
	var o options
	fs := flag.NewFlagSet("mkmodules", flag.ContinueOnError)
	fs.StringVar(&o.kver, "kver", "", "kernel version")
	fs.StringVar(&o.list, "list", "", "file naming the wanted modules")
	fs.StringVar(&o.root, "root", "/lib/modules", "module trees")
	fs.StringVar(&o.firmware, "firmware", "/lib/firmware", "firmware directory")
	fs.StringVar(&o.compress, "compress", "zstd", "module compression: zstd or none")
	fs.StringVar(&o.out, "o", "", "output cpio archive")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.kver == "" || o.list == "" || o.out == "" || fs.NArg() > 0 {
		return errors.New("usage: mkmodules -kver KVER -list FILE -o OUT.cpio [-root DIR] [-firmware DIR] [-compress zstd|none]")
	}
	if o.compress != "zstd" && o.compress != "none" {
		return fmt.Errorf("-compress %q: want zstd or none", o.compress)
	}
	wanted, err := readList(o.list)
	if err != nil {
		return err
	}
	st, err := stage(o, wanted)
	if err != nil {
		return err
	}
	f, err := os.Create(o.out)
	if err != nil {
		return err
	}
	w := cpio.Newc.Writer(f)
	if err := cpio.WriteRecordsAndDirs(w, st.records); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", o.out, err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", o.out, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "mkmodules: %d modules (%d named, the rest dependencies) for %s, %.1f MB of modules, %d firmware files -> %s\n",
		len(st.modules), len(wanted), o.kver, float64(st.moduleBytes)/1e6, st.firmware, o.out)
	for _, m := range st.skipped {
		fmt.Fprintf(stdout, "mkmodules: optional module %s is not in this kernel; skipped\n", m)
	}
	if len(st.missingFirmware) > 0 {
		fmt.Fprintf(stdout, "mkmodules: %d firmware files not found in %s, for %s (install Debian's firmware-* packages to ship them)\n",
			len(st.missingFirmware), o.firmware, firmwareDirs(st.missingFirmware))
	}
	return nil
}

// firmwareDirs summarizes firmware paths by directory: "bnx2 (5), tigon (4)".
func firmwareDirs(files []string) string {
	count := map[string]int{}
	var dirs []string
	for _, f := range files {
		d := path.Dir(f)
		if count[d] == 0 {
			dirs = append(dirs, d)
		}
		count[d]++
	}
	sort.Strings(dirs)
	for i, d := range dirs {
		dirs[i] = fmt.Sprintf("%s (%d)", d, count[d])
	}
	return strings.Join(dirs, ", ")
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
	records         []cpio.Record
	modules         []string
	moduleBytes     int64
	firmware        int
	missingFirmware []string
	skipped         []string
}

func stage(o options, wanted []wantedModule) (*staged, error) {
	dir := filepath.Join(o.root, o.kver)
	ix, err := kmod.ReadIndex(dir)
	if err != nil {
		return nil, err
	}
	st := &staged{}
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
	fwSeen := map[string]bool{}
	for _, m := range st.modules {
		src := filepath.Join(dir, ix.Path(m))
		data, err := readModule(src)
		if err != nil {
			return nil, err
		}
		for _, fw := range firmwareOf(data) {
			fwSeen[fw] = true
		}
		rel := stripCompression(ix.Path(m))
		if o.compress == "zstd" {
			data = compressZstd(data)
			rel += ".zst"
		}
		newPath[m] = rel
		st.moduleBytes += int64(len(data))
		st.records = append(st.records, cpio.StaticFile(path.Join(base, rel), string(data), 0o644))
	}

	files, err := indexFiles(dir, ix, set, newPath)
	if err != nil {
		return nil, err
	}
	for name, content := range files {
		st.records = append(st.records, cpio.StaticFile(path.Join(base, name), content, 0o644))
	}

	fws := make([]string, 0, len(fwSeen))
	for fw := range fwSeen {
		fws = append(fws, fw)
	}
	sort.Strings(fws)
	for _, fw := range fws {
		found := false
		for _, ext := range []string{"", ".xz", ".zst"} {
			data, err := os.ReadFile(filepath.Join(o.firmware, fw+ext))
			if err == nil {
				st.records = append(st.records, cpio.StaticFile(path.Join("lib/firmware", fw+ext), string(data), 0o644))
				st.firmware++
				found = true
				break
			}
		}
		if !found {
			st.missingFirmware = append(st.missingFirmware, fw)
		}
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

func compressZstd(data []byte) []byte {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithEncoderCRC(true))
	if err != nil {
		panic(err) // only for invalid options
	}
	defer enc.Close()
	return enc.EncodeAll(data, nil)
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
