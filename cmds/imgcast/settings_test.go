package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/imgcast/imgcast/pkg/inventory"
)

func TestParseSettings(t *testing.T) {
	def := defaultSettings()
	if def.PortBase != 9000 || def.Mode != ModeMulticast || def.After != AfterReboot ||
		def.LinkTimeout != 15*time.Second || def.DHCPTimeout != 30*time.Second || def.FailWait != time.Minute || def.DiskTimeout != 10*time.Second ||
		def.StartTimeout != 10*time.Minute || def.NextStartTimeout != time.Minute || def.TTL != 32 ||
		def.MulticastCheck || def.IGMPInterval != 5*time.Second || def.SessionWait != 2*time.Hour {
		t.Fatalf("defaults: %+v", def)
	}
	if _, err := parseSettings("imgcast.ttl=0"); err == nil {
		t.Error("imgcast.ttl=0 accepted")
	}
	for _, tt := range []struct {
		name    string
		cmdline string
		check   func(*Settings) bool
		wantErr []string
	}{
		{"empty", "console=ttyS0 panic=-1", func(s *Settings) bool { return s.Mode == ModeMulticast && s.Server == nil }, nil},
		{"everything", `console=ttyS0 imgcast.server=10.0.0.1 imgcast.image=http://10.0.0.1:8080/images/win10/ imgcast.portbase=9002 ` +
			`imgcast.disk=/dev/nvme0n1 imgcast.mode=debug imgcast.after=poweroff imgcast.mac=52:54:00:12:34:56 ` +
			`imgcast.linktimeout=5s imgcast.dhcptimeout=2m imgcast.disktimeout=3 imgcast.failwait=0 ` +
			`imgcast.report=http://10.0.0.1:8080/api/status imgcast.session=http://10.0.0.1:8080/api/session`,
			func(s *Settings) bool {
				return s.Server.Equal(net.IPv4(10, 0, 0, 1)) && s.Image == "http://10.0.0.1:8080/images/win10/" && s.PortBase == 9002 &&
					s.Disk == "/dev/nvme0n1" && s.Mode == ModeDebug && s.After == AfterPowerOff && s.MAC.String() == "52:54:00:12:34:56" &&
					s.LinkTimeout == 5*time.Second && s.DHCPTimeout == 2*time.Minute && s.DiskTimeout == 3*time.Second && s.FailWait == 0 &&
					s.serverPort() == 8080 && s.Report == "http://10.0.0.1:8080/api/status" && s.Session == "http://10.0.0.1:8080/api/session"
			}, nil},
		{"BOOTIF", "BOOTIF=01-52-54-00-aa-bb-cc", func(s *Settings) bool { return s.MAC.String() == "52:54:00:aa:bb:cc" }, nil},
		{"imgcast.mac wins over BOOTIF", "BOOTIF=01-52-54-00-aa-bb-cc imgcast.mac=52:54:00:00:00:01",
			func(s *Settings) bool { return s.MAC.String() == "52:54:00:00:00:01" }, nil},
		{"server from the image URL", "imgcast.image=https://10.1.2.3/img/",
			func(s *Settings) bool { return s.serverAddr().Equal(net.IPv4(10, 1, 2, 3)) && s.serverPort() == 443 }, nil},
		{"image on another host: probe port 80", "imgcast.server=10.0.0.1 imgcast.image=http://10.0.0.2:8080/x/",
			func(s *Settings) bool { return s.serverPort() == 80 }, nil},
		{"all errors at once, good settings kept",
			"imgcast.sever=10.0.0.1 imgcast.portbase=9001 imgcast.mode=fast imgcast.after=poweroff imgcast.disk=sda imgcast.linktimeout=soon imgcast.mac",
			func(s *Settings) bool {
				return s.After == AfterPowerOff && s.PortBase == 9000 && s.Mode == ModeMulticast
			},
			[]string{"unknown setting imgcast.sever", "imgcast.portbase: \"9001\" is not an even port", "imgcast.mode: \"fast\"",
				"imgcast.disk: \"sda\" is neither a /dev path nor serial:SERIAL", "imgcast.linktimeout: \"soon\"", "imgcast.mac has no value"}},
		{"multicast diagnosis and rolling sessions", "imgcast.mcastcheck=1 imgcast.igmpinterval=30 imgcast.sessionwait=45m",
			func(s *Settings) bool {
				return s.MulticastCheck && s.IGMPInterval == 30*time.Second && s.SessionWait == 45*time.Minute &&
					igmpReportInterval(s.IGMPInterval) == 30*time.Second
			}, nil},
		{"IGMP keep-alive off", "imgcast.igmpinterval=0",
			func(s *Settings) bool { return s.IGMPInterval == 0 && igmpReportInterval(s.IGMPInterval) < 0 }, nil},
		{"bad multicast settings", "imgcast.mcastcheck=yes imgcast.igmpinterval=-5 imgcast.sessionwait=later", nil,
			[]string{`imgcast.mcastcheck: "yes" is not 0 or 1`, `imgcast.igmpinterval: "-5" is not a number of seconds`, `imgcast.sessionwait: "later"`}},
		{"disk by serial", "imgcast.disk=serial:S4EVNX0N123456", func(s *Settings) bool { return s.Disk == "serial:S4EVNX0N123456" }, nil},
		{"disk by serial, none given", "imgcast.disk=serial:", nil, []string{`imgcast.disk: "serial:" gives no serial number`}},
		{"bad server and URL", "imgcast.server=fileserver imgcast.image=nfs://x/y", nil,
			[]string{"imgcast.server: \"fileserver\" is not an IPv4", "imgcast.image: \"nfs://x/y\" is not an http(s) URL"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := parseSettings(tt.cmdline)
			if tt.check != nil && !tt.check(s) {
				t.Errorf("settings %+v", s)
			}
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Errorf("err = %v", err)
				}
				return
			}
			var se *SettingsError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want a SettingsError", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
		})
	}
}

// The README documents every key with its default; keep them in step.
func TestREADMEDocumentsEverySetting(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range settingKeys {
		row := "| `" + k.name + "=" + strings.ReplaceAll(k.value, "|", `\|`) + "` |"
		if !strings.Contains(string(readme), row) {
			t.Errorf("README.md has no row starting %q", row)
		}
		if k.def != "" && !strings.Contains(string(readme), row+" `"+k.def+"` |") {
			t.Errorf("README.md row for %s does not give the default `%s`", k.name, k.def)
		}
	}
}

func FuzzParseSettings(f *testing.F) {
	f.Add(`imgcast.server=10.0.0.1 imgcast.mode=debug BOOTIF=01-52-54-00-aa-bb-cc imgcast.failwait="5s"`)
	f.Add(`imgcast.image="http://[::1]:80/" imgcast.=x imgcast.portbase=-2`)
	f.Fuzz(func(t *testing.T, cmdline string) {
		s, _ := parseSettings(cmdline)
		if s == nil {
			t.Fatal("nil settings")
		}
		_ = s.serverPort()
		_ = s.serverAddr()
	})
}

// imgcast image -disk takes imgcast.disk's forms; an empty serial is
// refused before anything starts.
func TestImageDiskFlagSerial(t *testing.T) {
	var out, errOut bytes.Buffer
	err := runImage([]string{"-disk", "serial: ", t.TempDir()}, nil, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), `-disk: "serial: " gives no serial number`) {
		t.Errorf("err = %v", err)
	}
	if src, err := diskFlag("serial:S4EV", time.Second); err != nil {
		t.Error(err)
	} else if _, ok := src.(inventory.DiskWait); !ok {
		t.Error("-disk serial:S4EV is not waited for as a disk")
	}
	if src, err := diskFlag("/tmp/disk.raw", time.Second); err != nil {
		t.Error(err)
	} else if _, ok := src.(inventory.DiskWait); ok {
		t.Error("-disk /tmp/disk.raw is waited for as a disk, not used as a file")
	}
}
