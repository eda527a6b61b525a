package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/internal/testtools"
)

func need(t *testing.T, tools ...string) {
	t.Helper()
	testtools.Require(t, tools...)
}

func sh(t *testing.T, script string, args ...string) {
	t.Helper()
	out, err := exec.Command("bash", append([]string{"-euo", "pipefail", "-c", script, "bash"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// The CLI end to end: a pigz-compressed partclone image on stdin to a new
// file, a whole disk from a folder, and clear errors for bad input.
func TestRestoreCommands(t *testing.T) {
	need(t, "mkfs.ext4", "partclone.ext4", "partclone.restore", "pigz", "sfdisk", "e2fsck")
	dir := t.TempDir()
	sh(t, `cd "$1"
		mkdir tree; head -c 1500000 /dev/urandom > tree/a; echo hello > tree/b
		truncate -s 8M fs.img; mkfs.ext4 -q -F -b 4096 -d tree fs.img
		partclone.ext4 -c -s fs.img -o fs.pcl -L log -q >/dev/null 2>&1
		pigz -c fs.pcl > fs.pcl.gz
		truncate -s 8M ref.raw; partclone.restore -s fs.pcl -O ref.raw -C -L log >/dev/null 2>&1
		mkdir folder; cp fs.pcl.gz folder/d1p1.img
		printf 'label: dos\nunit: sectors\n\n/dev/sda1 : start=2048, size=16384, type=83\n' > folder/d1.partitions
		truncate -s 12M disk.img`, dir)
	p := func(name string) string { return filepath.Join(dir, name) }

	in, err := os.Open(p("fs.pcl.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var stdout, stderr bytes.Buffer
	if err := run([]string{"restore-partition", "-", p("new.raw")}, in, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "100.0%") || !strings.Contains(stdout.String(), "gzip compression") {
		t.Errorf("output:\n%s\n%s", stdout.String(), stderr.String())
	}
	sh(t, `cmp "$1" "$2" && e2fsck -fn "$1" >/dev/null`, p("new.raw"), p("ref.raw"))

	stdout.Reset()
	if err := run([]string{"restore-disk", "-q", p("folder"), p("disk.img")}, nil, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	sh(t, `sfdisk -d "$1" | grep -q 'start=        2048, size=       16384, type=83' &&
		cmp -n 8388608 "$2" <(tail -c +1048577 "$1")`, p("disk.img"), p("ref.raw"))

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"restore-partition", p("fs.img"), p("x.raw")}, "not a partclone image"},
		{[]string{"restore-partition", p("fs.pcl")}, "need SOURCE and TARGET"},
		{[]string{"restore-partition", "-sha256", strings.Repeat("ab", 32), p("fs.pcl"), p("y.raw")}, "SHA-256"},
		{[]string{"restore-disk", p("folder"), p("fs.img")}, "needs a disk of at least"},
		{[]string{"restore-disk", dir, p("disk.img")}, "d1.partitions"},
	} {
		err := run(tc.args, nil, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
