// Package fog speaks the protocol of FOG's client OS (FOS) to an unmodified
// FOG server: the task read from the kernel command line that FOG's iPXE
// menu builds, and the HTTP calls under ${web}service/ (check-in,
// inventory, progress, completion, error reports, storage blame).
//
// It holds no disk code: the agent reads a Task, refuses or warns about
// what it cannot do before anything is written, and reports through a
// Client while the restore runs.
package fog

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
)

// ImageType is FOG's image type (the imgType= key).
type ImageType string

// FOG's image types.
const (
	// Resizable is "Single Disk - Resizable": disk 1, partitions scaled to
	// the target disk.
	Resizable ImageType = "n"
	// MultiPartition is "Multiple Partition Image - Single Disk (Not
	// Resizable)".
	MultiPartition ImageType = "mps"
	// MultiPartitionAll is "Multiple Partition Image - All Disks (Not
	// Resizable)".
	MultiPartitionAll ImageType = "mpa"
	// Raw is "Raw Image (Sector By Sector, DD, Slow)": one stream for the
	// whole disk.
	Raw ImageType = "dd"
)

// Image formats (the imgFormat= key, FOG's "Image Manager" setting).
const (
	FormatGzip          = 0
	FormatPartimage     = 1
	FormatGzipSplit     = 2
	FormatNone          = 3
	FormatNoneSplit     = 4
	FormatZstd          = 5
	FormatZstdSplit     = 6
	maxFormat           = FormatZstdSplit
	formatNotGiven      = -1
	partitionAll        = "all"
	partitionTableOnly  = "mbr"
	defaultImagesMount  = "/images"
	windowsHostnameOSID = 11 // highest Windows osid (Windows Server)
)

// Task is a FOG task as FOS reads it from /proc/cmdline.
//
// Vars holds every key=value word the way FOS exports them; the typed
// fields are filled from it where the value parses. Validate says what is
// missing or malformed, Problems what imgcast will not do.
type Task struct {
	// Vars are the key=value words (see ParseCmdline).
	Vars map[string]string
	// Words are the words without '=' (irqpoll, nombr, debug, ...), which
	// FOS's variable import skips but some scripts test for.
	Words map[string]bool

	// Web is the FOG web root, "http://10.0.0.5/fog/", always ending in
	// "/" (FOG sends it so; FOS appends "service/..." to it).
	Web string
	// MAC is the host's primary MAC as FOG registered it; every call
	// identifies the host by it.
	MAC string
	// Storage is the NFS export to mount, "10.0.0.5:/images/".
	Storage string
	// StorageIP is the storage node; udpcast's rendezvous unless MCastRDV.
	StorageIP string
	// MCastRDV is FOG_MULTICAST_RENDEZVOUS, when the server sets it.
	MCastRDV string
	// Type is "down" (deploy) or "up" (capture), lower-cased.
	Type string
	// Mode is a non-imaging task (wipe, inventory, onlydebug, ...).
	Mode string
	// MC is "yes" for a multicast task, "bt" for a torrent one, lower-cased.
	MC string
	// Port is the multicast session's udpcast port base.
	Port int
	// MCastMaxWait is the session's wait in minutes (1.5.x sends it; 0 when
	// absent).
	MCastMaxWait int

	// Img is the image's folder under the export.
	Img string
	// ImgID is FOG's image id (unused by FOS).
	ImgID   string
	ImgType ImageType
	// ImgPartitionType is "all", "mbr" (table only) or a partition number.
	ImgPartitionType string
	// ImgFormat is the effective format: imgLegacy when given, else
	// imgFormat (-1 when neither parses).
	ImgFormat int
	// OSID is FOG's operating system id (9 Windows 10, 50 Linux, ...).
	OSID int

	// Hostname and HostEarly ask for the offline Windows hostname change.
	Hostname  string
	HostEarly bool
	// FDrive lists the host's "Primary Disk" specs: device path, size in
	// bytes, serial, WWN or filesystem UUID.
	FDrive []string

	// Shutdown powers the machine off at the end instead of rebooting.
	Shutdown bool
	// Capone is a host that joined a session from the PXE menu without a
	// task: no check-in and no completion.
	Capone bool
	// IsDebug asks for the debug shell (isdebug=yes).
	IsDebug bool
	// NoMBR skips the partition table (a single partition is restored).
	NoMBR bool
	// LargeSize picks the largest disk.
	LargeSize bool
}

// ParseCmdline splits a kernel command line the way FOS's scripts import
// it into shell variables: words separated by blanks (no quoting: quotes
// stay in the value), each "name=value" word exported with "+_+" in the
// value turned into a space. As with FOS's awk -F= import, the value ends
// at a second '=', and a word with an empty value is skipped (so an
// earlier value stays). A later word for the same name wins. Words without
// '=' come back in words.
func ParseCmdline(cmdline string) (vars map[string]string, words map[string]bool) {
	vars, words = map[string]string{}, map[string]bool{}
	for _, w := range strings.FieldsFunc(cmdline, isBlank) {
		name, value, ok := strings.Cut(w, "=")
		if !ok {
			words[w] = true
			continue
		}
		value, _, _ = strings.Cut(value, "=")
		if name == "" || value == "" {
			continue
		}
		vars[name] = strings.ReplaceAll(value, "+_+", " ")
	}
	return vars, words
}

// isBlank is the shell's default field separator (space, tab, newline);
// /proc/cmdline may also end in a NUL, which FOS strips.
func isBlank(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == 0 }

// taskKeys are what FOG's boot menu puts on the line of a task and no
// ordinary kernel line carries.
var taskKeys = []string{"type", "mode", "storage"}

// Detect reports whether a kernel command line carries a FOG task: web=
// and mac= with a type=, mode= or storage= key, as FOG's boot menu writes
// them.
func Detect(cmdline string) bool {
	vars, _ := ParseCmdline(cmdline)
	if vars["web"] == "" || vars["mac"] == "" {
		return false
	}
	for _, k := range taskKeys {
		if vars[k] != "" {
			return true
		}
	}
	return false
}

// Parse reads a task from a kernel command line. It never fails: Validate
// reports what is missing or malformed.
func Parse(cmdline string) *Task {
	vars, words := ParseCmdline(cmdline)
	t := &Task{Vars: vars, Words: words, ImgFormat: formatNotGiven}
	t.Web = vars["web"]
	if t.Web != "" && !strings.HasSuffix(t.Web, "/") {
		t.Web += "/"
	}
	t.MAC = vars["mac"]
	t.Storage = vars["storage"]
	t.StorageIP = vars["storageip"]
	t.MCastRDV = vars["mcastrdv"]
	t.Type = strings.ToLower(vars["type"])
	t.Mode = vars["mode"]
	t.MC = strings.ToLower(vars["mc"])
	t.Port, _ = strconv.Atoi(vars["port"])
	t.MCastMaxWait, _ = strconv.Atoi(vars["mcastMaxWait"])
	t.Img = vars["img"]
	t.ImgID = vars["imgid"]
	t.ImgType = ImageType(strings.ToLower(vars["imgType"]))
	t.ImgPartitionType = strings.ToLower(vars["imgPartitionType"])
	format := vars["imgLegacy"]
	if format == "" {
		format = vars["imgFormat"]
	}
	if f, err := strconv.Atoi(format); err == nil {
		t.ImgFormat = f
	}
	t.OSID, _ = strconv.Atoi(vars["osid"])
	t.Hostname = vars["hostname"]
	t.HostEarly = isTrueNumber(vars["hostearly"])
	for _, spec := range strings.FieldsFunc(vars["fdrive"], func(r rune) bool { return r == ',' || isBlank(r) }) {
		t.FDrive = append(t.FDrive, spec)
	}
	t.Shutdown = vars["shutdown"] == "1"
	t.Capone = vars["capone"] == "1"
	isdebug := strings.ToLower(vars["isdebug"])
	t.IsDebug = isdebug == "yes" || isdebug == "y"
	// FOS sets nombr for the bare word, and whenever a single partition
	// is restored (imgPartitionType is neither all nor mbr).
	t.NoMBR = words["nombr"] || vars["nombr"] == "1" ||
		(t.ImgPartitionType != "" && t.ImgPartitionType != partitionAll && t.ImgPartitionType != partitionTableOnly)
	t.LargeSize = vars["largesize"] != ""
	return t
}

// isTrueNumber is bash's [[ $x -ne 0 ]] for the flags FOG sends as 1.
func isTrueNumber(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n != 0
}

// Multicast reports whether the task is a multicast deploy (mc=yes).
func (t *Task) Multicast() bool { return t.MC == "yes" }

// Rendezvous is where udpcast's handshake goes: mcastrdv when the server
// sets it, else the storage node.
func (t *Task) Rendezvous() string {
	if t.MCastRDV != "" {
		return t.MCastRDV
	}
	return t.StorageIP
}

// Partition returns the single partition to restore (imgPartitionType=N),
// or 0 for all partitions or the table only.
func (t *Task) Partition() int {
	n, err := strconv.Atoi(t.ImgPartitionType)
	if err != nil || n < 1 {
		return 0
	}
	return n
}

// TableOnly reports imgPartitionType=mbr: the partition table and boot
// area are restored, no partition data.
func (t *Task) TableOnly() bool { return t.ImgPartitionType == partitionTableOnly }

// Split reports whether the image's partitions are stored as 200 MiB
// pieces (.000, .001, ...).
func (t *Task) Split() bool {
	return t.ImgFormat == FormatGzipSplit || t.ImgFormat == FormatNoneSplit || t.ImgFormat == FormatZstdSplit
}

// Compression names the decompressor the image format needs: "gzip",
// "zstd" or "none"; "" for partimage or an unknown format.
func (t *Task) Compression() string {
	switch t.ImgFormat {
	case FormatGzip, FormatGzipSplit:
		return "gzip"
	case FormatNone, FormatNoneSplit:
		return "none"
	case FormatZstd, FormatZstdSplit:
		return "zstd"
	}
	return ""
}

// ImagePath is the image folder once the export is mounted at mountPoint
// ("/images" when empty).
func (t *Task) ImagePath(mountPoint string) string {
	if mountPoint == "" {
		mountPoint = defaultImagesMount
	}
	return path.Join(mountPoint, t.Img)
}

// Validate checks what a deploy needs and returns every problem at once,
// each naming the key, the value and what FOG sends there. A task that
// Problems refuses is not an error here.
func (t *Task) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		v, given := t.Vars[key]
		what := fmt.Sprintf(format, args...)
		if !given {
			errs = append(errs, fmt.Errorf("%s= is missing: %s", key, what))
			return
		}
		errs = append(errs, fmt.Errorf("%s=%q: %s", key, v, what))
	}
	if u, err := url.Parse(t.Web); t.Web == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("web", "want the FOG web root, e.g. http://10.0.0.5/fog/")
	}
	if hw, err := net.ParseMAC(t.MAC); err != nil || len(hw) != 6 {
		bad("mac", "want the host's primary MAC address, e.g. 00:1a:2b:3c:4d:5e")
	}
	if t.Mode != "" || t.Type != "down" {
		// Only a deploy needs the rest; Problems says what happens to
		// other tasks.
		if t.Type == "" && t.Mode == "" {
			bad("type", "want type=down (deploy)")
		}
		return errors.Join(errs...)
	}
	if _, _, err := SplitStorage(t.Storage); err != nil {
		bad("storage", "%v", err)
	}
	if t.StorageIP != "" && net.ParseIP(t.StorageIP).To4() == nil {
		bad("storageip", "want the storage node's IPv4 address")
	}
	if t.MCastRDV != "" && net.ParseIP(t.MCastRDV).To4() == nil {
		bad("mcastrdv", "want an IPv4 address (FOG_MULTICAST_RENDEZVOUS)")
	}
	if err := checkImageName(t.Img); err != nil {
		bad("img", "%v", err)
	}
	switch t.ImgType {
	case Resizable, MultiPartition, MultiPartitionAll, Raw:
	default:
		bad("imgType", "want n, mps, mpa or dd")
	}
	if t.ImgPartitionType != partitionAll && t.ImgPartitionType != partitionTableOnly && t.Partition() == 0 {
		bad("imgPartitionType", "want all, mbr or a partition number")
	}
	if t.ImgFormat < 0 || t.ImgFormat > maxFormat {
		key := "imgFormat"
		if t.Vars["imgLegacy"] != "" {
			key = "imgLegacy"
		}
		bad(key, "want an image format from 0 to %d", maxFormat)
	}
	if _, err := strconv.Atoi(t.Vars["osid"]); err != nil {
		bad("osid", "want FOG's operating system id, e.g. 9 (Windows 10) or 50 (Linux)")
	}
	if t.Multicast() {
		if t.Port < 2 || t.Port > 65534 || t.Port%2 != 0 {
			bad("port", "want the session's even udpcast port base (2-65534)")
		}
		if t.Rendezvous() == "" {
			bad("storageip", "a multicast task needs the storage node's address (or mcastrdv=) for udpcast's rendezvous")
		}
	}
	return errors.Join(errs...)
}

// checkImageName refuses image names that would leave the export.
func checkImageName(img string) error {
	switch {
	case img == "":
		return errors.New("want the image's folder name")
	case strings.HasPrefix(img, "/") || strings.ContainsRune(img, 0):
		return errors.New("want a folder name inside the export")
	}
	for _, part := range strings.Split(img, "/") {
		if part == ".." {
			return errors.New("the image folder must not leave the export (..)")
		}
	}
	return nil
}

// SplitStorage splits FOG's storage= value, "10.0.0.5:/images/", into the
// server's IPv4 address and the export path. FOG always gives an address;
// a name is refused rather than looked up.
func SplitStorage(storage string) (net.IP, string, error) {
	host, export, ok := strings.Cut(storage, ":")
	if storage == "" || !ok {
		return nil, "", errors.New("want the storage node's NFS export as IP:/path, e.g. 10.0.0.5:/images/")
	}
	ip := net.ParseIP(host).To4()
	if ip == nil {
		return nil, "", fmt.Errorf("%q is not an IPv4 address (FOG gives the storage node's address)", host)
	}
	if !strings.HasPrefix(export, "/") || strings.ContainsAny(export, ",\x00") {
		return nil, "", fmt.Errorf("export %q is not an absolute path", export)
	}
	return ip, export, nil
}

// Severity says whether imgcast goes on despite a Problem.
type Severity int

// Severities.
const (
	// Warning: imgcast does the task but leaves this part out.
	Warning Severity = iota
	// Refusal: imgcast refuses the task before anything is written.
	Refusal
)

func (s Severity) String() string {
	if s == Refusal {
		return "refused"
	}
	return "warning"
}

// Problem is a part of a task imgcast does not do.
type Problem struct {
	Severity Severity
	// Key is the kernel command line key or image file that asks for it.
	Key  string
	Text string
}

func (p Problem) Error() string { return fmt.Sprintf("%s (%s): %s", p.Severity, p.Key, p.Text) }

// Problems lists what the task asks for that imgcast does not do, from the
// command line alone (CheckImage looks at the image store). Refusals come
// first.
func (t *Task) Problems() []Problem {
	var ps []Problem
	add := func(s Severity, key, format string, args ...any) {
		ps = append(ps, Problem{Severity: s, Key: key, Text: fmt.Sprintf(format, args...)})
	}
	switch {
	case t.Mode != "" && !strings.Contains(t.Mode, "debug"):
		add(Refusal, "mode", "FOG task %q is not supported: imgcast only deploys images (boot FOG's own FOS for this task)", t.Mode)
	case t.Type == "up":
		add(Refusal, "type", "capture (type=up) is not supported: imgcast only deploys; capture with FOG's own FOS")
	case t.Type != "" && t.Type != "down":
		add(Refusal, "type", "unknown task type %q (FOG sends down or up)", t.Type)
	}
	if t.MC == "bt" {
		add(Refusal, "mc", "torrent-cast (mc=bt) is not supported: use a multicast or unicast deploy")
	}
	if t.ImgFormat == FormatPartimage {
		add(Refusal, "imgFormat", "partimage images (format 1) are not supported: recapture the image with partclone")
	}
	if t.Vars["boottype"] == "usb" {
		add(Refusal, "boottype", "USB-booted tasks (boottype=usb) are not supported: boot the host through FOG's PXE menu")
	}
	if t.Hostname != "" && t.HostEarly && t.OSID >= 1 && t.OSID <= windowsHostnameOSID {
		add(Warning, "hostearly", "the Windows hostname is not changed (FOG's offline registry edit is not supported); FOG's client service renames the host at first boot")
	}
	if t.Vars["mdraid"] == "true" {
		add(Warning, "mdraid", "software RAID sets are not assembled (mdraid=true): the disks are written as plain disks")
	}
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Severity > ps[j].Severity })
	return ps
}
