// Package power powers the machine off or restarts it, after flushing
// every write to the disks. The imgcast client writes straight to block
// devices, so a power-off without a sync would lose the end of an image.
package power

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Action is what to do with the machine.
type Action int

const (
	// Reboot restarts the machine.
	Reboot Action = iota
	// PowerOff turns it off.
	PowerOff
)

func (a Action) String() string {
	if a == PowerOff {
		return "power off"
	}
	return "reboot"
}

// reboot is the system call; tests replace it.
var reboot = unix.Reboot

// Do syncs all filesystems and block devices, then reboots or powers off.
// It returns only on failure (usually: not root).
func Do(a Action) error {
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_RESTART
	if a == PowerOff {
		cmd = unix.LINUX_REBOOT_CMD_POWER_OFF
	}
	if err := reboot(cmd); err != nil {
		return fmt.Errorf("%s: %w", a, err)
	}
	return nil
}
