package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/recovered"
	"github.com/imgcast/imgcast/internal/testfs"
	"github.com/imgcast/imgcast/pkg/netup"
	"github.com/imgcast/imgcast/pkg/power"
)

// testAgent is an agent whose machine is fake: the network comes from
// netUp, the shell and the power actions are recorded.
type testAgent struct {
	*agent
	out    bytes.Buffer
	shells int
	powers []power.Action
}

func newTestAgent(t *testing.T, stdin io.Reader, netUp func(context.Context, netup.Config) (*netup.Network, error)) *testAgent {
	ta := &testAgent{}
	a := newAgent(stdin, &ta.out, &ta.out)
	a.root = testfs.Tree(t, map[string]string{"sys/block/vda/size": "2097152\n", "sys/block/vda/removable": "0\n",
		"sys/block/vdb/size": "2097152\n", "sys/block/vdb/removable": "0\n", "sys/block/vdb/serial": "LAB0042\n"}, nil)
	a.moduleRoot = t.TempDir() // never load modules into the test machine's kernel
	a.netUp = netUp
	a.keepLease = false
	a.runShell = func() error { ta.shells++; return nil }
	a.powerDo = func(p power.Action) error { ta.powers = append(ta.powers, p); return nil }
	var clock atomic.Int64 // logf runs on the job's and the reporter's goroutines
	clock.Store(int64(3 * time.Second))
	a.uptime = func() time.Duration { return time.Duration(clock.Add(int64(100 * time.Millisecond))) }
	a.initStart = 2 * time.Second
	ta.agent = a
	return ta
}

func upOK(ctx context.Context, cfg netup.Config) (*netup.Network, error) {
	return netup.NewNetwork(netup.NIC{Name: "eth0", MAC: net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}},
		&netup.Lease{Interface: "eth0", Address: &net.IPNet{IP: net.IPv4(10, 0, 0, 123).To4(), Mask: net.CIDRMask(24, 32)},
			Server: net.IPv4(10, 0, 0, 1), Routers: []net.IP{net.IPv4(10, 0, 0, 1)}}), nil
}

func upFails(ctx context.Context, cfg netup.Config) (*netup.Network, error) {
	return nil, &netup.Diagnosis{Cause: netup.CauseNoCarrier, Reason: "no NIC got carrier: check the cable and the switch port"}
}

// errAny stands for "some error" in the table below.
var errAny = errors.New("any error")

func TestAgentPaths(t *testing.T) {
	for _, tt := range []struct {
		name       string
		cmdline    string
		netUp      func(context.Context, netup.Config) (*netup.Network, error)
		stdin      string
		wantErr    error // nil: success
		wantShells int
		wantPower  power.Action
		wantOut    []string
	}{
		{"debug mode: banner, shell, reboot", "imgcast.mode=debug imgcast.server=10.0.0.1", upOK, "", nil, 1, power.Reboot,
			[]string{`network ready: eth0 10\.0\.0\.123/24 gw 10\.0\.0\.1 .* in [0-9.]+ s since init started \(uptime [0-9.]+ s\)`,
				"imgcast debug shell", `Network:  eth0 10\.0\.0\.123/24`, `/dev/vda 1 GiB`, `Server:   10\.0\.0\.1   port base 9000`,
				`udp-receiver --nokbd --portbase 9000 --file /dev/vda`}},
		{"debug mode, disk named by serial: the banner names its device", "imgcast.mode=debug imgcast.disk=serial:lab0042", upOK, "", nil, 1, power.Reboot,
			[]string{`/dev/vdb 1 GiB \(serial LAB0042\)`, `udp-receiver --nokbd --portbase 9000 --file /dev/vdb`, `gpt /dev/vdb;`}},
		{"debug mode then power off", "imgcast.mode=debug imgcast.after=poweroff", upOK, "", nil, 1, power.PowerOff,
			[]string{"then the machine will power off"}},
		{"multicast without an image folder: failure path", "imgcast.mode=multicast imgcast.failwait=0", upOK, "", errAny, 0, power.Reboot,
			[]string{`\*\*\* imgcast FAILED \*\*\*`, "multicast: no image folder given", "What to check:", "set imgcast.image="}},
		{"network failure, power off after the wait", "imgcast.after=poweroff imgcast.failwait=10ms", upFails, "", &netup.Diagnosis{}, 0, power.PowerOff,
			[]string{"FAILED", "network: no NIC got carrier", "cable, switch port", "will power off in 10ms"}},
		{"network failure in debug mode: banner and shell", "imgcast.mode=debug", upFails, "", &netup.Diagnosis{}, 1, power.Reboot,
			[]string{"FAILED", "Network:  NOT UP"}},
		{"Enter during the failure wait gives a shell", "imgcast.failwait=1m", upFails, "\n", &netup.Diagnosis{}, 1, power.Reboot,
			[]string{"Press Enter for a shell"}},
		{"after=shell: shell after the failure, then reboot", "imgcast.after=shell", upFails, "", &netup.Diagnosis{}, 1, power.Reboot, nil},
		{"bad settings", "imgcast.mode=fast imgcast.failwait=0", upOK, "", &SettingsError{}, 0, power.Reboot,
			[]string{`imgcast.mode: "fast"`, "fix the imgcast.\\* words"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ta := newTestAgent(t, strings.NewReader(tt.stdin), tt.netUp)
			err := ta.run(context.Background(), "console=ttyS0 "+tt.cmdline)
			switch want := tt.wantErr.(type) {
			case nil:
				if err != nil {
					t.Errorf("err = %v", err)
				}
			case *netup.Diagnosis:
				if !errors.As(err, &want) {
					t.Errorf("err = %v, want a Diagnosis", err)
				}
			case *SettingsError:
				if !errors.As(err, &want) {
					t.Errorf("err = %v, want a SettingsError", err)
				}
			default:
				if want == errAny {
					if err == nil {
						t.Error("no error")
					}
				} else if !errors.Is(err, want) {
					t.Errorf("err = %v, want %v", err, want)
				}
			}
			if ta.shells != tt.wantShells {
				t.Errorf("%d shells, want %d", ta.shells, tt.wantShells)
			}
			if len(ta.powers) != 1 || ta.powers[0] != tt.wantPower {
				t.Errorf("power actions %v, want [%s]", ta.powers, tt.wantPower)
			}
			for _, w := range tt.wantOut {
				if !regexp.MustCompile(w).MatchString(ta.out.String()) {
					t.Errorf("output lacks %q:\n%s", w, ta.out.String())
				}
			}
		})
	}
}

func TestAgentPanicGoesDownTheFailurePath(t *testing.T) {
	ta := newTestAgent(t, strings.NewReader(""), func(context.Context, netup.Config) (*netup.Network, error) {
		var m map[string]int
		m["boom"]++ // a bug
		return nil, nil
	})
	err := ta.run(context.Background(), "imgcast.after=poweroff imgcast.failwait=0")
	if err == nil || !strings.Contains(err.Error(), "internal error (a bug in imgcast)") {
		t.Errorf("err = %v", err)
	}
	if !strings.Contains(ta.out.String(), "*** imgcast FAILED ***") || len(ta.powers) != 1 || ta.powers[0] != power.PowerOff {
		t.Errorf("powers %v, output:\n%s", ta.powers, ta.out.String())
	}
}

func TestAgentPassesSettingsToNetwork(t *testing.T) {
	var got netup.Config
	ta := newTestAgent(t, strings.NewReader(""), func(ctx context.Context, cfg netup.Config) (*netup.Network, error) {
		got = cfg
		return upOK(ctx, cfg)
	})
	ta.run(context.Background(), "imgcast.mode=debug imgcast.image=http://10.0.0.9:8080/img/ imgcast.mac=52:54:00:00:00:07 "+
		"imgcast.linktimeout=4s imgcast.dhcptimeout=9s")
	if !got.Server.Equal(net.IPv4(10, 0, 0, 9)) || got.ServerPort != 8080 || got.MAC.String() != "52:54:00:00:00:07" ||
		got.LinkTimeout != 4*time.Second || got.DHCPTimeout != 9*time.Second || got.Logf == nil {
		t.Errorf("netup config %+v", got)
	}
}

func TestAgentCtrlCInterruptsThePhase(t *testing.T) {
	started := make(chan struct{})
	ta := newTestAgent(t, strings.NewReader(""), func(ctx context.Context, cfg netup.Config) (*netup.Network, error) {
		close(started)
		<-ctx.Done()
		return nil, &netup.Diagnosis{Reason: "network bring-up was interrupted: " + ctx.Err().Error()}
	})
	done := make(chan error)
	go func() { done <- ta.run(context.Background(), "imgcast.failwait=0") }()
	<-started
	ta.cancelMu.Lock()
	cancel := ta.cancelPhase
	ta.cancelMu.Unlock()
	cancel(errors.New("interrupted (Ctrl-C)")) // what the SIGINT handler does
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "interrupted") {
			t.Errorf("err = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not stop")
	}
}

// A panic on a goroutine the agent started (lease renewal, driver
// loading, the Ctrl-C handler) cancels the running phase and goes down
// the failure path instead of crashing the machine into a kernel panic.
func TestAgentBackgroundPanicGoesDownTheFailurePath(t *testing.T) {
	var ta *testAgent
	ta = newTestAgent(t, strings.NewReader(""), func(ctx context.Context, cfg netup.Config) (*netup.Network, error) {
		recovered.Go("a background goroutine", ta.onPanic, func() {
			var m map[string]int
			m["boom"]++ // a bug
		})
		<-ctx.Done()
		return nil, &netup.Diagnosis{Reason: "network bring-up was interrupted"}
	})
	done := make(chan error, 1)
	go func() { done <- ta.run(context.Background(), "imgcast.after=poweroff imgcast.failwait=0") }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "internal error (a bug in imgcast) in a background goroutine") {
			t.Errorf("err = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not stop")
	}
	if !strings.Contains(ta.out.String(), "*** imgcast FAILED ***") || len(ta.powers) != 1 || ta.powers[0] != power.PowerOff {
		t.Errorf("powers %v, output:\n%s", ta.powers, ta.out.String())
	}
}
