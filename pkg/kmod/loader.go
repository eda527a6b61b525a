package kmod

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/shlex"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"
)

// Loader loads kernel modules with their dependencies, each module at most
// once however many devices or goroutines ask for it. It is safe for
// concurrent use.
type Loader struct {
	Index *Index
	// Params holds module parameters by module name ("debug=1 foo=bar"),
	// usually from "module.param=value" words on the kernel command line.
	Params map[string]string
	// Blacklist names modules never to load (modprobe.blacklist=).
	Blacklist map[string]bool

	// load loads one module file; tests replace it.
	load func(path, params string) error

	mu    sync.Mutex
	state map[string]*loadState
}

type loadState struct {
	done     chan struct{}
	err      error
	took     time.Duration
	optional bool
}

// Result records one module load attempt.
type Result struct {
	Name string
	Err  error
	Took time.Duration
}

// NewLoader returns a loader for the modules of ix.
func NewLoader(ix *Index) *Loader {
	return &Loader{Index: ix, load: loadModuleFile, state: map[string]*loadState{}}
}

// ErrBlacklisted is returned for modules the blacklist names.
var ErrBlacklisted = errors.New("blacklisted on the kernel command line")

// Load loads the named module after its dependencies. Loading a module the
// kernel already has is not an error.
func (l *Loader) Load(name string) error {
	name = Name(name)
	if l.Blacklist[name] {
		return fmt.Errorf("module %s: %w", name, ErrBlacklisted)
	}
	steps, err := l.Index.loadSteps(name)
	if err != nil {
		return err
	}
	for _, s := range steps {
		err := l.loadOnce(s)
		if err != nil && !s.optional {
			if s.name != name {
				return fmt.Errorf("module %s: dependency %w", name, err)
			}
			return err
		}
	}
	return nil
}

func (l *Loader) loadOnce(s loadStep) error {
	l.mu.Lock()
	st, seen := l.state[s.name]
	if !seen {
		st = &loadState{done: make(chan struct{}), optional: s.optional}
		l.state[s.name] = st
	}
	l.mu.Unlock()
	if seen {
		<-st.done
		return st.err
	}
	start := time.Now()
	if l.Blacklist[s.name] {
		st.err = fmt.Errorf("module %s: %w", s.name, ErrBlacklisted)
	} else if err := l.load(filepath.Join(l.Index.Dir, l.Index.Path(s.name)), l.Params[s.name]); err != nil {
		st.err = fmt.Errorf("module %s: %w", s.name, err)
	}
	st.took = time.Since(start)
	close(st.done)
	return st.err
}

// Results lists every module load attempted so far (finished ones only),
// sorted by name. Failed optional (soft) dependencies are left out.
func (l *Loader) Results() []Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Result
	for name, st := range l.state {
		select {
		case <-st.done:
		default:
			continue
		}
		if st.err != nil && st.optional {
			continue
		}
		out = append(out, Result{Name: name, Err: st.err, Took: st.took})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// moduleInitCompressedFile is finit_module's MODULE_INIT_COMPRESSED_FILE
// flag: the kernel decompresses the file itself (CONFIG_MODULE_DECOMPRESS).
const moduleInitCompressedFile = 4

// loadModuleFile loads one .ko, .ko.gz, .ko.xz or .ko.zst file.
func loadModuleFile(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var magic [6]byte
	n, _ := io.ReadFull(f, magic[:])
	kind := compressionOf(magic[:n])
	if kind == "" {
		err = unix.FinitModule(int(f.Fd()), params, 0)
	} else {
		err = unix.FinitModule(int(f.Fd()), params, moduleInitCompressedFile)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
			// This kernel cannot decompress modules: do it here.
			if _, err = f.Seek(0, io.SeekStart); err != nil {
				return err
			}
			var image []byte
			image, err = decompress(f, kind)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			err = unix.InitModule(image, params)
		}
	}
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	if err != nil {
		return explainLoadError(path, err)
	}
	return nil
}

func explainLoadError(path string, err error) error {
	hint := ""
	switch {
	case errors.Is(err, unix.ENOEXEC):
		hint = " (built for a different kernel? the modules must come from the same kernel package as vmlinuz)"
	case errors.Is(err, unix.EKEYREJECTED), errors.Is(err, unix.EBADMSG):
		hint = " (signature rejected: Secure Boot lockdown needs the distribution's signed, unstripped modules)"
	case errors.Is(err, unix.EPERM):
		hint = " (refused by the kernel: module_blacklist= on the command line, or module loading disabled)"
	case errors.Is(err, unix.ENODEV):
		hint = " (the module found no hardware it supports)"
	}
	return fmt.Errorf("%s: %w%s", filepath.Base(path), err, hint)
}

// compressionOf names the compression a file starts with ("" for none).
func compressionOf(magic []byte) string {
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		return "gzip"
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return "xz"
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return "zstd"
	}
	return ""
}

// Decompress returns the contents of a gzip, xz or zstd compressed
// module file.
func Decompress(r io.Reader) ([]byte, error) {
	br := bufio.NewReader(r)
	magic, _ := br.Peek(6)
	kind := compressionOf(magic)
	if kind == "" {
		return nil, errors.New("not a gzip, xz or zstd file")
	}
	return decompress(br, kind)
}

// maxModuleSize bounds a decompressed module (the largest Debian modules
// are ~10 MiB) so a corrupt file cannot eat the machine's memory.
const maxModuleSize = 64 << 20

// decompress returns the whole decompressed contents of r.
func decompress(r io.Reader, kind string) ([]byte, error) {
	var dr io.Reader
	switch kind {
	case "gzip":
		z, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		defer z.Close()
		dr = z
	case "xz":
		z, err := xz.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		dr = z
	case "zstd":
		z, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxModuleSize))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		defer z.Close()
		dr = z
	default:
		return nil, fmt.Errorf("unknown compression %q", kind)
	}
	out, err := io.ReadAll(io.LimitReader(dr, maxModuleSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", kind, err)
	}
	if len(out) > maxModuleSize {
		return nil, fmt.Errorf("%s: decompressed module larger than %d MiB", kind, maxModuleSize>>20)
	}
	return out, nil
}

// OptionsFromCmdline extracts "module.param=value" words from a kernel
// command line, as modprobe does: parameters by module name, and the
// modules named by modprobe.blacklist=a,b.
func OptionsFromCmdline(cmdline string) (params map[string]string, blacklist map[string]bool) {
	params, blacklist = map[string]string{}, map[string]bool{}
	for _, w := range shlex.Argv(cmdline) {
		key, val, hasVal := strings.Cut(w, "=")
		mod, param, ok := strings.Cut(key, ".")
		if !ok || mod == "" || param == "" {
			continue
		}
		mod = Name(mod)
		if mod == "modprobe" && param == "blacklist" {
			for _, b := range strings.Split(val, ",") {
				if b != "" {
					blacklist[Name(b)] = true
				}
			}
			continue
		}
		opt := param
		if hasVal {
			opt += "=" + val
		}
		if params[mod] != "" {
			params[mod] += " "
		}
		params[mod] += opt
	}
	return params, blacklist
}
