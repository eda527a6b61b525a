package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/lab"
	"github.com/imgcast/imgcast/pkg/mcastcheck"
)

// checkLab is a lab network with imgcast-server on the switch and one
// client host.
type checkLab struct {
	net    *lab.Net
	client *lab.Host
	bin    string
	server string // its IP
}

func newCheckLab(t *testing.T, octet int) *checkLab {
	t.Helper()
	lab.Require(t, "curl")
	imgcast, server, images, _ := buildLabBinaries(t)
	n := lab.T(t, octet)
	l := &checkLab{net: n, bin: imgcast, server: n.Switch.IP.String()}
	var err error
	if l.client, err = n.AddHost("c", 11); err != nil {
		t.Fatal(err)
	}
	srv := n.Switch.Command(context.Background(), server, "--images", images, "--mode", "unicast",
		"--interface", n.Bridge, "--listen", l.server+":8080")
	log := &lab.Output{}
	srv.Stdout, srv.Stderr = log, log
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Process.Kill()
		srv.Wait()
		if t.Failed() {
			t.Logf("imgcast-server:\n%s", log)
		}
	})
	waitHTTP(t, n.Switch, "http://"+l.server+":8080/api/session")
	return l
}

// check runs `imgcast mcast-check recv -json` as host h and returns its
// output, the result and whether it exited 0.
func (l *checkLab) check(t *testing.T, h *lab.Host, args ...string) (string, mcastcheck.Result, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	all := append([]string{"mcast-check", "recv", "-json"}, args...)
	out, err := h.Command(ctx, l.bin, all...).CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("mcast-check: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var res mcastcheck.Result
	if len(lines) < 2 || json.Unmarshal([]byte(lines[len(lines)-1]), &res) != nil {
		t.Fatalf("mcast-check printed no result (%v):\n%s", err, out)
	}
	if verdict := lines[len(lines)-2]; verdict != "verdict: "+res.Verdict {
		t.Errorf("the line before the JSON is %q, not the verdict", verdict)
	}
	if res.OK != (err == nil) {
		t.Errorf("exit %v with verdict %q", err, res.Verdict)
	}
	t.Logf("mcast-check %s:\n%s", strings.Join(args, " "), out)
	return string(out), res, err == nil
}

func wantIn(t *testing.T, text string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(text, p) {
			t.Errorf("%q not in:\n%s", p, text)
		}
	}
}

// A switch that snoops IGMP without a querier (forgetting a port 6 s
// after its last report): the check sees the stream stop while its
// unicast copy goes on, and names the missing querier.
func TestMcastCheckSnoopingWithoutQuerier(t *testing.T) {
	l := newCheckLab(t, 67)
	if err := l.net.SnoopWithoutQuerier(6 * time.Second); err != nil {
		t.Fatal(err)
	}
	_, res, _ := l.check(t, l.client, "-server", l.server, "-duration", "10s")
	wantIn(t, res.Verdict, "PROBLEM — multicast stopped after", "while unicast went on", "no IGMP querier answered on eth0", "mcast_querier 1")
	if s := res.Multicast.StoppedAfter; s < 5 || s > 8 {
		t.Errorf("multicast stopped after %v s, want about 6", s)
	}
	if res.Unicast == nil || res.Unicast.LossPercent != 0 || res.Unicast.StoppedAfter != 0 {
		t.Errorf("unicast %+v, want all of it", res.Unicast)
	}
	if !res.Querier.Checked || res.Querier.Seen {
		t.Errorf("querier %+v", res.Querier)
	}
}

// The same switch with an IGMPv3 querier on the bridge (a query every
// 2 s): the hosts answer its queries, the stream flows, the verdict is ok
// and names the querier.
func TestMcastCheckWithQuerier(t *testing.T) {
	l := newCheckLab(t, 68)
	if err := l.net.SnoopWithoutQuerier(6 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := l.net.EnableQuerier(3, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	out, res, ok := l.check(t, l.client, "-server", l.server, "-duration", "10s")
	if !ok || res.Multicast.StoppedAfter != 0 || res.Multicast.LossPercent > 1 {
		t.Errorf("verdict %q, multicast %+v", res.Verdict, res.Multicast)
	}
	q := res.Querier
	if !q.Seen || q.Version != 3 || q.Interval != 2 || q.Address != "0.0.0.0" {
		t.Errorf("querier %+v, want the bridge's IGMPv3 querier every 2 s from 0.0.0.0", q)
	}
	wantIn(t, out, "querier: 0.0.0.0 (IGMPv3), query interval 2 s")
}

// Multicast dropped, unicast passed: the check says multicast is blocked.
func TestMcastCheckBlocked(t *testing.T) {
	l := newCheckLab(t, 69)
	if err := l.net.BlockMulticast(); err != nil {
		t.Fatal(err)
	}
	_, res, _ := l.check(t, l.client, "-server", l.server, "-duration", "2s")
	wantIn(t, res.Verdict, "PROBLEM — multicast is blocked: the test stream reached this machine by unicast but not by multicast to 234.69.0.1:9998")
	if res.Multicast.Packets != 0 || res.Unicast == nil || res.Unicast.Packets != res.Unicast.Expected {
		t.Errorf("multicast %+v unicast %+v", res.Multicast, res.Unicast)
	}
}

// 5 % of the datagrams to the test port are dropped on the client: the
// measured loss is within 2 points, on both paths.
func TestMcastCheckMeasuresLoss(t *testing.T) {
	l := newCheckLab(t, 70)
	if err := l.client.DropUDP(mcastcheck.DefaultPort, 5); err != nil {
		t.Fatal(err)
	}
	_, res, ok := l.check(t, l.client, "-server", l.server, "-duration", "6s", "-rate", "500")
	if ok {
		t.Errorf("5%% loss passed: %s", res.Verdict)
	}
	for name, s := range map[string]*mcastcheck.Stats{"multicast": &res.Multicast, "unicast": res.Unicast} {
		if s == nil || s.Expected != 3000 || s.LossPercent < 3 || s.LossPercent > 7 {
			t.Errorf("%s: %+v, want 5%% ± 2 of 3000", name, s)
		}
	}
	wantIn(t, res.Verdict, "of multicast and", "of unicast packets were lost", "the link itself loses packets")
}

// A stream sent by hand (no server) with a unicast copy: the check finds
// no imgcast-server at the sender's address and measures what comes.
func TestMcastCheckByHand(t *testing.T) {
	l := newCheckLab(t, 73)
	sender, err := l.net.AddHost("s", 12)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	send := sender.Command(ctx, l.bin, "mcast-check", "send", "-duration", "5s", "-to", l.client.IP.String())
	sendOut := &lab.Output{}
	send.Stdout, send.Stderr = sendOut, sendOut
	if err := send.Start(); err != nil {
		t.Fatal(err)
	}
	out, res, _ := l.check(t, l.client, "-server", sender.IP.String(), "-duration", "3s")
	if err := send.Wait(); err != nil {
		t.Fatalf("send: %v\n%s", err, sendOut)
	}
	wantIn(t, sendOut.String(), "sending test stream", fmt.Sprintf("to 234.73.0.12:%d", mcastcheck.DefaultPort), "sent 500 packets")
	wantIn(t, out, "listening 3s for a stream sent by hand")
	if res.Multicast.Packets < 250 || res.Multicast.LossPercent != 0 || res.Unicast == nil || res.Unicast.Packets < 250 {
		t.Errorf("multicast %+v unicast %+v", res.Multicast, res.Unicast)
	}
	if res.Group != "234.73.0.12" || res.Server != sender.IP.String() {
		t.Errorf("group %s server %s", res.Group, res.Server)
	}
}
