package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
)

// Shells to try, in order. u-root's -defaultsh makes /bin/defaultsh gosh.
var shells = []string{"/bin/defaultsh", "/bin/sh", "/bbin/gosh"}

// shell runs the debug shell on the console and waits for it to exit.
//
// The agent starts the shell itself: u-root init's own fallback shell dies
// at once when the uinit has exited (the console is hung up with the
// session leader), so after a failure there would be no shell at all.
func (a *agent) shell() error {
	for _, path := range shells {
		if _, err := os.Stat(path); err != nil {
			continue
		}
		c := exec.Command(path)
		// The console itself (an *os.File) is handed over, not a pipe, so
		// the shell reads lines through the tty's line discipline.
		c.Stdin, c.Stdout, c.Stderr = a.stdin, a.stdout, a.stderr
		c.Dir = "/"
		return c.Run()
	}
	return errors.New("no shell in this image")
}

// startShell announces and runs the shell; why says why there is one.
func (a *agent) startShell(why string) {
	after := AfterReboot
	if a.settings != nil {
		after = a.settings.After
	}
	fmt.Fprintf(a.stdout, "\nimgcast: debug shell (%s). Type 'exit' to leave it; then the machine will %s.\n", why, powerWord(after))
	a.shellRunning.Store(true)
	err := a.runShell()
	a.shellRunning.Store(false)
	if err != nil {
		a.logf("shell: %v", err)
	}
}

// powerWord is what the machine does after a shell (or the failure wait)
// with this after-action.
func powerWord(a After) string {
	if a == AfterPowerOff {
		return "power off"
	}
	return "reboot"
}
