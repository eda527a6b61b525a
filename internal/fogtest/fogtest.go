// Package fogtest holds what the tests of FOG image handling share: the
// host tools they check their results with, and partition dumps of real
// layouts.
package fogtest

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// toolDirs are where Debian puts tools a user's PATH may lack.
var toolDirs = []string{"/usr/sbin", "/sbin"}

// Need fails t unless every tool is installed (scripts/deps.sh installs
// them); with IMGCAST_QUICK set it skips t instead.
func Need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if path(tool) != "" {
			continue
		}
		if os.Getenv("IMGCAST_QUICK") != "" {
			t.Skipf("IMGCAST_QUICK is set and %s is not installed", tool)
		}
		t.Fatalf("%s is not installed; run scripts/deps.sh (make deps)", tool)
	}
}

func path(tool string) string {
	if p, err := exec.LookPath(tool); err == nil {
		return p
	}
	for _, d := range toolDirs {
		if st, err := os.Stat(d + "/" + tool); err == nil && !st.IsDir() {
			return d + "/" + tool
		}
	}
	return ""
}

// Run runs a tool and returns its standard output; a failure fails t
// with both outputs.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	return RunStdin(t, "", name, args...)
}

// RunStdin is Run with stdin.
func RunStdin(t testing.TB, stdin, name string, args ...string) string {
	t.Helper()
	p := path(name)
	if p == "" {
		p = name
	}
	cmd := exec.Command(p, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "MTOOLS_SKIP_CHECK=1")
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

// Win10 is a Windows 10 UEFI install on a 60 GiB disk as FOG captures it
// (d1.partitions): EFI, MSR, C: and the recovery partition at the end.
const Win10 = `label: gpt
label-id: 5C0B3F6E-1E2D-4A61-9B4C-0D1E2F3A4B5C
device: /dev/sda
unit: sectors
first-lba: 34
last-lba: 125829086
sector-size: 512

/dev/sda1 : start=        2048, size=      204800, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=0A1B2C3D-4E5F-4061-8273-849506172839, name="EFI system partition", attrs="GUID:63"
/dev/sda2 : start=      206848, size=       32768, type=E3C9E316-0B5C-4DB8-817D-F92DF00215AE, uuid=1A1B2C3D-4E5F-4061-8273-849506172839, name="Microsoft reserved partition", attrs="GUID:63"
/dev/sda3 : start=      239616, size=   124502016, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, uuid=2A1B2C3D-4E5F-4061-8273-849506172839, name="Basic data partition"
/dev/sda4 : start=   124741632, size=     1083392, type=DE94BBA4-06D1-4D40-A16A-BFD50179D6AC, uuid=3A1B2C3D-4E5F-4061-8273-849506172839, attrs="RequiredPartition GUID:63"
`

// Win10Min is its d1.minimum.partitions: C: shrunk to 25 GiB. The fixed
// list is 1:2:4.
var Win10Min = strings.Replace(Win10, "size=   124502016", "size=    52428800", 1)
