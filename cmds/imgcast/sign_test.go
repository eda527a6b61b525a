package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// keygen, sign and restore-disk -pubkey end to end, and the refusals a
// key brings: an altered image or a folder without a manifest.
func TestSignCommands(t *testing.T) {
	need(t, "mkfs.ext4", "partclone.ext4", "pigz", "sfdisk")
	dir := t.TempDir()
	sh(t, `cd "$1"
		mkdir tree; head -c 6000000 /dev/urandom > tree/a; echo hello > tree/b
		truncate -s 16M fs.img; mkfs.ext4 -q -F -b 4096 -d tree fs.img
		mkdir win11; partclone.ext4 -c -s fs.img -o - -L log -q 2>/dev/null | pigz -c > win11/d1p1.img
		printf 'label: dos\nunit: sectors\n\n/dev/sda1 : start=2048, size=32768, type=83\n' > win11/d1.partitions
		truncate -s 20M disk.img`, dir)
	p := func(name string) string { return filepath.Join(dir, name) }
	var stdout, stderr bytes.Buffer
	must := func(args ...string) {
		t.Helper()
		stdout.Reset()
		stderr.Reset()
		if err := run(args, nil, &stdout, &stderr); err != nil {
			t.Fatalf("imgcast %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
	}
	must("keygen", p("lab"))
	if err := run([]string{"keygen", p("lab")}, nil, &stdout, &stderr); err == nil {
		t.Error("keygen overwrote lab.key")
	}
	must("sign", "-key", p("lab.key"), p("win11"))
	if !strings.Contains(stdout.String(), `signed image "win11"`) {
		t.Errorf("sign said: %s", stdout.String())
	}
	must("restore-disk", "-q", "-pubkey", p("lab.pub"), p("win11"), p("disk.img"))
	if !strings.Contains(stdout.String(), "signed manifest of image \"win11\" verified") {
		t.Errorf("restore-disk said: %s", stdout.String())
	}

	// Another folder name is another image: the manifest is refused,
	// unless the expected id is given.
	sh(t, `cp -a "$1/win11" "$1/win10"`, dir)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"restore-disk", "-pubkey", p("lab.pub"), p("win10"), p("disk.img")}, `of image "win11", not "win10"`},
		{[]string{"restore-disk", "-pubkey", p("lab.key"), p("win11"), p("disk.img")}, "NAME.pub"},
		{[]string{"sign", p("win11")}, "need -key"},
	} {
		err := run(tc.args, nil, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("imgcast %s: got %v, want %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	must("restore-disk", "-q", "-pubkey", p("lab.pub"), "-image-id", "win11", p("win10"), p("disk.img"))

	// An altered image fails, and the disk is left wiped.
	b, _ := os.ReadFile(p("win11/d1p1.img"))
	b[len(b)-100] ^= 1 // in the second chunk: found during the restore, not by the header check
	os.WriteFile(p("win11/d1p1.img"), b, 0o644)
	err := run([]string{"restore-disk", "-q", "-pubkey", p("lab.pub"), p("win11"), p("disk.img")}, nil, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "does not match the signed manifest") || !strings.Contains(err.Error(), "wiped") {
		t.Fatalf("altered image: %v", err)
	}
	os.Remove(p("win11/d1.manifest"))
	err = run([]string{"restore-disk", "-q", "-pubkey", p("lab.pub"), p("win11"), p("disk.img")}, nil, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "has no d1.manifest") {
		t.Fatalf("no manifest: %v", err)
	}
}
