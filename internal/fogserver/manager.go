package fogserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imgcast/imgcast/pkg/fogmc"
)

// Form is the shape of the command FOG's multicast manager builds.
type Form int

const (
	// Form15 is FOG 1.5.x: one "udp-sender … --file F;" per image file,
	// chained in one shell command; split pieces are not sent.
	Form15 Form = 15
	// Form16 is FOG 1.6: a split partition's pieces joined into one
	// stream, each stream behind its 128-byte FOGMC1 record on
	// udp-sender's stdin.
	Form16 Form = 16
)

// FOG's image type ids (imageTypeID, the session's isDD).
const (
	TypeResizable         = 1 // n
	TypeMultiPartition    = 2 // mps
	TypeMultiPartitionAll = 3 // mpa
	TypeRaw               = 4 // dd
)

// ImageTypeID maps imgType= to FOG's image type id (0 when unknown).
func ImageTypeID(imgType string) int {
	return map[string]int{"n": TypeResizable, "mps": TypeMultiPartition, "mpa": TypeMultiPartitionAll, "dd": TypeRaw}[imgType]
}

// Sender is one multicast session as FOG's manager starts it. It is this
// project's independent reading of FOG's MulticastTask::getCMD (file
// scan, per-type filters, natural sort, partition filter), so it serves
// as the oracle for the client's own idea of the stream order.
type Sender struct {
	Form Form
	// Program is udp-sender's path (default "udp-sender").
	Program string
	// Dir is the image folder (FOG: /images/<img>).
	Dir string
	// ImageType is FOG's image type id (TypeResizable, …); OSID the image's
	// OS, which selects the legacy Windows layouts for type n.
	ImageType, OSID int
	// Format is the image format (1.6 joins the pieces of 2, 4 and 6).
	Format int
	// PartitionType is imgPartitionType; FOG casts it to a number, so
	// "all" and "mbr" both send every file.
	PartitionType string
	// Interface, Clients (--min-receivers) and Port (--portbase).
	Interface string
	Clients   int
	Port      int
	// MaxWait is the session's wait as FOG stores it: 1.5.x passes it
	// times 60 (minutes) as the first stream's --max-wait, 1.6 as is.
	MaxWait int
	// LaterWait is the later streams' --max-wait in seconds; 0 means the
	// form's: 10 (1.5.x, long-standing) or 600 (1.6).
	LaterWait int
	// MulticastRDV, DataAddress, Bitrate, HelloInterval: FOG's optional
	// settings (--mcast-rdv-address, --mcast-data-address, --max-bitrate,
	// --rexmit-hello-interval). Duplex defaults to --full-duplex.
	MulticastRDV, DataAddress, Bitrate, HelloInterval, Duplex string
}

// Stream is one udp-sender of the chain.
type Stream struct {
	// ID names the stream in its FOGMC1 record (1.6).
	ID string
	// Files are the image files whose concatenation is the stream,
	// relative to the image folder (1.5.x's legacy patterns stay globs).
	Files []string
}

var (
	legacySys    = regexp.MustCompile(`(?i)(sys\.img\..*$)`)
	legacyRec    = regexp.MustCompile(`(?i)(rec\.img\..*$)`)
	splitExt     = regexp.MustCompile(`^img\.[0-9]+$`)
	digitsSuffix = regexp.MustCompile(`\.[0-9]+$`)
)

// Streams lists the streams in the order the manager sends them.
func (s Sender) Streams() ([]Stream, error) {
	names, err := s.fileList()
	if err != nil {
		return nil, err
	}
	var streams []Stream
	if s.Form == Form15 {
		for _, n := range names {
			streams = append(streams, Stream{ID: fogmc.IDForFile(strings.TrimSuffix(n, ".*")), Files: []string{n}})
		}
		return streams, nil
	}
	claimed := map[string]bool{}
	for _, n := range names {
		if claimed[n] {
			continue
		}
		switch {
		case strings.Contains(n, "*"):
			matches, err := s.glob(n)
			if err != nil || len(matches) == 0 {
				continue // FOG logs "No files matched" and skips it
			}
			if n == "sys.img.*" {
				streams = append(streams, Stream{ID: fogmc.IDForFile(matches[0]), Files: matches})
				continue
			}
			for _, m := range matches {
				streams = append(streams, Stream{ID: fogmc.IDForFile(m), Files: []string{m}})
			}
		case !s.split():
			streams = append(streams, Stream{ID: fogmc.IDForFile(n), Files: []string{n}})
		default:
			chunks, err := s.glob(n + "*")
			if err != nil || len(chunks) == 0 {
				continue
			}
			for _, c := range chunks {
				claimed[c] = true
			}
			streams = append(streams, Stream{ID: fogmc.IDForFile(chunks[0]), Files: chunks})
		}
	}
	return streams, nil
}

func (s Sender) split() bool { return s.Format == 2 || s.Format == 4 || s.Format == 6 }

// glob is PHP's glob() in the image folder: sorted names.
func (s Sender) glob(pattern string) ([]string, error) {
	matches, err := filepath.Glob(filepath.Join(s.Dir, pattern))
	if err != nil {
		return nil, err
	}
	for i := range matches {
		matches[i] = filepath.Base(matches[i])
	}
	sort.Strings(matches)
	return matches, nil
}

// fileList is getCMD's $filelist: scanned, filtered by type, natural
// sorted, filtered by partition.
func (s Sender) fileList() ([]string, error) {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return nil, fmt.Errorf("image folder: %w", err)
	}
	var all []string
	for _, e := range entries {
		all = append(all, e.Name())
	}
	var list []string
	scan := func(twoNumbers bool) {
		for _, name := range all {
			if ext, ok := sscanfExt(name, twoNumbers); ok {
				s.addPartFile(&list, name, ext)
			}
		}
	}
	switch s.ImageType {
	case TypeResizable:
		switch s.OSID {
		case 1, 2, 5, 6, 7:
			var sys, rec bool
			for _, name := range all {
				sys = sys || legacySys.MatchString(name)
				rec = rec || legacyRec.MatchString(name)
			}
			if sys || rec {
				if sys {
					list = append(list, "sys.img.*")
				}
				if rec {
					list = append(list, "rec.img.*")
				}
				break
			}
			scan(false)
		default:
			scan(false)
		}
	case TypeMultiPartition:
		scan(false)
	case TypeMultiPartitionAll:
		scan(true)
	case TypeRaw:
		list = all
	default:
		return nil, fmt.Errorf("unknown image type id %d", s.ImageType)
	}
	sort.SliceStable(list, func(i, j int) bool { return natLess(list[i], list[j]) })
	if part, _ := strconv.Atoi(s.PartitionType); part >= 1 {
		only := regexp.MustCompile(fmt.Sprintf(`^d[0-9]p%d\.img$`, part))
		var kept []string
		for _, n := range list {
			if only.MatchString(n) {
				kept = append(kept, n)
			}
		}
		list = kept
	}
	return list, nil
}

// addPartFile keeps "…img" files; 1.6 also keeps a split partition once,
// by its stem, when the image is in a split format.
func (s Sender) addPartFile(list *[]string, name, ext string) {
	if ext == "img" {
		*list = append(*list, name)
		return
	}
	if s.Form == Form15 || !s.split() || !splitExt.MatchString(ext) {
		return
	}
	base := digitsSuffix.ReplaceAllString(name, "")
	for _, n := range *list {
		if n == base {
			return
		}
	}
	*list = append(*list, base)
}

// sscanfExt is PHP's sscanf(name, "d1p%d.%s") (or "d%dp%d.%s"): the %s
// after the partition number, when the name matches that far.
func sscanfExt(name string, twoNumbers bool) (string, bool) {
	rest, ok := strings.CutPrefix(name, "d")
	if !ok {
		return "", false
	}
	if twoNumbers {
		if rest, ok = scanInt(rest); !ok {
			return "", false
		}
	} else if rest, ok = strings.CutPrefix(rest, "1"); !ok {
		return "", false
	}
	if rest, ok = strings.CutPrefix(rest, "p"); !ok {
		return "", false
	}
	if rest, ok = scanInt(rest); !ok {
		return "", false
	}
	if rest, ok = strings.CutPrefix(rest, "."); !ok {
		return "", false
	}
	rest = strings.TrimLeft(rest, " \t\n\r\v\f")
	ext, _, _ := strings.Cut(rest, " ")
	return ext, ext != ""
}

// scanInt consumes %d: leading blanks, a sign, at least one digit.
func scanInt(s string) (string, bool) {
	s = strings.TrimLeft(s, " \t\n\r\v\f")
	if s != "" && (s[0] == '+' || s[0] == '-') {
		s = s[1:]
	}
	n := digitRun(s)
	return s[n:], n > 0
}

// args is the udp-sender argument list without --file, with the stream's
// --max-wait.
func (s Sender) args(i int) []string {
	wait := s.LaterWait
	switch {
	case i == 0 && s.Form == Form15:
		wait = s.MaxWait * 60
	case i == 0:
		wait = s.MaxWait
	case wait == 0 && s.Form == Form15:
		wait = 10
	case wait == 0:
		wait = 600
	}
	a := []string{or(s.Program, "udp-sender")}
	if s.Bitrate != "" {
		a = append(a, "--max-bitrate", s.Bitrate)
	}
	if s.HelloInterval != "" {
		a = append(a, "--rexmit-hello-interval", s.HelloInterval)
	}
	if s.Interface != "" {
		a = append(a, "--interface", s.Interface)
	}
	a = append(a, "--min-receivers", strconv.Itoa(s.Clients), "--max-wait", strconv.Itoa(wait))
	if s.DataAddress != "" {
		a = append(a, "--mcast-data-address", s.DataAddress)
	}
	if s.MulticastRDV != "" {
		a = append(a, "--mcast-rdv-address", s.MulticastRDV)
	}
	return append(a, "--portbase", strconv.Itoa(s.Port), or(s.Duplex, "--full-duplex"), "--ttl", "32", "--nokbd", "--nopointopoint")
}

// safeWord is what 1.5.x may put into its unquoted shell command.
var safeWord = regexp.MustCompile(`^[A-Za-z0-9_./:*+=,@%-]+$`)

// Command is the shell command the manager runs (with sh -c).
func (s Sender) Command() (string, error) {
	if s.Port <= 0 || s.Port%2 != 0 {
		return "", fmt.Errorf("port %d: FOG's manager refuses it (port must be even and numeric)", s.Port)
	}
	streams, err := s.Streams()
	if err != nil {
		return "", err
	}
	if len(streams) == 0 {
		return "", fmt.Errorf("no image files to send in %s", s.Dir)
	}
	dir := strings.TrimRight(s.Dir, "/")
	var b strings.Builder
	for i, st := range streams {
		args := s.args(i)
		if s.Form == Form15 {
			file := dir + "/" + st.Files[0]
			for _, w := range append(args, file) {
				if !safeWord.MatchString(w) {
					return "", fmt.Errorf("%q cannot go unquoted into 1.5.x's command", w)
				}
			}
			fmt.Fprintf(&b, "%s --file %s;", strings.Join(args, " "), file)
			continue
		}
		quoted := make([]string, len(args))
		for j, a := range args {
			quoted[j] = shellQuote(a)
		}
		var files []string
		for _, f := range st.Files {
			files = append(files, shellQuote(dir+"/"+f))
		}
		fmt.Fprintf(&b, "{ printf 'FOGMC1 %%-120s\\n' %s; cat %s; } | %s;",
			shellQuote(st.ID), strings.Join(files, " "), strings.Join(quoted, " "))
	}
	return b.String(), nil
}

// shellQuote is PHP's escapeshellarg.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// CommandFunc makes the command that runs a program, e.g. a lab host's
// Command to run it inside a network namespace.
type CommandFunc func(ctx context.Context, name string, args ...string) *exec.Cmd

// Run is a running sender chain.
type Run struct {
	// PID is the shell's; the chain runs in its process group.
	PID  int
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start runs the chain with sh -c, as FOG's manager does with proc_open,
// in its own process group; output (udp-sender's log) goes to log.
func (s Sender) Start(ctx context.Context, command CommandFunc, log io.Writer) (*Run, error) {
	line, err := s.Command()
	if err != nil {
		return nil, err
	}
	cmd := command(ctx, "sh", "-c", line)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	// Set before Start: the goroutine Start leaves watching ctx reads it.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the sender chain: %w", err)
	}
	r := &Run{PID: cmd.Process.Pid, cmd: cmd, done: make(chan struct{})}
	go func() {
		r.err = cmd.Wait()
		close(r.done)
	}()
	return r, nil
}

// Done is closed when the chain has ended.
func (r *Run) Done() <-chan struct{} { return r.done }

// Wait waits for the chain to end and returns its error.
func (r *Run) Wait() error {
	<-r.done
	return r.err
}

// Stop ends the chain: SIGTERM to its process group, SIGKILL to what is
// left of it after 5 s. It returns when the shell has ended and no process
// of the group runs any more.
func (r *Run) Stop() error {
	if err := syscall.Kill(-r.PID, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	killed := false
	for {
		select {
		case <-r.done:
			if !GroupAlive(r.PID) {
				return nil
			}
		default:
		}
		if time.Now().After(deadline) {
			if killed {
				return fmt.Errorf("process group %d still runs after SIGKILL", r.PID)
			}
			_ = syscall.Kill(-r.PID, syscall.SIGKILL)
			killed, deadline = true, time.Now().Add(2*time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// GroupAlive reports whether a process of process group pgid runs (zombies
// waiting to be reaped do not count).
func GroupAlive(pgid int) bool {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces and
		// parentheses, so read after the last ')'.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(b[i+1:]))
		if len(fields) < 3 || fields[0] == "Z" {
			continue
		}
		if g, err := strconv.Atoi(fields[2]); err == nil && g == pgid {
			return true
		}
	}
	return false
}
