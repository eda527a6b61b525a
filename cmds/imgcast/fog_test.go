package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/fogimages"
	"github.com/imgcast/imgcast/internal/fogserver"
	"github.com/imgcast/imgcast/internal/fogtest"
	"github.com/imgcast/imgcast/pkg/fogmc"
	"github.com/imgcast/imgcast/pkg/imaging"
	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/layout"
	"github.com/imgcast/imgcast/pkg/nfsmount"
	"github.com/imgcast/imgcast/pkg/receiver"
	"github.com/imgcast/imgcast/pkg/restore/fogplan"
	"github.com/imgcast/imgcast/pkg/restore/growfs"
)

var fogStore struct {
	once       sync.Once
	store, ref string
	err        error
}

// fogImages builds FOG's test images once (internal/fogimages).
func fogImages(t *testing.T) (store, ref string) {
	t.Helper()
	fogtest.Need(t, "sfdisk", "sgdisk", "mkfs.ext4", "mkntfs", "ntfscp", "mkswap", "mkfs.vfat", "mcopy",
		"partclone.ext4", "partclone.ntfs", "partclone.fat16", "partclone.imager", "zstd", "pigz", "split")
	s := &fogStore
	s.once.Do(func() {
		dir, err := os.MkdirTemp("", "imgcast-fogmode-")
		if err != nil {
			s.err = err
			return
		}
		s.store, s.ref = filepath.Join(dir, "images"), filepath.Join(dir, "reference")
		s.err = fogimages.Build(s.store, s.ref)
	})
	if s.err != nil {
		t.Fatal(s.err)
	}
	return s.store, s.ref
}

// fogRig is the agent in FOG mode against the fake FOG server, with the
// store as a local folder and disk files.
type fogRig struct {
	a      *agent
	server *fogserver.Server
	host   fogserver.Host
	out    *bytes.Buffer
	disks  []string
	grown  []string
	mounts int
}

func newFogRig(t *testing.T, store string, cfg fogserver.Config, task *fogserver.Task, diskMiB ...int) *fogRig {
	t.Helper()
	srv := fogserver.New(cfg)
	if task.Type == fogserver.Multicast {
		srv.AddSession(fogserver.Session{Name: task.Session, Port: 9000, MaxWait: 1})
	}
	h := fogserver.Host{Name: "pc1", MAC: "52:54:00:00:00:01", Task: task}
	srv.AddHost(h)
	cmdline := srv.KernelLine(h, "http://10.0.0.5/fog/")
	out := &bytes.Buffer{}
	a := newAgent(strings.NewReader(""), out, out)
	a.settings = defaultSettings()
	a.fogTask = fogTaskFrom(cmdline)
	if a.fogTask == nil {
		t.Fatalf("no FOG task found in %q", cmdline)
	}
	applyFOG(a.settings, a.fogTask, cmdline)
	a.settings.StartTimeout, a.settings.NextStartTimeout = 5*time.Second, 5*time.Second
	a.fogHTTP = srv.Client()
	r := &fogRig{a: a, server: srv, host: h, out: out}
	var disks []fogplan.Disk
	for i, mib := range diskMiB {
		p := filepath.Join(t.TempDir(), fmt.Sprintf("vd%c", 'a'+i))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, int64(mib)<<20); err != nil {
			t.Fatal(err)
		}
		r.disks = append(r.disks, p)
		disks = append(disks, fogplan.Disk{Disk: inventory.Disk{Name: filepath.Base(p), Path: p, SizeBytes: uint64(mib) << 20, SectorSize: 512}})
	}
	a.fogEnv = fogEnv{
		images: store,
		mount: func(ctx context.Context, storage, images string) error {
			r.mounts++
			if _, err := os.Stat(filepath.Join(images, nfsmount.Marker)); err != nil {
				return &nfsmount.Error{Kind: nfsmount.ErrNoMarker, Err: err, Hint: "no marker"}
			}
			return nil
		},
		disks: func(context.Context) ([]fogplan.Disk, error) { return disks, nil },
		grow: func(_ context.Context, disk string, n int, fs string) (*growfs.Result, error) {
			r.grown = append(r.grown, fmt.Sprintf("%s%d:%s", filepath.Base(disk), n, fs))
			return &growfs.Result{Skipped: "test"}, nil
		},
		progressInterval: 20 * time.Millisecond,
	}
	return r
}

// calls lists the service scripts called, in order, without progress.php.
func (r *fogRig) calls() []string {
	var out []string
	for _, c := range r.server.Calls() {
		if s := strings.TrimPrefix(c.Script, "service/"); s != "progress.php" {
			out = append(out, s)
		}
	}
	return out
}

// sameBytes compares partition n's bytes on a disk with a reference disk.
func sameBytes(t *testing.T, got, want string, off, size int64) {
	t.Helper()
	a, b := make([]byte, size), make([]byte, size)
	fa, _ := os.Open(got)
	fb, _ := os.Open(want)
	defer fa.Close()
	defer fb.Close()
	fa.ReadAt(a, off)
	fb.ReadAt(b, off)
	if !bytes.Equal(a, b) {
		t.Errorf("%s differs from %s at %d+%d", got, want, off, size)
	}
}

// TestFogUnicastQueued: a unicast deploy of the mps image queued twice
// ("No open slots…") before ##@GO: the queue messages are shown, the
// partitions are byte-identical to the source disk's, FOG sees check-ins,
// inventory, progress and one Post_Stage3.
func TestFogUnicastQueued(t *testing.T) {
	store, ref := fogImages(t)
	task := &fogserver.Task{Type: fogserver.Deploy, Queue: []string{fogserver.QueueFull, fogserver.QueueFull},
		Image: fogserver.Image{Name: fogimages.MultiPart, Type: "mps", Format: 0, OSID: 50}}
	r := newFogRig(t, store, fogserver.Config{}, task, 64)
	fastCheckIn(r)
	if err := r.a.fogJob(context.Background()); err != nil {
		t.Fatalf("%v\n%s", err, r.out)
	}
	if n := strings.Count(r.out.String(), "No open slots, There are 0 before me. (in line for"); n != 2 {
		t.Errorf("queue messages shown %d times, want 2:\n%s", n, r.out)
	}
	want := "Pre_Stage1.php Pre_Stage1.php Pre_Stage1.php inventory.php Post_Stage3.php"
	if got := strings.Join(r.calls(), " "); !strings.Contains(got, want) || strings.Count(got, "Post_Stage3") != 1 {
		t.Errorf("calls %q, want %q", got, want)
	}
	for _, p := range [][2]int64{{2048, 40960}, {43008, 32768}} {
		sameBytes(t, r.disks[0], filepath.Join(ref, "fog-mps.raw"), p[0]*512, p[1]*512)
	}
	if st := r.server.Status(r.host.MAC); st.State != fogserver.StateComplete {
		t.Errorf("FOG has %+v", st)
	}
}

// fastCheckIn makes the check-in loop quick for tests.
func fastCheckIn(r *fogRig) {
	r.a.fogEnv.checkInInterval = 10 * time.Millisecond
}

// TestFogNoMarker: an export without .mntcheck: blame.php, a clear error,
// taskerror.php, and nothing written.
func TestFogNoMarker(t *testing.T) {
	store, _ := fogImages(t)
	empty := t.TempDir()
	if err := os.Symlink(filepath.Join(store, fogimages.MultiPart), filepath.Join(empty, fogimages.MultiPart)); err != nil {
		t.Fatal(err)
	}
	task := &fogserver.Task{Type: fogserver.Deploy, Image: fogserver.Image{Name: fogimages.MultiPart, Type: "mps", Format: 0, OSID: 50}}
	r := newFogRig(t, empty, fogserver.Config{}, task, 64)
	err := r.a.fogJob(context.Background())
	if !errors.Is(err, nfsmount.ErrNoMarker) || !strings.Contains(failureText(err), ".mntcheck") {
		t.Fatalf("error %v, want a missing .mntcheck", err)
	}
	got := strings.Join(r.calls(), " ")
	if !strings.Contains(got, "blame.php") || !strings.HasSuffix(got, "taskerror.php") || strings.Contains(got, "Post_Stage3") {
		t.Errorf("calls %q", got)
	}
	if b, _ := os.ReadFile(r.disks[0]); bytes.ContainsFunc(b, func(r rune) bool { return r != 0 }) {
		t.Error("the disk was written")
	}
}

// fakeSender plays the session's streams, in FOG's order, to the agent's
// receivers: each call of receive gets the next stream.
type fakeSender struct {
	mu      sync.Mutex
	streams [][]byte
	ports   []int
}

func (f *fakeSender) receive(ctx context.Context, cfg receiver.Config, w io.Writer) (receiver.Progress, error) {
	f.mu.Lock()
	f.ports = append(f.ports, cfg.Port)
	if len(f.streams) == 0 {
		f.mu.Unlock()
		return receiver.Progress{}, errors.New("no more streams")
	}
	s := f.streams[0]
	f.streams = f.streams[1:]
	f.mu.Unlock()
	_, err := w.Write(s)
	return receiver.Progress{}, err
}

// sessionStreams is what FOG's manager sends for an image folder.
func sessionStreams(t *testing.T, dir string, typ layout.ImageType, gen layout.Generation) [][]byte {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	var files []layout.File
	for _, e := range entries {
		files = append(files, layout.File{Name: e.Name()})
	}
	ls, err := layout.FOG(files, layout.FOGOptions{Type: typ, Generation: gen, PortBase: 9000})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, s := range ls {
		var b []byte
		if gen == layout.FOG16 {
			h, _ := fogmc.Format(s.ID)
			b = append(b, h...)
		}
		for _, f := range s.Files {
			data, _ := os.ReadFile(filepath.Join(dir, f))
			b = append(b, data...)
		}
		out = append(out, b)
	}
	return out
}

// TestFogMulticast: the n image (1.6 headers) and the mps image (1.5, its
// extended partition's stream received and dropped) by multicast: one
// receiver per stream, all on port=, growth asked for the resizable
// partitions, Post_Stage3 once.
func TestFogMulticast(t *testing.T) {
	store, ref := fogImages(t)
	for _, tc := range []struct {
		img, typ string
		format   int
		caps     bool
		gen      layout.Generation
		streams  int
		grown    string
	}{
		{fogimages.Resizable, "n", 5, true, layout.FOG16, 2, "vda1:EXTFS vda3:NTFS"},
		{fogimages.MultiPart, "mps", 0, false, layout.FOG15, 3, ""},
	} {
		t.Run(tc.img, func(t *testing.T) {
			task := &fogserver.Task{Type: fogserver.Multicast, Session: "s1",
				Image: fogserver.Image{Name: tc.img, Type: tc.typ, Format: tc.format, OSID: 50}}
			r := newFogRig(t, store, fogserver.Config{Caps: tc.caps}, task, 160)
			fastCheckIn(r)
			snd := &fakeSender{streams: sessionStreams(t, filepath.Join(store, tc.img), layout.ImageType(tc.typ), tc.gen)}
			r.a.receive = snd.receive
			if err := r.a.fogJob(context.Background()); err != nil {
				t.Fatalf("%v\n%s", err, r.out)
			}
			if len(snd.ports) != tc.streams || len(snd.streams) != 0 {
				t.Errorf("receivers on ports %v, %d streams left", snd.ports, len(snd.streams))
			}
			for _, p := range snd.ports {
				if p != 9000 {
					t.Errorf("a receiver on port %d, want port= 9000", p)
				}
			}
			if got := strings.Join(r.grown, " "); got != tc.grown {
				t.Errorf("grown %q, want %q", got, tc.grown)
			}
			got := strings.Join(r.calls(), " ")
			if !strings.HasPrefix(got, "getversion.php getversion.php mc_checkin.php") || strings.Count(got, "Post_Stage3.php") != 1 {
				t.Errorf("calls %q", got)
			}
			if tc.typ == "mps" {
				sameBytes(t, r.disks[0], filepath.Join(ref, "fog-mps.raw"), 2048*512, 40960*512)
			}
		})
	}
}

// TestFogModeChoice: a FOG task line chooses FOG mode unless
// imgcast.image or imgcast.mode choose imgcast's own; the task sets the
// server, NIC, rendezvous, after-action and debug mode unless imgcast.*
// words say otherwise.
func TestFogModeChoice(t *testing.T) {
	const task = "web=http://10.0.0.5/fog/ mac=52:54:00:00:00:01 storage=10.0.0.5:/images/ storageip=10.0.0.5 img=x imgType=n port=9000 mcastMaxWait=10 type=down"
	for _, tc := range []struct {
		name, cmdline string
		fog           bool
		mode          Mode
		after         After
		rdv, server   string
		start         time.Duration
	}{
		{"multicast", task + " mc=yes", true, ModeMulticast, AfterReboot, "10.0.0.5", "10.0.0.5", 11 * time.Minute},
		{"unicast, shutdown", task + " shutdown=1", true, ModeUnicast, AfterPowerOff, "10.0.0.5", "10.0.0.5", 11 * time.Minute},
		{"mcastrdv", task + " mc=yes mcastrdv=239.1.2.3", true, ModeMulticast, AfterReboot, "239.1.2.3", "10.0.0.5", 11 * time.Minute},
		{"debug", task + " isdebug=yes", true, ModeDebug, AfterReboot, "10.0.0.5", "10.0.0.5", 11 * time.Minute},
		{"imgcast keys tune", task + " mc=yes shutdown=1 imgcast.after=shell imgcast.rdv=10.0.0.9 imgcast.starttimeout=30m", true, ModeMulticast, AfterShell, "10.0.0.9", "10.0.0.5", 30 * time.Minute},
		{"imgcast.image wins", task + " imgcast.image=http://10.0.0.7/images/x/", false, ModeMulticast, AfterReboot, "", "", 10 * time.Minute},
		{"imgcast.mode wins", task + " imgcast.mode=debug", false, ModeDebug, AfterReboot, "", "", 10 * time.Minute},
		{"no task", "console=ttyS0 web=http://10.0.0.5/fog/", false, ModeMulticast, AfterReboot, "", "", 10 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := parseSettings(tc.cmdline)
			if err != nil {
				t.Fatal(err)
			}
			ft := fogTaskFrom(tc.cmdline)
			if (ft != nil) != tc.fog {
				t.Fatalf("FOG mode %v, want %v", ft != nil, tc.fog)
			}
			if ft != nil {
				applyFOG(s, ft, tc.cmdline)
			}
			if s.Mode != tc.mode || s.After != tc.after || s.StartTimeout != tc.start {
				t.Errorf("mode %s after %s start timeout %s, want %s %s %s", s.Mode, s.After, s.StartTimeout, tc.mode, tc.after, tc.start)
			}
			if got := fmt.Sprint(s.Rendezvous); tc.rdv != "" && got != tc.rdv {
				t.Errorf("rendezvous %s, want %s", got, tc.rdv)
			}
			if got := fmt.Sprint(s.Server); tc.server != "" && got != tc.server {
				t.Errorf("server %s, want %s", got, tc.server)
			}
			if ft != nil && s.MAC.String() != "52:54:00:00:00:01" {
				t.Errorf("MAC %s", s.MAC)
			}
		})
	}
}

// TestFogNoSender: no sender answers the first stream within the start
// timeout: a clear error naming FOG's multicast manager, reported to FOG
// (taskerror.php), no completion, nothing left on the disk that could
// pass for imaged.
func TestFogNoSender(t *testing.T) {
	store, _ := fogImages(t)
	task := &fogserver.Task{Type: fogserver.Multicast, Session: "s1",
		Image: fogserver.Image{Name: fogimages.MultiPart, Type: "mps", Format: 0, OSID: 50}}
	r := newFogRig(t, store, fogserver.Config{}, task, 64)
	fastCheckIn(r)
	r.a.receive = func(ctx context.Context, cfg receiver.Config, w io.Writer) (receiver.Progress, error) {
		return receiver.Progress{}, &receiver.StartTimeoutError{Timeout: cfg.StartTimeout}
	}
	err := r.a.fogJob(context.Background())
	if !errors.Is(err, imaging.ErrNoSender) || !strings.Contains(failureText(err), "FOGMulticastManager") {
		t.Fatalf("error %v", err)
	}
	if st := r.server.Status(r.host.MAC); len(st.Errors) != 1 || !strings.Contains(st.Errors[0], "d1p1.img") {
		t.Errorf("FOG has errors %q", st.Errors)
	}
	if got := strings.Join(r.calls(), " "); strings.Contains(got, "Post_Stage3") {
		t.Errorf("calls %q", got)
	}
	b, _ := os.ReadFile(r.disks[0])
	if len(b) >= 1024 && (b[510] == 0x55 && b[511] == 0xaa) {
		t.Error("the partition table is still on the disk after the failure")
	}
}

// TestFogHeaderRequired: a server that advertises mcstreamid but sends a
// stream without its FOGMC1 header: refused before its data is written.
func TestFogHeaderRequired(t *testing.T) {
	store, _ := fogImages(t)
	task := &fogserver.Task{Type: fogserver.Multicast, Session: "s1",
		Image: fogserver.Image{Name: fogimages.MultiPart, Type: "mps", Format: 0, OSID: 50}}
	r := newFogRig(t, store, fogserver.Config{Caps: true}, task, 64)
	fastCheckIn(r)
	snd := &fakeSender{streams: sessionStreams(t, filepath.Join(store, fogimages.MultiPart), layout.TypeMultiPartSingle, layout.FOG15)}
	r.a.receive = snd.receive
	err := r.a.fogJob(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no FOGMC1 header naming d1p1.img") {
		t.Fatalf("error %v, want the missing header", err)
	}
}

// TestFogRawFailureWiped: a dd image (no table plan) whose stream breaks
// half-way leaves no boot sector or GPT behind: what was written is wiped.
func TestFogRawFailureWiped(t *testing.T) {
	store, _ := fogImages(t)
	task := &fogserver.Task{Type: fogserver.Multicast, Session: "s1",
		Image: fogserver.Image{Name: fogimages.WholeDisk, Type: "dd", Format: 5, OSID: 50}}
	r := newFogRig(t, store, fogserver.Config{}, task, 64)
	fastCheckIn(r)
	streams := sessionStreams(t, filepath.Join(store, fogimages.WholeDisk), layout.TypeRaw, layout.FOG15)
	r.a.receive = func(ctx context.Context, cfg receiver.Config, w io.Writer) (receiver.Progress, error) {
		s := streams[0]
		if _, err := w.Write(s[:len(s)*3/4]); err != nil {
			return receiver.Progress{}, err
		}
		return receiver.Progress{}, errors.New("sender went silent")
	}
	err := r.a.fogJob(context.Background())
	if err == nil || !strings.Contains(err.Error(), "wiped") {
		t.Fatalf("error %v, want a failure that says the disk was wiped", err)
	}
	b, _ := os.ReadFile(r.disks[0])
	if len(b) < 1<<20 {
		t.Fatalf("disk file is %d bytes", len(b))
	}
	for i, c := range b[:1<<20] {
		if c != 0 {
			t.Fatalf("byte %d of the disk is %#x after the failure: the first MiB must be wiped", i, c)
		}
	}
}
