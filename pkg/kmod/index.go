package kmod

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Index is the part of a kernel's module tree (/lib/modules/<kver>)
// that module loading needs: where each module is, what it depends on, which
// device aliases it serves, and which modules are built into the kernel.
type Index struct {
	// Dir is the module tree, e.g. /lib/modules/6.1.0-56-amd64.
	Dir string

	paths   map[string]string   // name -> path relative to Dir
	deps    map[string][]string // name -> dependency names, as modules.dep lists them
	softPre map[string][]string // name -> modules to load before it, if present
	builtin map[string]bool
	aliases map[string][]alias // bus prefix ("pci", "virtio", ...) -> aliases
}

type alias struct {
	pattern string
	module  string
}

// Name turns a module file path or name into the kernel's name for it:
// the base name without .ko and compression suffix, with '-' as '_'.
func Name(p string) string {
	name := path.Base(filepath.ToSlash(p))
	for _, ext := range []string{".gz", ".xz", ".zst"} {
		name = strings.TrimSuffix(name, ext)
	}
	name = strings.TrimSuffix(name, ".ko")
	return strings.ReplaceAll(name, "-", "_")
}

// ReadIndex reads modules.dep (required), modules.alias,
// modules.softdep and modules.builtin (optional) from dir.
func ReadIndex(dir string) (*Index, error) {
	files := []string{"modules.dep", "modules.alias", "modules.softdep", "modules.builtin"}
	readers := make([]io.Reader, len(files))
	for i, name := range files {
		f, err := os.Open(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) && i > 0 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("module index: %w", err)
		}
		defer f.Close()
		readers[i] = f
	}
	ix, err := ParseIndex(dir, readers[0], readers[1], readers[2], readers[3])
	if err != nil {
		return nil, fmt.Errorf("module index %s: %w", dir, err)
	}
	return ix, nil
}

// ParseIndex builds an index from the contents of modules.dep,
// modules.alias, modules.softdep and modules.builtin; nil readers count as
// empty files.
func ParseIndex(dir string, dep, aliases, softdep, builtin io.Reader) (*Index, error) {
	ix := &Index{Dir: dir}
	for _, p := range []struct {
		file  string
		r     io.Reader
		parse func(io.Reader) error
	}{
		{"modules.dep", dep, ix.parseDep},
		{"modules.alias", aliases, ix.parseAlias},
		{"modules.softdep", softdep, ix.parseSoftdep},
		{"modules.builtin", builtin, ix.parseBuiltin},
	} {
		if p.r == nil {
			p.r = strings.NewReader("")
		}
		if err := p.parse(p.r); err != nil {
			return nil, fmt.Errorf("%s: %w", p.file, err)
		}
	}
	return ix, nil
}

func eachLine(r io.Reader, fn func(n int, line string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := fn(n, line); err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
	}
	return sc.Err()
}

// parseDep reads lines "kernel/a/b.ko: kernel/c.ko kernel/d.ko".
func (ix *Index) parseDep(r io.Reader) error {
	ix.paths = map[string]string{}
	ix.deps = map[string][]string{}
	return eachLine(r, func(_ int, line string) error {
		file, rest, ok := strings.Cut(line, ":")
		if !ok || file == "" {
			return fmt.Errorf("no ':' in %q", line)
		}
		name := Name(file)
		ix.paths[name] = file
		var deps []string
		for _, d := range strings.Fields(rest) {
			deps = append(deps, Name(d))
		}
		ix.deps[name] = deps
		return nil
	})
}

// parseAlias reads lines "alias <pattern> <module>".
func (ix *Index) parseAlias(r io.Reader) error {
	ix.aliases = map[string][]alias{}
	return eachLine(r, func(_ int, line string) error {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "alias" {
			return fmt.Errorf("not an alias line: %q", line)
		}
		bus := aliasBus(f[1])
		ix.aliases[bus] = append(ix.aliases[bus], alias{pattern: f[1], module: Name(f[2])})
		return nil
	})
}

// parseSoftdep reads lines "softdep <module> pre: a b post: c".
// Only "pre:" matters to us: those modules provide faster implementations
// that must be present before the module binds to a generic one.
func (ix *Index) parseSoftdep(r io.Reader) error {
	ix.softPre = map[string][]string{}
	return eachLine(r, func(_ int, line string) error {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "softdep" {
			return fmt.Errorf("not a softdep line: %q", line)
		}
		name := Name(f[1])
		section := ""
		for _, w := range f[2:] {
			switch w {
			case "pre:", "post:":
				section = w
			default:
				if section == "pre:" {
					ix.softPre[name] = append(ix.softPre[name], Name(w))
				}
			}
		}
		return nil
	})
}

func (ix *Index) parseBuiltin(r io.Reader) error {
	ix.builtin = map[string]bool{}
	return eachLine(r, func(_ int, line string) error {
		ix.builtin[Name(line)] = true
		return nil
	})
}

// aliasBus is the part of a modalias or pattern before the first ':'
// ("pci", "virtio", "usb", ...). Patterns whose prefix holds a wildcard go
// under "*" and are tried against every modalias.
func aliasBus(s string) string {
	bus, _, ok := strings.Cut(s, ":")
	if !ok || strings.ContainsAny(bus, "*?[") {
		return "*"
	}
	return bus
}

// Has reports whether the tree holds the module (as a file).
func (ix *Index) Has(name string) bool {
	_, ok := ix.paths[Name(name)]
	return ok
}

// Builtin reports whether the module is compiled into the kernel.
func (ix *Index) Builtin(name string) bool { return ix.builtin[Name(name)] }

// Path is the module's file relative to Dir ("" if unknown).
func (ix *Index) Path(name string) string { return ix.paths[Name(name)] }

// Names lists every module in the tree, sorted.
func (ix *Index) Names() []string {
	names := make([]string, 0, len(ix.paths))
	for n := range ix.paths {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// SoftPre lists the modules the index says to load before name, if present.
func (ix *Index) SoftPre(name string) []string { return ix.softPre[Name(name)] }

// Match returns the modules whose alias patterns match a device's modalias
// (as found in /sys/.../modalias), in index order, without duplicates.
func (ix *Index) Match(modalias string) []string {
	var out []string
	seen := map[string]bool{}
	for _, bus := range []string{aliasBus(modalias), "*"} {
		for _, a := range ix.aliases[bus] {
			if seen[a.module] {
				continue
			}
			if ok, err := path.Match(a.pattern, modalias); err == nil && ok {
				seen[a.module] = true
				out = append(out, a.module)
			}
		}
	}
	return out
}

// LoadOrder returns the modules to load, dependencies first, so that name
// ends up loaded. Soft "pre" dependencies present in the tree come before
// the module; built-in modules are left out.
func (ix *Index) LoadOrder(name string) ([]string, error) {
	steps, err := ix.loadSteps(name)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range steps {
		names = append(names, s.name)
	}
	return names, nil
}

// loadStep is one module of a load order; optional ones are soft
// dependencies (or their dependencies) whose failure does not matter.
type loadStep struct {
	name     string
	optional bool
}

func (ix *Index) loadSteps(name string) ([]loadStep, error) {
	var order []loadStep
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(n string, optional bool) error
	visit = func(n string, optional bool) error {
		switch state[n] {
		case 1:
			return fmt.Errorf("dependency cycle through %s", n)
		case 2:
			return nil
		}
		if ix.builtin[n] {
			state[n] = 2
			return nil
		}
		if _, ok := ix.paths[n]; !ok {
			if optional {
				return nil
			}
			return &NotFoundError{Name: n, Dir: ix.Dir}
		}
		state[n] = 1
		for _, d := range ix.softPre[n] {
			if err := visit(d, true); err != nil {
				return err
			}
		}
		for _, d := range ix.deps[n] {
			if err := visit(d, optional); err != nil {
				return err
			}
		}
		state[n] = 2
		order = append(order, loadStep{n, optional})
		return nil
	}
	if err := visit(Name(name), false); err != nil {
		return nil, err
	}
	return order, nil
}

// NotFoundError says a module is neither in the tree nor built in.
type NotFoundError struct {
	Name, Dir string
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("module %s is not in %s (not shipped in this image?)", e.Name, e.Dir)
}
