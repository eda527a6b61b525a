package imaging

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/defaultimage"
	"github.com/imgcast/imgcast/internal/testtools"
	"github.com/imgcast/imgcast/pkg/fogmc"
	"github.com/imgcast/imgcast/pkg/layout"
	"github.com/imgcast/imgcast/pkg/receiver"
	"github.com/imgcast/imgcast/pkg/status"
)

func TestMain(m *testing.M) {
	code := m.Run()
	defaultimage.RemoveShared()
	os.Exit(code)
}

// defaultImage is the default image (a GPT disk with ext4 and FAT32,
// captured FOG-style) and the raw disk it was captured from, built once.
func defaultImage(t *testing.T) (dir, ref string) {
	t.Helper()
	dir, ref, err := defaultimage.Shared(testtools.Find)
	if err != nil {
		testtools.Missing(t, fmt.Errorf("default image: %w", err))
	}
	return dir, ref
}

// copyImage copies the image folder so a test may damage its copy.
func copyImage(t *testing.T, dir string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "img")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// zeroDisk makes a sparse, zero-filled disk file: restore leaves unused
// filesystem blocks untouched, and the reference has zeros there.
func zeroDisk(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// blankDisk makes a disk file filled with a pattern, so that any write
// shows.
func blankDisk(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.raw")
	chunk := bytes.Repeat([]byte{0x5a}, 1<<20)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for off := int64(0); off < size; off += int64(len(chunk)) {
		if _, err := f.Write(chunk[:min(int64(len(chunk)), size-off)]); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func region(t *testing.T, path string, off, size int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, size)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func assertPartitionsMatch(t *testing.T, disk, ref string) {
	t.Helper()
	if err := defaultimage.ComparePartitions(disk, ref); err != nil {
		t.Error(err)
	}
}

func assertUntouched(t *testing.T, disk string) {
	t.Helper()
	b := region(t, disk, 0, defaultimage.DiskSize)
	if i := bytes.IndexFunc(b, func(r rune) bool { return r != 0x5a }); i >= 0 {
		t.Fatalf("disk was written at byte %d although the job failed before writing", i)
	}
}

// recorder keeps every report.
type recorder struct {
	mu      sync.Mutex
	reports []status.Report
}

func (r *recorder) Update(rep status.Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reports = append(r.reports, rep)
}

func (r *recorder) states() []status.State {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []status.State
	for _, rep := range r.reports {
		if len(out) == 0 || out[len(out)-1] != rep.State {
			out = append(out, rep.State)
		}
	}
	return out
}

func (r *recorder) last() status.Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reports[len(r.reports)-1]
}

// fakeReceiver plays the multicast side in-process: it streams the image
// file of each partition from a folder, with a FOGMC1 header unless told
// otherwise, and can fail in the ways a real session fails. Its receive
// is the Config's Receive; stream i is the i-th file of files (default
// d1p1.img, d1p2.img) on port 9000+2*i.
type fakeReceiver struct {
	dir   string
	files []string
	// byPort, when set, says which file each port sends instead.
	byPort   map[int]string
	noHeader bool
	// panics makes the receiver panic (a bug).
	panics bool
	// wrongID sends the header of another file for stream i.
	wrongID map[int]string
	// failAt makes stream i fail with err after n bytes (n < 0: before
	// anything, as when no sender answers).
	failAt map[int]failure

	mu      sync.Mutex
	configs []receiver.Config
}

type failure struct {
	after int64
	err   error
}

func (f *fakeReceiver) receive(ctx context.Context, cfg receiver.Config, w io.Writer) (receiver.Progress, error) {
	f.mu.Lock()
	f.configs = append(f.configs, cfg)
	f.mu.Unlock()
	files := f.files
	if files == nil {
		files = []string{"d1p1.img", "d1p2.img"}
	}
	if f.panics {
		var m map[int]int
		m[cfg.Port]++
	}
	index := (cfg.Port - 9000) / 2
	if f.byPort != nil {
		index = 0
		if _, ok := f.byPort[cfg.Port]; !ok {
			index = -1
		}
		files = []string{f.byPort[cfg.Port]}
	}
	if index < 0 || index >= len(files) {
		return receiver.Progress{}, &receiver.StartTimeoutError{Timeout: cfg.StartTimeout}
	}
	name := files[index]
	fail, failing := f.failAt[index]
	if failing && fail.after < 0 {
		return receiver.Progress{}, fail.err
	}
	if !f.noHeader {
		id := layout.StreamID(name)
		if wrong, ok := f.wrongID[index]; ok {
			id = wrong
		}
		h, err := fogmc.Format(id)
		if err != nil {
			return receiver.Progress{}, err
		}
		if _, err := w.Write(h); err != nil {
			return receiver.Progress{}, err
		}
	}
	file, err := os.Open(filepath.Join(f.dir, name))
	if err != nil {
		return receiver.Progress{}, err
	}
	defer file.Close()
	var r io.Reader = file
	if failing {
		r = io.LimitReader(file, fail.after)
	}
	if _, err := io.Copy(w, r); err != nil {
		return receiver.Progress{}, err
	}
	if failing {
		return receiver.Progress{}, fail.err
	}
	return receiver.Progress{}, ctx.Err()
}

func httpFolder(t *testing.T, dir string) string {
	t.Helper()
	srv := httptest.NewServer(http.StripPrefix("/images/default/", http.FileServer(http.Dir(dir))))
	t.Cleanup(srv.Close)
	return srv.URL + "/images/default/"
}

func newConfig(t *testing.T, image, disk string, transfer Transfer, rcv *fakeReceiver) (Config, *recorder, *bytes.Buffer) {
	rec := &recorder{}
	console := &bytes.Buffer{}
	cfg := Config{
		Image: image, Disk: DiskPath(disk), Transfer: transfer, PortBase: 9000,
		Reporter: rec, MAC: "52:54:00:12:34:56", IP: "10.99.0.11",
		Console: console, Logf: t.Logf,
	}
	if rcv != nil {
		cfg.Receive = rcv.receive
	}
	return cfg, rec, console
}

func TestMulticastRestoresEveryPartition(t *testing.T) {
	dir, ref := defaultImage(t)
	disk := zeroDisk(t, defaultimage.DiskSize)
	rcv := &fakeReceiver{dir: dir}
	cfg, rec, console := newConfig(t, dir, disk, Multicast, rcv)
	cfg.RequireStreamHeader = true

	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, console)
	}
	assertPartitionsMatch(t, disk, ref)
	if len(rcv.configs) != 2 || rcv.configs[0].Port != 9000 || rcv.configs[1].Port != 9002 ||
		res.Partitions[0].File != "d1p1.img" || res.Partitions[1].File != "d1p2.img" {
		t.Errorf("streams %+v, want d1p1.img on 9000 and d1p2.img on 9002", rcv.configs)
	}
	if res.Transfer != Multicast || len(res.Partitions) != 2 {
		t.Errorf("result %+v", res)
	}
	for _, p := range res.Partitions {
		info, _ := os.Stat(filepath.Join(dir, p.File))
		if p.Received != info.Size() {
			t.Errorf("%s: received %d bytes, file has %d (the header must not count)", p.File, p.Received, info.Size())
		}
	}
	got := rec.states()
	want := []status.State{status.Ready, status.Writing, status.Ready, status.Receiving, status.Ready, status.Receiving, status.Verifying, status.Done}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("states %v, want %v", got, want)
	}
	if inv := rec.reports[0].Inventory; inv == nil {
		t.Error("the ready report carries no inventory")
	}
	for _, r := range rec.reports {
		if r.MAC != "52:54:00:12:34:56" || r.IP != "10.99.0.11" {
			t.Fatalf("report without identity: %+v", r)
		}
	}
	if !strings.Contains(console.String(), "Imaging done") {
		t.Errorf("console does not say done:\n%s", console)
	}
}

func TestUnicastOverHTTP(t *testing.T) {
	dir, ref := defaultImage(t)
	disk := zeroDisk(t, defaultimage.DiskSize)
	cfg, rec, console := newConfig(t, httpFolder(t, dir), disk, Unicast, nil)
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, console)
	}
	assertPartitionsMatch(t, disk, ref)
	if res.Transfer != Unicast || rec.last().State != status.Done {
		t.Errorf("transfer %s, last state %s", res.Transfer, rec.last().State)
	}
	// The whole disk, tables included, matches when the target has the
	// reference's size.
	if !bytes.Equal(region(t, disk, 0, defaultimage.DiskSize), region(t, ref, 0, defaultimage.DiskSize)) {
		t.Error("disk differs from the reference disk")
	}
}

func TestFailures(t *testing.T) {
	dir, _ := defaultImage(t)
	senderGone := errors.New("sender went silent after 1.0 MiB")
	for _, tc := range []struct {
		name string
		// prepare may damage the image copy and returns the receiver.
		prepare   func(t *testing.T, img string) *fakeReceiver
		mode      Transfer
		fallback  bool
		session   *status.Session
		diskSize  int64
		wantErr   string
		untouched bool // nothing at all may be written to the disk
	}{
		{
			name: "sender killed mid-partition",
			prepare: func(t *testing.T, img string) *fakeReceiver {
				return &fakeReceiver{dir: img, failAt: map[int]failure{0: {1 << 20, senderGone}}}
			},
			mode: Multicast, wantErr: "partition 1: sender went silent",
		},
		{
			name: "sha256 mismatch",
			prepare: func(t *testing.T, img string) *fakeReceiver {
				// The image itself is intact (every partclone and gzip
				// check passes); only d1.sha256 disagrees with it.
				sums := filepath.Join(img, "d1.sha256")
				b, _ := os.ReadFile(sums)
				lines := strings.Split(string(b), "\n")
				for i, l := range lines {
					if strings.HasSuffix(l, "d1p2.img") {
						lines[i] = strings.Repeat("0", 64) + l[64:]
					}
				}
				os.WriteFile(sums, []byte(strings.Join(lines, "\n")), 0o644)
				return &fakeReceiver{dir: img}
			},
			mode: Multicast, wantErr: "partition 2: d1p2.img: SHA-256",
		},
		{
			name: "wrong stream",
			prepare: func(t *testing.T, img string) *fakeReceiver {
				return &fakeReceiver{dir: img, wrongID: map[int]string{1: "d1p1.img"}}
			},
			mode: Multicast, wantErr: `partition 2: stream header names "d1p1.img" but "d1p2.img" was expected`,
		},
		{
			name:    "no header but required",
			prepare: func(t *testing.T, img string) *fakeReceiver { return &fakeReceiver{dir: img, noHeader: true} },
			mode:    Multicast, wantErr: "no FOGMC1 header",
		},
		{
			name: "no sender, no fallback",
			prepare: func(t *testing.T, img string) *fakeReceiver {
				return &fakeReceiver{dir: img, failAt: map[int]failure{0: {-1, fmt.Errorf("%w on 10.99.0.1:9001 within 30s", ErrNoSender)}}}
			},
			mode: Multicast, wantErr: "no sender answered on 10.99.0.1:9001",
		},
		{
			name:    "session already running",
			prepare: func(t *testing.T, img string) *fakeReceiver { return &fakeReceiver{dir: img} },
			session: &status.Session{Phase: status.Sending, Message: "partition 1 is being sent since 12:00"},
			mode:    Multicast, wantErr: "booted too late", untouched: true,
		},
		{
			name:     "disk too small",
			prepare:  func(t *testing.T, img string) *fakeReceiver { return &fakeReceiver{dir: img} },
			diskSize: 40 << 20, mode: Multicast, wantErr: "needs a disk of at least 77.0 MiB", untouched: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := copyImage(t, dir)
			rcv := tc.prepare(t, img)
			size := tc.diskSize
			if size == 0 {
				size = defaultimage.DiskSize
			}
			disk := blankDisk(t, size)
			cfg, rec, console := newConfig(t, img, disk, tc.mode, rcv)
			cfg.RequireStreamHeader = true
			cfg.FallbackHTTP = tc.fallback
			if tc.session != nil {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					json.NewEncoder(w).Encode(tc.session)
				}))
				defer srv.Close()
				cfg.SessionURL = srv.URL + "/api/session"
			}
			_, err := Run(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q\nconsole:\n%s", err, tc.wantErr, console)
			}
			for _, r := range rec.reports {
				if r.State == status.Done {
					t.Fatal("a failed job reported done")
				}
			}
			if last := rec.last(); last.State != status.Failed || last.Error == "" {
				t.Errorf("last report %+v, want failed with a reason", last)
			}
			if !strings.Contains(console.String(), "IMAGING FAILED") {
				t.Errorf("console does not show the failure:\n%s", console)
			}
			if tc.untouched {
				if size == defaultimage.DiskSize {
					assertUntouched(t, disk)
				} else {
					b := region(t, disk, 0, size)
					if bytes.IndexFunc(b, func(r rune) bool { return r != 0x5a }) >= 0 {
						t.Fatal("disk was written although the job failed before writing")
					}
				}
			}
		})
	}
}

func TestFallbackToHTTP(t *testing.T) {
	dir, ref := defaultImage(t)
	for _, tc := range []struct {
		name    string
		rcv     *fakeReceiver
		session *status.Session
	}{
		{name: "no sender answers", rcv: &fakeReceiver{dir: dir, failAt: map[int]failure{0: {-1, fmt.Errorf("%w within 1s", ErrNoSender)}}}},
		{name: "session not joinable", rcv: &fakeReceiver{dir: dir}, session: &status.Session{Phase: status.Finished}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := zeroDisk(t, defaultimage.DiskSize)
			cfg, _, console := newConfig(t, httpFolder(t, dir), disk, Multicast, tc.rcv)
			cfg.FallbackHTTP = true
			if tc.session != nil {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					json.NewEncoder(w).Encode(tc.session)
				}))
				defer srv.Close()
				cfg.SessionURL = srv.URL
			}
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatalf("%v\nconsole:\n%s", err, console)
			}
			if res.Transfer != Unicast {
				t.Errorf("transfer %s after fallback", res.Transfer)
			}
			assertPartitionsMatch(t, disk, ref)
			if !strings.Contains(strings.ToLower(console.String()), "falling back to http") {
				t.Errorf("console does not tell about the fallback:\n%s", console)
			}
		})
	}
}

func TestFormatProgress(t *testing.T) {
	for _, tc := range []struct {
		done, total int64
		want        string
	}{
		{0, 0, "d1p1 0 B  wire   0.0 MB/s  disk   0.0 MB/s"},
		{512 << 20, 1 << 30, "d1p1 [############............]  50%"},
		{1 << 30, 1 << 30, "d1p1 [########################] 100%"},
	} {
		got := formatProgress("d1p1", tc.done, tc.total, 0, 0, 0)
		if !strings.HasPrefix(got, tc.want) {
			t.Errorf("formatProgress(%d, %d) = %q, want prefix %q", tc.done, tc.total, got, tc.want)
		}
	}
}

func sessionServer(t *testing.T, s status.Session) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(s)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/api/session"
}

// When the server's session lists its streams, the client takes each
// partition's port from it instead of computing portbase+2*i, and refuses
// a session that does not send what the folder holds before writing.
func TestPortsFromTheSession(t *testing.T) {
	dir, ref := defaultImage(t)
	streams := []status.Stream{
		{Index: 0, Partition: 1, ID: "d1p1.img", Port: 9100},
		{Index: 1, Partition: 2, ID: "d1p2.img", Port: 9200},
	}
	disk := zeroDisk(t, defaultimage.DiskSize)
	rcv := &fakeReceiver{dir: dir, byPort: map[int]string{9100: "d1p1.img", 9200: "d1p2.img"}}
	cfg, _, console := newConfig(t, dir, disk, Multicast, rcv)
	cfg.RequireStreamHeader = true
	cfg.SessionURL = sessionServer(t, status.Session{Phase: status.Waiting, Joinable: true, PortBase: 9100, Streams: streams})
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, console)
	}
	assertPartitionsMatch(t, disk, ref)
	if len(rcv.configs) != 2 || rcv.configs[0].Port != 9100 || rcv.configs[1].Port != 9200 {
		t.Errorf("received on %+v, want the session's ports 9100 and 9200", rcv.configs)
	}

	for _, tc := range []struct {
		name    string
		streams []status.Stream
		wantErr string
	}{
		{"another file for a partition", []status.Stream{streams[0], {Partition: 2, ID: "d1p3.img", Port: 9200}},
			`it sends "d1p3.img" for partition 2, the image folder has "d1p2.img"`},
		{"a partition missing", streams[:1], "it does not send partition 2 (d1p2.img)"},
		{"a hostile port", []status.Stream{streams[0], {Partition: 2, ID: "d1p2.img", Port: 70000}}, "it lists port 70000 for partition 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := blankDisk(t, defaultimage.DiskSize)
			cfg, _, _ := newConfig(t, dir, disk, Multicast, rcv)
			cfg.SessionURL = sessionServer(t, status.Session{Phase: status.Waiting, Joinable: true, Streams: tc.streams})
			_, err := Run(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			assertUntouched(t, disk)
		})
	}
}

// The receiver's configuration: the first stream waits long (the server
// waits for every client), later ones briefly; TTL; the receiver's
// messages reach Logf.
func TestReceiverConfig(t *testing.T) {
	dir, _ := defaultImage(t)
	disk := zeroDisk(t, defaultimage.DiskSize)
	rcv := &fakeReceiver{dir: dir}
	var logged []string
	var mu sync.Mutex
	cfg, _, console := newConfig(t, dir, disk, Multicast, rcv)
	cfg.FirstStartTimeout, cfg.NextStartTimeout, cfg.ReceiveTimeout = 10*time.Minute, 45*time.Second, 30*time.Second
	cfg.Rendezvous = netip.MustParseAddr("10.99.0.1")
	cfg.Interface = "eth0"
	cfg.Logf = func(format string, args ...any) {
		mu.Lock()
		logged = append(logged, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, console)
	}
	if len(rcv.configs) != 2 {
		t.Fatalf("%d receptions", len(rcv.configs))
	}
	first, next := rcv.configs[0], rcv.configs[1]
	if first.StartTimeout != 10*time.Minute || next.StartTimeout != 45*time.Second ||
		first.ReceiveTimeout != 30*time.Second || next.ReceiveTimeout != 30*time.Second {
		t.Errorf("start timeouts %s, %s, receive %s: want 10m then 45s, 30s", first.StartTimeout, next.StartTimeout, first.ReceiveTimeout)
	}
	if first.TTL != DefaultTTL || first.RendezvousAddr != cfg.Rendezvous || first.Interface != "eth0" {
		t.Errorf("config %+v", first)
	}
	if first.Logf == nil {
		t.Fatal("the receiver's messages go nowhere")
	}
	first.Logf("Connected as #%d to %s", 3, "10.99.0.1:9001")
	mu.Lock()
	if !slices.Contains(logged, "d1p1: Connected as #3 to 10.99.0.1:9001") {
		t.Errorf("receiver message not logged: %q", logged)
	}
	mu.Unlock()

	cfg.Rendezvous = netip.Addr{}
	cfg.NextStartTimeout = 0
	rcv.configs = nil
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if c := rcv.configs[1]; c.TTL != 1 || c.StartTimeout != DefaultNextStartTimeout {
		t.Errorf("without a rendezvous: TTL %d (want 1, the handshake stays on broadcast), next start timeout %s", c.TTL, c.StartTimeout)
	}
}

// A bug on a goroutine of the job ends the job as a reported failure, not
// a crash.
func TestPanicInTheReceiverFailsTheJob(t *testing.T) {
	dir, _ := defaultImage(t)
	disk := zeroDisk(t, defaultimage.DiskSize)
	cfg, rec, _ := newConfig(t, dir, disk, Multicast, &fakeReceiver{dir: dir, panics: true})
	_, err := Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "internal error (a bug in imgcast) in the receiver of d1p1.img") {
		t.Fatalf("err = %v", err)
	}
	if last := rec.last(); last.State != status.Failed {
		t.Errorf("last report %+v, want failed", last)
	}
}
