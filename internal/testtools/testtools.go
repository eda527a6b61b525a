// Package testtools finds the Debian tools the tests run (sfdisk, sgdisk,
// mkfs.*, partclone.*, udp-sender, …), which scripts/deps.sh installs.
//
// Debian installs many of them in /usr/sbin and /sbin, which are not in a
// non-root user's PATH: the tools are looked up there too, and the test
// process's PATH is extended so commands and scripts that call them by
// name find them. A missing tool fails the test — CI installs them all —
// except in a quick run (IMGCAST_QUICK=1), where the test is skipped.
package testtools

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// sbin are the directories searched after PATH.
var sbin = []string{"/usr/local/sbin", "/usr/sbin", "/sbin"}

var extendPath sync.Once

// Find returns the path of each tool, or an error naming the missing ones.
func Find(tools ...string) ([]string, error) {
	extendPath.Do(func() {
		dirs := filepath.SplitList(os.Getenv("PATH"))
		for _, d := range sbin {
			if !contains(dirs, d) {
				dirs = append(dirs, d)
			}
		}
		os.Setenv("PATH", strings.Join(dirs, string(filepath.ListSeparator)))
	})
	var paths, missing []string
	for _, tool := range tools {
		p, err := exec.LookPath(tool)
		if err != nil {
			missing = append(missing, tool)
			continue
		}
		paths = append(paths, p)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s not installed; run scripts/deps.sh (make deps)", strings.Join(missing, ", "))
	}
	return paths, nil
}

// Require returns the path of each tool; a missing one skips the test in
// a quick run and fails it otherwise.
func Require(t testing.TB, tools ...string) []string {
	t.Helper()
	paths, err := Find(tools...)
	if err != nil {
		Missing(t, err)
	}
	return paths
}

// Missing ends the test for a missing tool (or a fixture that could not
// be built without it): a skip in a quick run, a failure otherwise.
func Missing(t testing.TB, err error) {
	t.Helper()
	if Quick() {
		t.Skipf("%v (IMGCAST_QUICK is set)", err)
	}
	t.Fatal(err)
}

// Quick reports whether this is a quick run (IMGCAST_QUICK set).
func Quick() bool { return os.Getenv("IMGCAST_QUICK") != "" }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
