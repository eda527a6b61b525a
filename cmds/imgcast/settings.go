package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/u-root/u-root/pkg/shlex"
)

// Mode is what the agent does once the network is up (imgcast.mode).
type Mode string

// The modes.
const (
	ModeMulticast Mode = "multicast"
	ModeUnicast   Mode = "unicast"
	ModeDebug     Mode = "debug"
)

// After is what the agent does when the job ends, well or badly
// (imgcast.after).
type After string

// The after-actions.
const (
	AfterReboot   After = "reboot"
	AfterPowerOff After = "poweroff"
	AfterShell    After = "shell"
)

// Settings are the agent's settings, from imgcast.* words on the kernel
// command line (see settingKeys for each key).
type Settings struct {
	Server   net.IP
	Image    string
	Report   string // URL status reports are POSTed to
	Session  string // URL of the multicast session
	PortBase int
	Disk     string
	Mode     Mode
	After    After
	MAC      net.HardwareAddr

	// Fallback is "http" to fetch the image over HTTP when no multicast
	// sender answers or the session cannot be joined; "" otherwise.
	Fallback string
	// Rendezvous is where the udpcast handshake goes (default: Server).
	Rendezvous net.IP
	// StartTimeout bounds the wait for the first partition's sender,
	// NextStartTimeout for each later one; ReceiveTimeout the silence of
	// a sender mid-stream.
	StartTimeout     time.Duration
	NextStartTimeout time.Duration
	ReceiveTimeout   time.Duration
	// TTL of the receiver's multicast packets.
	TTL int

	LinkTimeout time.Duration
	DHCPTimeout time.Duration
	DiskTimeout time.Duration
	FailWait    time.Duration
	Verbose     bool

	// MulticastCheck runs the multicast check against Server before
	// imaging and reports its result; a problem does not stop imaging.
	MulticastCheck bool
	// IGMPInterval is how often the receiver sends its own IGMP membership
	// reports; 0 turns them off.
	IGMPInterval time.Duration
	// SessionWait bounds the wait for a rolling session the server queued
	// this machine for.
	SessionWait time.Duration
}

// settingKey documents and parses one imgcast.* key. The README's table of
// keys is this list; a test keeps them in step.
type settingKey struct {
	name  string
	value string // the form of the value, for the docs
	def   string // the default as written on the command line; "" for none
	doc   string
	set   func(s *Settings, v string) error
}

var settingKeys = []settingKey{
	{"imgcast.server", "IP", "", "the imaging server; the NIC that reaches it is chosen (a TCP connection to the image URL's port, else 80, must be answered or refused)",
		func(s *Settings, v string) error {
			ip := net.ParseIP(v)
			if ip == nil || ip.To4() == nil {
				return fmt.Errorf("%q is not an IPv4 address", v)
			}
			s.Server = ip.To4()
			return nil
		}},
	{"imgcast.image", "URL", "", "the image folder (http://server/images/name/), FOG/partclone layout",
		urlSetter(func(s *Settings) *string { return &s.Image })},
	{"imgcast.report", "URL", "", "where the client POSTs its status reports (imgcast-server: http://SERVER:8080/api/status)",
		urlSetter(func(s *Settings) *string { return &s.Report })},
	{"imgcast.session", "URL", "", "the multicast session to check before joining (imgcast-server: http://SERVER:8080/api/session)",
		urlSetter(func(s *Settings) *string { return &s.Session })},
	{"imgcast.portbase", "PORT", "9000", "udpcast port base, as udp-sender's --portbase (even; the session uses PORT and PORT+1)",
		func(s *Settings, v string) error {
			p, err := strconv.Atoi(v)
			if err != nil || p < 1 || p > 65534 || p%2 != 0 {
				return fmt.Errorf("%q is not an even port number", v)
			}
			s.PortBase = p
			return nil
		}},
	{"imgcast.disk", "DEVICE|serial:SERIAL", "", "the disk to write, by path (/dev/nvme0n1) or by the serial number the console and reports show (serial:S4EVNX0N123456; kernel names can change between boots of a machine with several disks) — waited for up to imgcast.disktimeout, then its size is checked; default: chosen once the storage drivers have found their disks — among the non-removable, non-USB disks large enough for the image, NVMe first, then SATA/SAS/SCSI (sd*), then virtio (vd*), then the rest, each in kernel name order",
		func(s *Settings, v string) error {
			if err := inventory.CheckDiskName(v); err != nil {
				return err
			}
			s.Disk = v
			return nil
		}},
	{"imgcast.mode", "multicast|unicast|debug", "multicast", "multicast or unicast imaging, or debug: network up, a banner and a shell",
		func(s *Settings, v string) error {
			switch m := Mode(v); m {
			case ModeMulticast, ModeUnicast, ModeDebug:
				s.Mode = m
				return nil
			}
			return fmt.Errorf("%q is not multicast, unicast or debug", v)
		}},
	{"imgcast.after", "reboot|poweroff|shell", "reboot", "what to do when the job has ended (and, after imgcast.failwait, when it failed); after a shell: reboot",
		func(s *Settings, v string) error {
			switch a := After(v); a {
			case AfterReboot, AfterPowerOff, AfterShell:
				s.After = a
				return nil
			}
			return fmt.Errorf("%q is not reboot, poweroff or shell", v)
		}},
	{"imgcast.mac", "MAC", "", "use only the NIC with this MAC address (iPXE: ${net0/mac}); pxelinux's BOOTIF=01-aa-bb-... is honoured too",
		func(s *Settings, v string) error {
			mac, err := net.ParseMAC(v)
			if err != nil {
				return fmt.Errorf("%q is not a MAC address", v)
			}
			s.MAC = mac
			return nil
		}},
	{"imgcast.fallback", "http|none", "none", "http: fetch the image over HTTP (unicast) when no multicast sender answers within imgcast.starttimeout or the session has already started",
		func(s *Settings, v string) error {
			switch v {
			case "http":
				s.Fallback = v
			case "none":
				s.Fallback = ""
			default:
				return fmt.Errorf("%q is not http or none", v)
			}
			return nil
		}},
	{"imgcast.rdv", "IP", "", "where the udpcast handshake goes, as udp-receiver's --mcast-rdv-address: default imgcast.server (as FOG clients do); a multicast group works too",
		func(s *Settings, v string) error {
			ip := net.ParseIP(v)
			if ip == nil || ip.To4() == nil {
				return fmt.Errorf("%q is not an IPv4 address", v)
			}
			s.Rendezvous = ip.To4()
			return nil
		}},
	{"imgcast.starttimeout", "DURATION", "10m", "how long to wait for the first partition's sender to start (the server waits for all its clients first); then fail, or fall back with imgcast.fallback=http",
		durationSetter(func(s *Settings) *time.Duration { return &s.StartTimeout })},
	{"imgcast.nextstarttimeout", "DURATION", "60s", "how long to wait for each later partition's sender (it starts as soon as the previous partition has ended, so a longer wait means the session broke)",
		durationSetter(func(s *Settings) *time.Duration { return &s.NextStartTimeout })},
	{"imgcast.ttl", "N", "32", "TTL of the client's multicast packets, as FOG runs udpcast (--ttl 32); 1 when neither imgcast.rdv nor imgcast.server is set",
		func(s *Settings, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 255 {
				return fmt.Errorf("%q is not a TTL (1..255)", v)
			}
			s.TTL = n
			return nil
		}},
	{"imgcast.receivetimeout", "DURATION", "30s", "how long a sender may stay silent in the middle of a stream before the partition fails",
		durationSetter(func(s *Settings) *time.Duration { return &s.ReceiveTimeout })},
	{"imgcast.linktimeout", "DURATION", "15s", "how long to wait for NICs to appear and get carrier, all in parallel",
		durationSetter(func(s *Settings) *time.Duration { return &s.LinkTimeout })},
	{"imgcast.dhcptimeout", "DURATION", "30s", "how long to try DHCP on each NIC with carrier (spanning tree on a switch port without portfast takes ~30 s)",
		durationSetter(func(s *Settings) *time.Duration { return &s.DHCPTimeout })},
	{"imgcast.disktimeout", "DURATION", "10s", "how long to wait for the disk: for imgcast.disk to appear, or for the storage drivers to finish finding disks (SATA and NVMe disks show up a while after their driver loads)",
		durationSetter(func(s *Settings) *time.Duration { return &s.DiskTimeout })},
	{"imgcast.failwait", "DURATION", "60s", "after a failure, how long the error stays on screen (Enter gives a shell) before imgcast.after",
		durationSetter(func(s *Settings) *time.Duration { return &s.FailWait })},
	{"imgcast.verbose", "0|1", "0", "1 logs every driver load, every DHCP exchange and the multicast receiver's phases on the console (its connection and warnings are always shown)",
		boolSetter(func(s *Settings) *bool { return &s.Verbose })},
	{"imgcast.mcastcheck", "0|1", "0", "1 runs the multicast check (as imgcast mcast-check recv -server imgcast.server) before imaging, shows its verdict on the console and reports it to the server's status page; a PROBLEM verdict does not stop imaging",
		boolSetter(func(s *Settings) *bool { return &s.MulticastCheck })},
	{"imgcast.igmpinterval", "SECONDS", "5", "how often the multicast receiver sends its own IGMP membership report for each joined group, so a switch that snoops IGMP without a querier keeps forwarding them; 0 turns it off",
		func(s *Settings, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 3600 {
				return fmt.Errorf("%q is not a number of seconds (0..3600)", v)
			}
			s.IGMPInterval = time.Duration(n) * time.Second
			return nil
		}},
	{"imgcast.sessionwait", "DURATION", "2h", "with imgcast-server --rolling, how long to wait for the next session when this machine booted too late for the running one (the console shows which session and since when); then fail",
		durationSetter(func(s *Settings) *time.Duration { return &s.SessionWait })},
}

// boolSetter parses 0 or 1 (or true/false).
func boolSetter(field func(*Settings) *bool) func(*Settings, string) error {
	return func(s *Settings, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not 0 or 1", v)
		}
		*field(s) = b
		return nil
	}
}

// urlSetter accepts http and https URLs.
func urlSetter(field func(*Settings) *string) func(*Settings, string) error {
	return func(s *Settings, v string) error {
		u, err := url.Parse(v)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return fmt.Errorf("%q is not an http(s) URL", v)
		}
		*field(s) = v
		return nil
	}
}

// durationSetter parses "30s", "2m" or plain seconds ("30").
func durationSetter(field func(*Settings) *time.Duration) func(*Settings, string) error {
	return func(s *Settings, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			n, nerr := strconv.Atoi(v)
			if nerr != nil {
				return fmt.Errorf("%q is not a duration (30s, 2m) or a number of seconds", v)
			}
			d = time.Duration(n) * time.Second
		}
		if d < 0 {
			return fmt.Errorf("%q is negative", v)
		}
		*field(s) = d
		return nil
	}
}

// defaultSettings are the settings with nothing on the command line.
func defaultSettings() *Settings {
	s := &Settings{}
	for _, k := range settingKeys {
		if k.def != "" {
			if err := k.set(s, k.def); err != nil {
				panic(fmt.Sprintf("default of %s: %v", k.name, err))
			}
		}
	}
	return s
}

// parseSettings reads the imgcast.* words of a kernel command line. It
// returns every problem at once; the settings that parsed are kept, the
// others stay at their defaults, so a failure path can still honour
// imgcast.after.
func parseSettings(cmdline string) (*Settings, error) {
	s := defaultSettings()
	keys := map[string]settingKey{}
	for _, k := range settingKeys {
		keys[k.name] = k
	}
	var errs []error
	bootif := ""
	for _, w := range shlex.Argv(cmdline) {
		name, value, hasValue := strings.Cut(w, "=")
		if strings.EqualFold(name, "BOOTIF") {
			bootif = value
			continue
		}
		if !strings.HasPrefix(name, "imgcast.") {
			continue
		}
		k, ok := keys[name]
		if !ok {
			errs = append(errs, fmt.Errorf("unknown setting %s (known: %s)", name, strings.Join(knownKeys(), " ")))
			continue
		}
		if !hasValue || value == "" {
			errs = append(errs, fmt.Errorf("%s has no value (want %s=%s)", name, name, k.value))
			continue
		}
		if err := k.set(s, value); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	if s.MAC == nil && bootif != "" {
		// pxelinux IPAPPEND 2: BOOTIF=01-52-54-00-12-34-56 (01 = Ethernet).
		if mac, err := net.ParseMAC(strings.ReplaceAll(strings.TrimPrefix(bootif, "01-"), "-", ":")); err == nil {
			s.MAC = mac
		}
	}
	if len(errs) > 0 {
		return s, &SettingsError{errs}
	}
	return s, nil
}

// SettingsError lists what is wrong on the kernel command line.
type SettingsError struct{ Errs []error }

func (e *SettingsError) Error() string {
	return "bad settings on the kernel command line: " + errors.Join(e.Errs...).Error()
}

// Hint says what to check.
func (e *SettingsError) Hint() string {
	return "fix the imgcast.* words in the boot script (iPXE kernel line); see README, \"Kernel command line\"; /proc/cmdline shows what the kernel got"
}

func knownKeys() []string {
	var names []string
	for _, k := range settingKeys {
		names = append(names, k.name)
	}
	sort.Strings(names)
	return names
}

// serverPort is the TCP port the network check connects to: the image
// URL's port when the URL points at the server, else 80.
func (s *Settings) serverPort() int {
	u, err := url.Parse(s.Image)
	server := s.serverAddr()
	if err != nil || s.Image == "" || server == nil || !net.ParseIP(u.Hostname()).Equal(server) {
		return 80
	}
	if p, err := strconv.Atoi(u.Port()); err == nil {
		return p
	}
	if u.Scheme == "https" {
		return 443
	}
	return 80
}

// serverAddr is the server: imgcast.server, else the image URL's host if
// that is an IP address.
func (s *Settings) serverAddr() net.IP {
	if s.Server != nil {
		return s.Server
	}
	if u, err := url.Parse(s.Image); err == nil && s.Image != "" {
		if ip := net.ParseIP(u.Hostname()); ip != nil {
			return ip.To4()
		}
	}
	return nil
}
