package fog

import (
	"reflect"
	"strings"
	"testing"
)

// exampleLine is FOG 1.5.x's kernel line for a multicast task, as its boot
// menu writes it (with ${setmacto} expanded to nothing by iPXE).
const exampleLine = "bzImage loglevel=4 initrd=init.xz root=/dev/ram0 rw ramdisk_size=275000 web=http://10.0.0.5/fog/ consoleblank=0 rootfstype=ext4 nvme_core.default_ps_max_latency_us=0 setmacto= mac=00:1a:2b:3c:4d:5e ftp=10.0.0.5 storage=10.0.0.5:/images/ storageip=10.0.0.5 osid=9 irqpoll hostname=lab-07 chkdsk=0 img=Win10Lab imgType=n imgPartitionType=all imgid=12 imgFormat=5 PIGZ_COMP=-19 hostearly=1 port=54320 mcastMaxWait=10 type=down mc=yes\n"

func TestParseExample(t *testing.T) {
	task := Parse(exampleLine)
	want := Task{
		Web: "http://10.0.0.5/fog/", MAC: "00:1a:2b:3c:4d:5e", Storage: "10.0.0.5:/images/", StorageIP: "10.0.0.5",
		Type: "down", MC: "yes", Port: 54320, MCastMaxWait: 10, Img: "Win10Lab", ImgID: "12", ImgType: Resizable,
		ImgPartitionType: "all", ImgFormat: FormatZstd, OSID: 9, Hostname: "lab-07", HostEarly: true,
	}
	got := *task
	got.Vars, got.Words = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", got, want)
	}
	if err := task.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if !task.Multicast() || task.Rendezvous() != "10.0.0.5" || task.Compression() != "zstd" || task.Split() {
		t.Errorf("Multicast %v Rendezvous %q Compression %q Split %v", task.Multicast(), task.Rendezvous(), task.Compression(), task.Split())
	}
	if !task.Words["irqpoll"] || task.Words["nombr"] {
		t.Errorf("words = %v", task.Words)
	}
	if _, ok := task.Vars["setmacto"]; ok {
		t.Error("setmacto= (empty) was imported; FOS skips empty values")
	}
	if got := task.ImagePath(""); got != "/images/Win10Lab" {
		t.Errorf("ImagePath = %q", got)
	}
}

// TestParseCmdlineLikeFOS pins FOS's import rules, one per case.
func TestParseCmdlineLikeFOS(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		vars       map[string]string
		words      []string
	}{
		{"plus-underscore-plus is a space", "adou=OU+_+Lab+_+1", map[string]string{"adou": "OU Lab 1"}, nil},
		{"value ends at a second equals sign", "adou=OU=Lab,DC=x", map[string]string{"adou": "OU"}, nil},
		{"empty value skipped, earlier one stays", "img=a img=", map[string]string{"img": "a"}, nil},
		{"later value wins", "img=a img=b", map[string]string{"img": "b"}, nil},
		{"quotes stay in the value", `hostname="lab"`, map[string]string{"hostname": `"lab"`}, nil},
		{"no name", "=x", map[string]string{}, nil},
		{"tabs, newlines and a trailing NUL separate", "a=1\tb=2\nc=3\x00", map[string]string{"a": "1", "b": "2", "c": "3"}, nil},
		{"bare words", "irqpoll nombr debug", map[string]string{}, []string{"debug", "irqpoll", "nombr"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vars, words := ParseCmdline(tc.line)
			if !reflect.DeepEqual(vars, tc.vars) {
				t.Errorf("vars = %q, want %q", vars, tc.vars)
			}
			var got []string
			for w := range words {
				got = append(got, w)
			}
			if !sameSet(got, tc.words) {
				t.Errorf("words = %q, want %q", got, tc.words)
			}
		})
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, x := range a {
		seen[x]++
	}
	for _, x := range b {
		seen[x]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		line string
		want bool
	}{
		{exampleLine, true},
		{"web=http://10.0.0.5/fog/ mac=00:1a:2b:3c:4d:5e mode=onlydebug", true},
		{"web=http://10.0.0.5/fog/ mac=00:1a:2b:3c:4d:5e storage=10.0.0.5:/images/", true},
		{"console=ttyS0 imgcast.server=10.0.0.1 imgcast.mode=multicast", false},
		{"web=http://10.0.0.5/fog/ type=down", false}, // no mac
		{"mac=00:1a:2b:3c:4d:5e type=down", false},    // no web
		{"web=http://10.0.0.5/fog/ mac=00:1a:2b:3c:4d:5e", false},
	} {
		if got := Detect(tc.line); got != tc.want {
			t.Errorf("Detect(%q) = %v, want %v", tc.line, got, tc.want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	base := "web=http://10.0.0.5/fog mac=00:1a:2b:3c:4d:5e type=DOWN "
	for _, tc := range []struct {
		extra string
		check func(*Task) bool
		what  string
	}{
		{"", func(t *Task) bool { return t.Web == "http://10.0.0.5/fog/" && t.Type == "down" }, "web gets its slash, type lower-cased"},
		{"shutdown=1 capone=1 isdebug=YES largesize=1", func(t *Task) bool { return t.Shutdown && t.Capone && t.IsDebug && t.LargeSize }, "flags"},
		{"isdebug=y shutdown=0 capone=yes", func(t *Task) bool { return t.IsDebug && !t.Shutdown && !t.Capone }, "isdebug=y; shutdown and capone only as 1"},
		{"nombr", func(t *Task) bool { return t.NoMBR }, "bare nombr"},
		{"imgPartitionType=3", func(t *Task) bool { return t.NoMBR && t.Partition() == 3 && !t.TableOnly() }, "one partition implies nombr"},
		{"imgPartitionType=mbr", func(t *Task) bool { return !t.NoMBR && t.Partition() == 0 && t.TableOnly() }, "table only"},
		{"imgFormat=5 imgLegacy=0", func(t *Task) bool { return t.ImgFormat == 0 && t.Compression() == "gzip" }, "imgLegacy overrides imgFormat"},
		{"imgFormat=6", func(t *Task) bool { return t.Split() && t.Compression() == "zstd" }, "split zstd"},
		{"imgFormat=x", func(t *Task) bool { return t.ImgFormat == -1 && t.Compression() == "" }, "unparsable format"},
		{"fdrive=/dev/sda,500107862016+_+S3Z9NB0K", func(t *Task) bool {
			return reflect.DeepEqual(t.FDrive, []string{"/dev/sda", "500107862016", "S3Z9NB0K"})
		}, "fdrive list"},
		{"mcastrdv=10.0.0.9 storageip=10.0.0.5", func(t *Task) bool { return t.Rendezvous() == "10.0.0.9" }, "mcastrdv wins"},
		{"hostearly=0 hostname=x", func(t *Task) bool { return !t.HostEarly }, "hostearly=0"},
	} {
		if task := Parse(base + tc.extra); !tc.check(task) {
			t.Errorf("%s: %q parsed as %+v", tc.what, tc.extra, task)
		}
	}
}

func TestValidate(t *testing.T) {
	good := "web=http://10.0.0.5/fog/ mac=00:1a:2b:3c:4d:5e storage=10.0.0.5:/images/ storageip=10.0.0.5 osid=50 img=lab imgType=mps imgPartitionType=all imgFormat=0 type=down"
	if err := Parse(good).Validate(); err != nil {
		t.Fatalf("a good unicast task: %v", err)
	}
	for _, tc := range []struct {
		change string
		want   []string // every one must appear in the error
	}{
		{"web=ftp://x/", []string{`web="ftp://x/"`, "FOG web root"}},
		{"mac=zz", []string{`mac="zz"`}},
		{"storage=fog.example.com:/images/", []string{`storage=`, "not an IPv4 address"}},
		{"storage=10.0.0.5", []string{"IP:/path"}},
		{"storage=10.0.0.5:images", []string{"not an absolute path"}},
		{"img=../etc", []string{`img="../etc"`, "must not leave the export"}},
		{"img=/abs", []string{"inside the export"}},
		{"imgType=xyz", []string{`imgType="xyz"`, "n, mps, mpa or dd"}},
		{"imgPartitionType=0", []string{"all, mbr or a partition number"}},
		{"imgFormat=9", []string{`imgFormat="9"`, "from 0 to 6"}},
		{"imgLegacy=7", []string{`imgLegacy="7"`}},
		{"osid=win", []string{`osid="win"`}},
		{"mc=yes port=54321", []string{`port="54321"`, "even"}},
		{"mc=yes", []string{"port= is missing"}},
		{"storageip=host mcastrdv=x", []string{"storageip=", "mcastrdv="}},
	} {
		err := Parse(good + " " + tc.change).Validate()
		if err == nil {
			t.Errorf("%s: no error", tc.change)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", tc.change, err, w)
			}
		}
	}
	// Every problem at once.
	err := Parse("web=x type=down").Validate()
	for _, key := range []string{"web=", "mac=", "storage=", "img=", "imgType=", "imgPartitionType=", "imgFormat=", "osid="} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("empty task: error %v does not name %s", err, key)
		}
	}
	// A task that is not a deploy needs only web and mac to be reported.
	if err := Parse("web=http://10.0.0.5/fog/ mac=00:1a:2b:3c:4d:5e mode=wipe").Validate(); err != nil {
		t.Errorf("mode=wipe: %v", err)
	}
	if err := Parse("web=http://10.0.0.5/fog/ mac=00:1a:2b:3c:4d:5e").Validate(); err == nil || !strings.Contains(err.Error(), "type= is missing") {
		t.Errorf("no type: %v", err)
	}
}

func TestProblems(t *testing.T) {
	base := "web=http://10.0.0.5/fog/ mac=00:1a:2b:3c:4d:5e "
	for _, tc := range []struct {
		extra string
		want  []string // "severity key" per problem, in order
	}{
		{"type=down imgFormat=5 osid=9", nil},
		{"type=up", []string{"refused type"}},
		{"mode=wipe", []string{"refused mode"}},
		{"mode=onlydebug isdebug=yes", nil},
		{"type=down mc=bt", []string{"refused mc"}},
		{"type=down imgFormat=1", []string{"refused imgFormat"}},
		{"type=down imgFormat=5 imgLegacy=1", []string{"refused imgFormat"}},
		{"type=down boottype=usb", []string{"refused boottype"}},
		{"type=down osid=9 hostname=lab-07 hostearly=1", []string{"warning hostearly"}},
		{"type=down osid=50 hostname=lab-07 hostearly=1", nil},
		{"type=down osid=9 hostname=lab-07", nil},
		{"type=down mdraid=true imgFormat=1", []string{"refused imgFormat", "warning mdraid"}},
		{"type=sideways", []string{"refused type"}},
	} {
		var got []string
		for _, p := range Parse(base + tc.extra).Problems() {
			got = append(got, p.Severity.String()+" "+p.Key)
			if p.Text == "" || !strings.Contains(p.Error(), p.Key) {
				t.Errorf("%s: problem %+v says nothing", tc.extra, p)
			}
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: problems %q, want %q", tc.extra, got, tc.want)
		}
	}
}

func TestSplitStorage(t *testing.T) {
	ip, export, err := SplitStorage("10.0.0.5:/images/")
	if err != nil || ip.String() != "10.0.0.5" || export != "/images/" {
		t.Errorf("SplitStorage = %v %q %v", ip, export, err)
	}
	for _, bad := range []string{"", "10.0.0.5", "nfs.lab:/images", "[::1]:/images", "10.0.0.5:/a,b", "10.0.0.5:"} {
		if _, _, err := SplitStorage(bad); err == nil {
			t.Errorf("SplitStorage(%q) accepted", bad)
		}
	}
}

// FuzzParse checks that any command line parses without panicking, that
// every imported value is as FOS would have it, and that validation and
// problem listing cope with whatever came out.
func FuzzParse(f *testing.F) {
	f.Add(exampleLine)
	f.Add("a=b=c +_+=x y=+_++_+ =z\x00 nombr")
	f.Add("web=http://[::1 mac=00:00:00:00:00:00 type=down mc=YES port=-2 imgPartitionType=-1 fdrive=,,")
	f.Fuzz(func(t *testing.T, line string) {
		vars, _ := ParseCmdline(line)
		for k, v := range vars {
			// Only "+_+" can put a blank into a value.
			if k == "" || v == "" || strings.ContainsAny(k, "= \t\n\x00") || strings.ContainsAny(v, "=\t\n\x00") {
				t.Fatalf("imported %q=%q", k, v)
			}
			if strings.Contains(v, "+_+") {
				t.Fatalf("value %q still holds +_+", v)
			}
		}
		task := Parse(line)
		_ = task.Validate()
		_ = task.Problems()
		_ = task.Partition()
		if task.Web != "" && !strings.HasSuffix(task.Web, "/") {
			t.Fatalf("web %q has no trailing slash", task.Web)
		}
		if Detect(line) && (task.Vars["web"] == "" || task.MAC == "") {
			t.Fatalf("detected without web and mac: %q", line)
		}
	})
}
