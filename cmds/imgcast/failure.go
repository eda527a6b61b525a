package main

import (
	"bufio"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/imgcast/imgcast/pkg/netup"
)

// Hinter is implemented by errors that know what the operator should
// check. Jobs return such errors; the failure path prints the hint.
type Hinter interface {
	Hint() string
}

// fail is the failure path, for every error of the agent and its jobs:
// the error, prominently, with what to check; then a shell in debug mode
// (or with imgcast.after=shell); otherwise imgcast.failwait during which
// Enter gives a shell, then imgcast.after. It returns err (joined with a
// power error) only if the machine did not go down.
func (a *agent) fail(err error) error {
	s := a.settings
	fmt.Fprint(a.stdout, failureText(err))
	if s.Mode == ModeDebug || s.After == AfterShell {
		if s.Mode == ModeDebug {
			a.printBanner()
		}
		a.startShell("imgcast failed")
		return a.after(afterShellAction(s.After), err)
	}
	if a.waitForEnter(s.FailWait) {
		a.startShell("imgcast failed")
		return a.after(afterShellAction(s.After), err)
	}
	return a.after(s.After, err)
}

// afterShellAction is the after-action once a shell has been had.
func afterShellAction(a After) After {
	if a == AfterShell {
		return AfterReboot
	}
	return a
}

const rule = "================================================================================"

// failureText is the failure box: the error and what to check.
func failureText(err error) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s\n*** imgcast FAILED ***\n%s\n", rule, rule)
	b.WriteString(err.Error())
	b.WriteString("\n")
	if hints := hintsFor(err); len(hints) > 0 {
		b.WriteString("\nWhat to check:\n")
		for _, h := range hints {
			b.WriteString("  - " + h + "\n")
		}
	}
	b.WriteString(rule + "\n")
	return b.String()
}

// hintsFor collects what to check for an error: the error's own hint, and
// for network failures the settings that bound the waits.
func hintsFor(err error) []string {
	var hints []string
	var h Hinter
	if errors.As(err, &h) {
		hints = append(hints, h.Hint())
	}
	var d *netup.Diagnosis
	if errors.As(err, &d) {
		switch d.Cause {
		case netup.CauseNoNIC:
			hints = append(hints, "a NIC without a driver in this image needs its module added to initramfs/modules.list; 'pci -n' and 'dmesg' show the hardware")
		case netup.CauseNoCarrier:
			hints = append(hints, "cable, switch port (enabled? right VLAN?); raise imgcast.linktimeout for slow links")
		case netup.CauseNoLease:
			hints = append(hints, "DHCP server or relay for this network; switch ports without portfast need imgcast.dhcptimeout above 30s")
		case netup.CauseUnreachable:
			hints = append(hints, "imgcast.server, routes and firewalls between this machine and the server")
		case netup.CauseNoMAC:
			hints = append(hints, "imgcast.mac (or BOOTIF) must name a NIC of this machine")
		}
	}
	return hints
}

// waitForEnter shows the countdown and reports whether Enter was pressed
// within d.
func (a *agent) waitForEnter(d time.Duration) bool {
	if d <= 0 {
		return false
	}
	fmt.Fprintf(a.stdout, "The machine will %s in %s (imgcast.failwait). Press Enter for a shell.\n", powerWord(a.settings.After), d)
	pressed := make(chan struct{})
	go func() {
		// This reader is left behind if the time runs out: the machine
		// is about to go down.
		if _, err := bufio.NewReader(a.stdin).ReadString('\n'); err == nil {
			close(pressed)
		}
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-pressed:
		return true
	case <-t.C:
		return false
	}
}
