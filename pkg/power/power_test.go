package power

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func TestDo(t *testing.T) {
	defer func(old func(int) error) { reboot = old }(reboot)
	for _, tt := range []struct {
		action Action
		want   int
	}{{Reboot, unix.LINUX_REBOOT_CMD_RESTART}, {PowerOff, unix.LINUX_REBOOT_CMD_POWER_OFF}} {
		var got int
		reboot = func(cmd int) error { got = cmd; return nil }
		if err := Do(tt.action); err != nil || got != tt.want {
			t.Errorf("Do(%s): cmd %#x err %v, want %#x", tt.action, got, err, tt.want)
		}
	}
	reboot = func(int) error { return unix.EPERM }
	if err := Do(PowerOff); !errors.Is(err, unix.EPERM) {
		t.Errorf("failing reboot: err = %v", err)
	}
}
