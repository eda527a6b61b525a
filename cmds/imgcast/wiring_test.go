package main

import (
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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/defaultimage"
	"github.com/imgcast/imgcast/internal/testfs"
	"github.com/imgcast/imgcast/internal/testtools"
	"github.com/imgcast/imgcast/pkg/fogmc"
	"github.com/imgcast/imgcast/pkg/imaging"
	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/mcastcheck"
	"github.com/imgcast/imgcast/pkg/netup"
	"github.com/imgcast/imgcast/pkg/power"
	"github.com/imgcast/imgcast/pkg/receiver"
	"github.com/imgcast/imgcast/pkg/status"
)

// TestAgentWiring drives the agent from a kernel command line to the
// calls it makes, with fakes for the network, the disk and the multicast
// receiver: the disk wait gets the named disk and its timeout (defect 1),
// the receiver's messages reach the console (defect 2), the first stream
// gets imgcast.starttimeout and the later ones imgcast.nextstarttimeout,
// with imgcast.ttl (defect 3), and the ready/done reports name the disk
// chosen (defect 4). imgcast.mcastcheck=1 runs the multicast check
// against the server first and reports its verdict, and
// imgcast.igmpinterval=0 turns the receiver's IGMP keep-alive off.
func TestAgentWiring(t *testing.T) {
	dir, ref, err := defaultimage.Shared(testtools.Find)
	if err != nil {
		testtools.Missing(t, err)
	}
	var reportsMu sync.Mutex
	var reports []status.Report
	mux := http.NewServeMux()
	mux.Handle("/images/default/", http.StripPrefix("/images/default/", http.FileServer(http.Dir(dir))))
	mux.HandleFunc("POST /api/status", func(w http.ResponseWriter, r *http.Request) {
		var rep status.Report
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		reportsMu.Lock()
		reports = append(reports, rep)
		reportsMu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	srv := httptest.NewServer(mux) // no /api/session: ports from the layout
	defer srv.Close()

	ta := newTestAgent(t, strings.NewReader(""), upOK)
	ta.root = testfs.Tree(t, map[string]string{
		"sys/block/vda/size": "2097152\n", "sys/block/vda/removable": "0\n",
		"sys/block/vdb/size": "204800\n", "sys/block/vdb/removable": "0\n", "sys/block/vdb/serial": "wire-1\n",
	}, nil)
	disk := filepath.Join(t.TempDir(), "vdb.raw")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, defaultimage.DiskSize); err != nil {
		t.Fatal(err)
	}
	var waited []inventory.DiskWait
	var minSize uint64
	ta.diskSource = func(w inventory.DiskWait) imaging.DiskSource {
		return diskSourceFunc(func(ctx context.Context, min uint64) (inventory.Disk, error) {
			waited, minSize = append(waited, w), min
			d, err := w.WaitDisk(ctx, min) // the real wait, on the fake sysfs
			d.Path = disk                  // …writing to a file instead of /dev/vdb
			return d, err
		})
	}
	var configs []receiver.Config
	ta.receive = func(ctx context.Context, cfg receiver.Config, w io.Writer) (receiver.Progress, error) {
		configs = append(configs, cfg)
		i := (cfg.Port - 9100) / 2
		if i < 0 || i > 1 {
			return receiver.Progress{}, fmt.Errorf("no sender on port %d", cfg.Port)
		}
		if cfg.Logf != nil {
			cfg.Logf("Connected as #%d to %s", i+1, "127.0.0.1:9101")
		}
		name := fmt.Sprintf("d1p%d.img", i+1)
		h, _ := fogmc.Format(name)
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return receiver.Progress{}, err
		}
		defer f.Close()
		if _, err := w.Write(h); err != nil {
			return receiver.Progress{}, err
		}
		_, err = io.Copy(w, f)
		return receiver.Progress{}, err
	}

	// imgcast.mcastcheck=1: the check runs against the server before
	// imaging, its PROBLEM is shown and reported, and imaging goes on.
	var checks []mcastcheck.Options
	ta.mcastCheck = func(ctx context.Context, opt mcastcheck.Options, println func(string)) (mcastcheck.Result, error) {
		checks = append(checks, opt)
		println("verdict: PROBLEM — no IGMP querier answered on eth0")
		return mcastcheck.Result{Verdict: "PROBLEM — no IGMP querier answered on eth0", Multicast: mcastcheck.Stats{Packets: 490, Expected: 500, LossPercent: 2},
			Querier: mcastcheck.Querier{Checked: true}}, nil
	}

	cmdline := "console=ttyS0 imgcast.mode=multicast imgcast.server=127.0.0.1 imgcast.image=" + srv.URL + "/images/default/ " +
		"imgcast.report=" + srv.URL + "/api/status imgcast.disk=/dev/vdb imgcast.disktimeout=7s imgcast.portbase=9100 " +
		"imgcast.starttimeout=5m imgcast.nextstarttimeout=20s imgcast.receivetimeout=9s imgcast.ttl=16 " +
		"imgcast.after=poweroff imgcast.failwait=0 imgcast.mcastcheck=1 imgcast.igmpinterval=0"
	if err := ta.run(context.Background(), cmdline); err != nil {
		t.Fatalf("agent: %v\n%s", err, ta.out.String())
	}
	console := ta.out.String()

	if len(ta.powers) != 1 || ta.powers[0] != power.PowerOff {
		t.Errorf("power actions %v, want poweroff", ta.powers)
	}
	// Defect 1: the named disk is waited for, with imgcast.disktimeout,
	// and checked against what the image needs.
	if len(waited) != 1 || waited[0].Named != "/dev/vdb" || waited[0].Timeout != 7*time.Second || minSize < 77<<20 {
		t.Errorf("disk waits %+v for %d bytes, want one for /dev/vdb, 7s, at least 77 MiB", waited, minSize)
	}
	if err := defaultimage.ComparePartitions(disk, ref); err != nil {
		t.Error(err)
	}
	srvHost := strings.TrimPrefix(srv.URL, "http://")
	if len(checks) != 1 || checks[0].Server != srvHost || checks[0].Interface != "eth0" {
		t.Errorf("multicast checks %+v, want one against %s on eth0", checks, srvHost)
	}
	if !strings.Contains(console, "*** MULTICAST CHECK: PROBLEM — no IGMP querier answered on eth0 ***\nImaging goes on") {
		t.Errorf("console does not show the check's problem:\n%s", console)
	}
	// Defect 3: a long wait for the first stream only; TTL; the rest.
	if len(configs) != 2 {
		t.Fatalf("%d receptions, want 2:\n%s", len(configs), console)
	}
	for i, c := range configs {
		wantStart := []time.Duration{5 * time.Minute, 20 * time.Second}[i]
		if c.Port != 9100+2*i || c.StartTimeout != wantStart || c.ReceiveTimeout != 9*time.Second || c.TTL != 16 ||
			c.RendezvousAddr != netip.MustParseAddr("127.0.0.1") || c.Interface != "eth0" || c.IGMPReportInterval >= 0 {
			t.Errorf("stream %d: port %d, start timeout %s, receive timeout %s, TTL %d, rdv %s, interface %q, IGMP reports every %s; want %d, %s, 9s, 16, 127.0.0.1, eth0, off (negative)",
				i, c.Port, c.StartTimeout, c.ReceiveTimeout, c.TTL, c.RendezvousAddr, c.Interface, c.IGMPReportInterval, 9100+2*i, wantStart)
		}
		// Defect 2: the receiver's messages reach the console.
		if c.Logf == nil {
			t.Errorf("stream %d: the receiver has no Logf", i)
		}
	}
	for _, want := range []string{"d1p1: Connected as #1 to 127.0.0.1:9101", "d1p2: Connected as #2 to 127.0.0.1:9101",
		"disk: " + disk + " 100 MiB (serial wire-1)", "image written to " + disk + " in "} {
		if !strings.Contains(console, want) {
			t.Errorf("console lacks %q:\n%s", want, console)
		}
	}
	// Defect 4: the reports name the disk.
	reportsMu.Lock()
	defer reportsMu.Unlock()
	if len(reports) == 0 {
		t.Fatal("no reports")
	}
	var checked *status.MulticastCheck
	for _, r := range reports {
		if r.MulticastCheck != nil {
			checked = r.MulticastCheck
		}
	}
	if checked == nil || checked.Verdict != "PROBLEM — no IGMP querier answered on eth0" || checked.LossPercent != 2 {
		t.Errorf("reported multicast check %+v, want the PROBLEM verdict with 2%% loss", checked)
	}
	last := reports[len(reports)-1]
	if last.State != status.Done || last.Disk == nil || last.Disk.Name != "vdb" || last.Disk.Serial != "wire-1" {
		t.Errorf("last report %+v (disk %+v), want done naming vdb, serial wire-1", last, last.Disk)
	}
}

type diskSourceFunc func(ctx context.Context, minSize uint64) (inventory.Disk, error)

func (f diskSourceFunc) WaitDisk(ctx context.Context, minSize uint64) (inventory.Disk, error) {
	return f(ctx, minSize)
}

// The agent's multicast check (imgcast.mcastcheck=1): against the report
// URL's host on the NIC that came up; an ok verdict is reported quietly,
// a problem or a check that could not run is framed on the console and
// reported as a PROBLEM.
func TestAgentMulticastCheck(t *testing.T) {
	for _, tc := range []struct {
		name      string
		reportURL string
		res       mcastcheck.Result
		err       error
		want      string // the reported verdict
		framed    bool
		server    string
	}{
		{"ok", "http://10.0.0.1:8080/api/status", mcastcheck.Result{OK: true, Verdict: "ok"}, nil, "ok", false, "10.0.0.1:8080"},
		{"problem", "http://10.0.0.1:8081/api/status", mcastcheck.Result{Verdict: "PROBLEM — multicast is blocked"}, nil,
			"PROBLEM — multicast is blocked", true, "10.0.0.1:8081"},
		{"could not run", "", mcastcheck.Result{}, errors.New("mcast-check: the server refused: 429 Too Many Requests"),
			"PROBLEM — the multicast check could not run: mcast-check: the server refused: 429 Too Many Requests", true, "10.0.0.9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ta := newTestAgent(t, strings.NewReader(""), upOK)
			ta.settings, _ = parseSettings("imgcast.server=10.0.0.9 imgcast.mcastcheck=1")
			ta.network, _ = upOK(context.Background(), netup.Config{})
			var asked mcastcheck.Options
			ta.mcastCheck = func(ctx context.Context, opt mcastcheck.Options, println func(string)) (mcastcheck.Result, error) {
				asked = opt
				return tc.res, tc.err
			}
			got := ta.checkMulticast(context.Background(), tc.reportURL)
			if got == nil || got.Verdict != tc.want {
				t.Errorf("reported %+v, want verdict %q", got, tc.want)
			}
			if asked.Server != tc.server || asked.Interface != "eth0" {
				t.Errorf("checked against %q on %q, want %s on eth0", asked.Server, asked.Interface, tc.server)
			}
			framed := strings.Contains(ta.out.String(), "*** MULTICAST CHECK: "+tc.want+" ***\nImaging goes on")
			if framed != tc.framed {
				t.Errorf("framed problem line shown: %v, want %v:\n%s", framed, tc.framed, ta.out.String())
			}
		})
	}
}
