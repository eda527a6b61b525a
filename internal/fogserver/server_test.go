package fogserver

import (
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/pkg/fog"
)

func TestPHPDecoding(t *testing.T) {
	for in, want := range map[string]string{
		"aGVsbG8=":      "hello",
		"aGVsbG8":       "hello", // no padding
		"!!aGVs\nbG8==": "hello", // bytes outside the alphabet are skipped
		"YWI+":          "ab>",
		"YWI ":          "ab",  // the '+' PHP made a space is lost
		"YWI+a":         "ab>", // a lone trailing character is dropped
		"":              "",
	} {
		if got := string(phpBase64Decode(in)); got != want {
			t.Errorf("phpBase64Decode(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"cmV2ID5 IDI=":      "rev >~ 2",          // the space PHP made of '+' goes back
		"MDA6MWE6MmI6M2M=":  "00:1a:2b:3c",       // base64 of a MAC
		"00:1a:2b:3c:4d:5e": "00:1a:2b:3c:4d:5e", // plain, decodes to invalid UTF-8: kept
		"IGEgCg==":          "a",                 // trimmed
	} {
		if got := stripAndDecode(in); got != want {
			t.Errorf("stripAndDecode(%q) = %q, want %q", in, got, want)
		}
	}
}

func post(t *testing.T, h http.Handler, script, body string) (int, string) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/fog/service/"+script, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(b)
}

func TestAnswers(t *testing.T) {
	srv := New(Config{})
	srv.AddSession(Session{Name: "s", Port: 9000})
	srv.AddHost(Host{Name: "pc1", MAC: "52:54:00:00:00:01", Task: &Task{Type: Multicast, Session: "s", Queue: []string{QueueFull}}})
	srv.AddHost(Host{Name: "pc2", MAC: "52:54:00:00:00:02"})
	h := srv.Handler()
	for _, tc := range []struct{ script, body, want string }{
		{"mc_checkin.php", "mac=zz&type=down", AnswerInvalidMAC},
		{"mc_checkin.php", "mac=52:54:00:00:00:99&type=down", AnswerInvalid},
		{"Pre_Stage1.php", "mac=52:54:00:00:00:02&type=down", "No Active Task found for Host: pc2 (52:54:00:00:00:02)"},
		{"mc_checkin.php", "mac=52-54-00-00-00-99|52:54:00:00:00:01&type=down", QueueFull},
		{"mc_checkin.php", "mac=52:54:00:00:00:01&type=down", AnswerGo},
		{"progress.php", "mac=52:54:00:00:00:01&status=" + url.QueryEscape(encode("  1.00GB@00:00:01@00:00:02@1 iB@3 iB@ 33.33@3.000000")), ""},
		{"inventory.php", "mac=" + url.QueryEscape(encode("52:54:00:00:00:01|52:54:00:00:00:03")) + "&sysman=UUVNVQ==", "Done"},
		{"blame.php", "mac=52:54:00:00:00:02&type=down", "No Active Task found for Host: pc2 (52:54:00:00:00:02)"},
		{"Post_Stage3.php", "mac=52:54:00:00:00:01&type=down", AnswerDone},
		{"Post_Stage3.php", "mac=52:54:00:00:00:01&type=down", "No Active Task found for Host: pc1 (52:54:00:00:00:01)"},
		{"taskerror.php", "mac=52:54:00:00:00:01&type=error&text=x", ""},
	} {
		if code, got := post(t, h, tc.script, tc.body); code != http.StatusOK || got != tc.want {
			t.Errorf("%s %s: %d %q, want %q", tc.script, tc.body, code, got, tc.want)
		}
	}
	st := srv.Status("52:54:00:00:00:01")
	if st.State != StateComplete || st.Percent != " 33.33" || st.Inventory["sysman"] != "QEMU" || len(st.Errors) != 1 {
		t.Errorf("status %+v", st)
	}
	if s := srv.Session("s"); s.Clients != 0 {
		t.Errorf("session clients %d after check-in and completion", s.Clients)
	}
	if n := len(srv.Calls()); n != 11 {
		t.Errorf("%d calls recorded, want 11", n)
	}
	if calls := srv.Calls("service/progress.php"); len(calls) != 1 || calls[0].Status[5] != " 33.33" {
		t.Errorf("progress calls %+v", calls)
	}
}

// FOS posts base64 without url-encoding it: the server sees what PHP sees.
func TestProgressLikePHP(t *testing.T) {
	srv := New(Config{})
	srv.AddHost(Host{Name: "pc1", MAC: "52:54:00:00:00:01", Task: &Task{Type: Deploy}})
	h := srv.Handler()
	post(t, h, "Pre_Stage1.php", "mac=52:54:00:00:00:01")
	// base64 of "ab>@b@c@d@e@f" has a '+' that PHP turns into a space.
	line := "ab>@b@c@d@e@f"
	code, _ := post(t, h, "progress.php", "mac=52:54:00:00:00:01&status="+encode(line))
	got := srv.Calls("service/progress.php")[0].Status
	if code != http.StatusOK || strings.Join(got, "@") == line {
		t.Errorf("a raw '+' survived: %q", got)
	}
	post(t, h, "progress.php", "mac=52:54:00:00:00:01&status="+url.QueryEscape(encode(line)))
	if got := srv.Calls("service/progress.php")[1].Status; strings.Join(got, "@") != line {
		t.Errorf("url-encoded status decoded as %q", got)
	}
}

func TestVersionAndPages(t *testing.T) {
	for _, tc := range []struct {
		cfg          Config
		target, want string
		code         int
	}{
		{Config{}, "/fog/service/getversion.php", "1.5.10", 200},
		{Config{}, "/fog/service/getversion.php?caps=1", "1.5.10", 200},
		{Config{Caps: true, Version: "1.6.0"}, "/fog/service/getversion.php?caps=1", "mclvm mcstreamid", 200},
		{Config{Caps: true, Version: "1.6.0"}, "/fog/service/getversion.php", "1.6.0", 200},
		{Config{}, "/fog//index.php", "<html><head><title>FOG Project</title></head></html>", 200},
		{Config{TaskErrorMissing: true}, "/fog/service/taskerror.php", "404 page not found\n", 404},
		{Config{}, "/other/service/getversion.php", "404 page not found\n", 404},
	} {
		w := httptest.NewRecorder()
		New(tc.cfg).Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, tc.target, nil))
		if w.Code != tc.code || w.Body.String() != tc.want {
			t.Errorf("%+v %s: %d %q", tc.cfg, tc.target, w.Code, w.Body.String())
		}
	}
}

// The boot script carries FOG 1.5.x's kernel line verbatim, with our file
// names, and pkg/fog reads the task back from it.
func TestBootScript(t *testing.T) {
	srv := New(Config{Boot: Boot{Kernel: "bzImage", Init: "init.xz", Files: map[string]string{"bzImage": "/dev/null"}}})
	srv.AddSession(Session{Name: "lab", Port: 54320, MaxWait: 10})
	task := &Task{Type: Multicast, Session: "lab", Hostname: "lab-07", HostEarly: true,
		Image: Image{Name: "Win10Lab", ID: 12, Type: "n", PartitionType: "all", Format: 5, OSID: 9, Compress: 19}}
	srv.AddHost(Host{Name: "lab-07", MAC: "00:1a:2b:3c:4d:5e", Task: task})
	w := httptest.NewRecorder()
	srv.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "http://10.0.0.5/fog/service/ipxe/boot.php?mac0=00:1a:2b:3c:4d:5e&arch=x86_64", nil))
	want := "#!ipxe\nkernel bzImage loglevel=4 initrd=init.xz root=/dev/ram0 rw ramdisk_size=275000 web=http://10.0.0.5/fog/ consoleblank=0 rootfstype=ext4 nvme_core.default_ps_max_latency_us=0 setmacto=${setmacto} mac=00:1a:2b:3c:4d:5e ftp=10.0.0.5 storage=10.0.0.5:/images/ storageip=10.0.0.5 osid=9 irqpoll hostname=lab-07 chkdsk=0 img=Win10Lab imgType=n imgPartitionType=all imgid=12 imgFormat=5 PIGZ_COMP=-19 hostearly=1 port=54320 mcastMaxWait=10 type=down mc=yes\nimgfetch init.xz\nboot\n"
	if got := w.Body.String(); got != want {
		t.Errorf("boot script\n got %q\nwant %q", got, want)
	}
	line := strings.TrimPrefix(strings.Split(w.Body.String(), "\n")[1], "kernel ")
	if !fog.Detect(line) {
		t.Error("pkg/fog does not detect the task")
	}
	parsed := fog.Parse(strings.ReplaceAll(line, "${setmacto}", ""))
	if err := parsed.Validate(); err != nil || parsed.Port != 54320 || parsed.Img != "Win10Lab" || !parsed.Multicast() {
		t.Errorf("pkg/fog reads %+v, %v", parsed, err)
	}

	w = httptest.NewRecorder()
	srv.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/fog/service/ipxe/boot.php?mac=52:54:00:00:00:99", nil))
	if !strings.Contains(w.Body.String(), "exit") {
		t.Errorf("a host without a task: %q", w.Body.String())
	}
	w = httptest.NewRecorder()
	srv.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/fog/service/ipxe/bzImage", nil))
	if w.Code != http.StatusOK {
		t.Errorf("kernel file: %d", w.Code)
	}
}

func encode(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
