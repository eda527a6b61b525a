package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/lab"
)

// The networks that break multicast in real labs, reproduced on the lab
// bridge with nftables (internal/lab), against the real udp-sender.

// TestKeepAliveSurvivesSnoopingSwitchWithoutQuerier: the bridge forwards
// multicast to a port only for 12 s after its last IGMP report, like a
// switch that snoops without a querier (real ones: about 260 s). A
// transfer of about 20 s by multicast to three receivers: udpcast's
// receiver and ours without the keep-alive stall when the bridge forgets
// them; ours with its default keep-alive (a report every 5 s) completes
// byte for byte, and the one without says why it stalled.
func TestKeepAliveSurvivesSnoopingSwitchWithoutQuerier(t *testing.T) {
	e := newEnv(t, 64, 3)
	if err := e.net.SnoopWithoutQuerier(12 * time.Second); err != nil {
		t.Fatal(err)
	}
	in := e.file("snooped.bin", 10_000_000)
	kept := e.ours(0, "--nokbd", "--receive-timeout", "10")
	unkept := e.ours(1, "--nokbd", "--igmp-report-interval", "0", "--receive-timeout", "4")
	theirs := e.theirs(2, "--nokbd", "--receive-timeout", "4")
	// 4 Mbit/s: 10 MB take 20 s.
	e.startSender(in, "--nokbd", "--min-receivers", "3", "--max-bitrate", "4m")

	e.expectSame(in, kept)
	for _, r := range []*proc{unkept, theirs} {
		err := r.wait(t, 30*time.Second)
		t.Logf("%s (%v):\n%s", r.name, err, r.stderr)
		same := exec.Command("cmp", "-s", in, r.out).Run() == nil
		if err == nil || same {
			t.Errorf("%s completed (exit %v, same output %v): the bridge did not cut it off, so the test proves nothing", r.name, err, same)
		}
	}
	if !strings.Contains(unkept.stderr.String(), "multicast data stopped while 10.64.0.2 still answers by unicast") {
		t.Errorf("our receiver without keep-alive did not name the cause:\n%s", unkept.stderr)
	}
	if drops, err := e.net.SnoopDrops(); err != nil || drops == 0 {
		t.Errorf("the bridge dropped %d packets (%v)", drops, err)
	}
}

// TestBlockedMulticastIsNamed: the bridge drops multicast but passes
// unicast and broadcast. The handshake succeeds, the data (multicast to
// two receivers) never come, and the receiver's message says that the
// sender still answers by unicast, so multicast is blocked.
func TestBlockedMulticastIsNamed(t *testing.T) {
	e := newEnv(t, 65, 2)
	if err := e.net.BlockMulticast(); err != nil {
		t.Fatal(err)
	}
	in := e.file("blocked.bin", 1_000_000)
	rs := []*proc{e.ours(0, "--nokbd", "--start-timeout", "4"), e.ours(1, "--nokbd", "--start-timeout", "4")}
	e.startSender(in, "--nokbd", "--min-receivers", "2")
	for _, r := range rs {
		r.wait(t, 30*time.Second)
		out := r.stderr.String()
		if !strings.Contains(out, "no data arrived while 10.65.0.2 still answers by unicast (ping)") ||
			!strings.Contains(out, "multicast is blocked on the way") {
			t.Errorf("%s did not name blocked multicast:\n%s", r.name, out)
		}
	}
}

// TestKeepAliveWithoutRoot: run by an ordinary user, udp-receiver cannot
// open the raw socket the reports need; it says so once and receives as
// before.
func TestKeepAliveWithoutRoot(t *testing.T) {
	lab.Require(t, "setpriv")
	e := newEnv(t, 66, 2)
	// Somewhere the user nobody can run the binary and write its output.
	dir, err := os.MkdirTemp("", "udp-receiver-nobody")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "udp-receiver")
	data, err := os.ReadFile(ourBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	in := e.file("nobody.bin", 2_000_000)
	out := filepath.Join(dir, "out")
	user := startProc(t, e.hosts[0], "our receiver as nobody", out, nil, "setpriv",
		"--reuid=65534", "--regid=65534", "--clear-groups", bin, "--nokbd", "--portbase", "9000", "--file", out)
	root := e.ours(1, "--nokbd")
	e.startSender(in, "--nokbd", "--min-receivers", "2") // multicast: groups joined
	e.expectSame(in, user, root)
	if n := strings.Count(user.stderr.String(), "IGMP keep-alive is off"); n != 1 {
		t.Errorf("the warning came %d times, want once:\n%s", n, user.stderr)
	}
	if strings.Contains(root.stderr.String(), "IGMP keep-alive is off") {
		t.Errorf("root's receiver has no keep-alive:\n%s", root.stderr)
	}
}
