package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/internal/defaultimage"
	"github.com/imgcast/imgcast/internal/testfs"
	"github.com/imgcast/imgcast/internal/testtools"
	"github.com/imgcast/imgcast/pkg/fogmc"
	"github.com/imgcast/imgcast/pkg/imaging"
	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/manifest"
	"github.com/imgcast/imgcast/pkg/receiver"
)

// TestAgentRequiresASignedImage boots the agent with a public key built
// into its image (/etc/imgcast/image.pub): a signed image is written, a
// tampered multicast stream fails with the disk wiped, and an unsigned
// folder is refused before anything is written.
func TestAgentRequiresASignedImage(t *testing.T) {
	shared, ref, err := defaultimage.Shared(testtools.Find)
	if err != nil {
		testtools.Missing(t, err)
	}
	keys := t.TempDir()
	if _, err := manifest.WriteKeyPair(filepath.Join(keys, "lab")); err != nil {
		t.Fatal(err)
	}
	priv, err := manifest.LoadPrivateKey(filepath.Join(keys, "lab.key"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(filepath.Join(keys, "lab.pub"))
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, dir string)
		want    []string // on the console; none: success
		// written: the failure came after the table was written, which
		// must then be wiped; else the disk must be untouched.
		written bool
	}{
		{name: "signed"},
		{name: "tampered stream", written: true,
			prepare: func(t *testing.T, dir string) {
				p := filepath.Join(dir, "d1p2.img")
				b, _ := os.ReadFile(p)
				b[len(b)/2] ^= 1
				os.WriteFile(p, b, 0o644)
			},
			want: []string{"d1p2.img: chunk 0", "does not match the signed manifest", "the disk was wiped so it cannot pass for imaged",
				"someone on the network injected data"}},
		{name: "unsigned folder",
			prepare: func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "d1.manifest")) },
			want:    []string{"has no d1.manifest", "sign the folder (imgcast sign"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "default")
			if err := os.CopyFS(dir, os.DirFS(shared)); err != nil {
				t.Fatal(err)
			}
			if _, err := manifest.SignFolder(context.Background(), dir, 1, "default", priv); err != nil {
				t.Fatal(err)
			}
			if tc.prepare != nil {
				tc.prepare(t, dir)
			}
			srv := httptest.NewServer(http.StripPrefix("/images/default/", http.FileServer(http.Dir(dir))))
			defer srv.Close()

			ta := newTestAgent(t, strings.NewReader(""), upOK)
			ta.root = testfs.Tree(t, map[string]string{
				"sys/block/vda/size": "163840\n", "sys/block/vda/removable": "0\n",
				"etc/imgcast/image.pub": string(pub),
			}, nil)
			disk := filepath.Join(t.TempDir(), "vda.raw")
			pattern := bytes.Repeat([]byte{0x5a}, defaultimage.DiskSize)
			if tc.want == nil {
				pattern = make([]byte, defaultimage.DiskSize) // restore leaves unused blocks as they are
			}
			if err := os.WriteFile(disk, pattern, 0o644); err != nil {
				t.Fatal(err)
			}
			ta.diskSource = func(w inventory.DiskWait) imaging.DiskSource {
				return diskSourceFunc(func(ctx context.Context, min uint64) (inventory.Disk, error) {
					d, err := w.WaitDisk(ctx, min)
					d.Path = disk
					return d, err
				})
			}
			ta.receive = streamFolder(dir, 9000)

			cmdline := "imgcast.mode=multicast imgcast.server=127.0.0.1 imgcast.image=" + srv.URL + "/images/default/ " +
				"imgcast.report=" + srv.URL + "/api/status imgcast.after=poweroff imgcast.failwait=0"
			err := ta.run(context.Background(), cmdline)
			console := ta.out.String()
			if !strings.Contains(console, "this boot image has a public key") {
				t.Errorf("the agent does not say it requires a signed image:\n%s", console)
			}
			if tc.want == nil {
				if err != nil {
					t.Fatalf("agent: %v\n%s", err, console)
				}
				if !strings.Contains(console, `Signed manifest of image "default" verified`) {
					t.Errorf("console does not say the manifest verified:\n%s", console)
				}
				if err := defaultimage.ComparePartitions(disk, ref); err != nil {
					t.Error(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("the agent wrote the image:\n%s", console)
			}
			for _, w := range tc.want {
				if !strings.Contains(console, w) {
					t.Errorf("console lacks %q:\n%s", w, console)
				}
			}
			got, _ := os.ReadFile(disk)
			if !tc.written {
				if i := bytes.IndexFunc(got, func(r rune) bool { return r != 0x5a }); i >= 0 {
					t.Errorf("the disk was written at byte %d although the image was refused", i)
				}
				return
			}
			if !bytes.Equal(got[512:34*512], make([]byte, 33*512)) {
				t.Error("the GPT was left on the disk after the failure")
			}
			for _, off := range []int{defaultimage.Part1Offset, defaultimage.Part2Offset} {
				if !bytes.Equal(got[off:off+1<<20], make([]byte, 1<<20)) {
					t.Errorf("the partition at byte %d was not wiped", off)
				}
			}
		})
	}
}

// streamFolder is a receiver that plays the server's multicast streams
// from an image folder: partition i's file, with its FOGMC1 header, on
// port portBase+2*(i-1).
func streamFolder(dir string, portBase int) imaging.ReceiveFunc {
	return func(ctx context.Context, cfg receiver.Config, w io.Writer) (receiver.Progress, error) {
		name := fmt.Sprintf("d1p%d.img", (cfg.Port-portBase)/2+1)
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return receiver.Progress{}, &receiver.StartTimeoutError{Timeout: cfg.StartTimeout}
		}
		defer f.Close()
		h, err := fogmc.Format(name)
		if err != nil {
			return receiver.Progress{}, err
		}
		if _, err := w.Write(h); err != nil {
			return receiver.Progress{}, err
		}
		_, err = io.Copy(w, f)
		return receiver.Progress{}, err
	}
}

// imgcast image -pubkey [-image-id]: the same verification by hand.
func TestImageCommandPubkey(t *testing.T) {
	shared, ref, err := defaultimage.Shared(testtools.Find)
	if err != nil {
		testtools.Missing(t, err)
	}
	tmp := t.TempDir()
	p := func(name string) string { return filepath.Join(tmp, name) }
	if _, err := manifest.WriteKeyPair(p("lab")); err != nil {
		t.Fatal(err)
	}
	priv, err := manifest.LoadPrivateKey(p("lab.key"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"win11", "unsigned"} {
		if err := os.CopyFS(p(name), os.DirFS(shared)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := manifest.SignFolder(context.Background(), p("win11"), 1, "win11", priv); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string // in the error; "" for success
	}{
		{"signed", []string{"-pubkey", p("lab.pub"), p("win11")}, ""},
		{"signed, id given", []string{"-pubkey", p("lab.pub"), "-image-id", "win11", p("win11")}, ""},
		{"another image id", []string{"-pubkey", p("lab.pub"), "-image-id", "win10", p("win11")}, `of image "win11", not "win10"`},
		{"unsigned", []string{"-pubkey", p("lab.pub"), p("unsigned")}, "has no d1.manifest"},
		{"the private key given", []string{"-pubkey", p("lab.key"), p("win11")}, "NAME.pub"},
		{"an id without a key", []string{"-image-id", "win11", p("win11")}, "-image-id needs a key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := p("disk.raw")
			if err := os.WriteFile(disk, bytes.Repeat([]byte{0x5a}, defaultimage.DiskSize), 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				os.Truncate(disk, 0)
				os.Truncate(disk, defaultimage.DiskSize)
			}
			var stdout, stderr bytes.Buffer
			args := append([]string{"image", "-mode", "unicast", "-disk", disk}, tc.args...)
			err := run(args, nil, &stdout, &stderr)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("imgcast %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
				}
				if !strings.Contains(stdout.String(), `Signed manifest of image "win11" verified`) {
					t.Errorf("output does not say the manifest verified:\n%s", stdout.String())
				}
				if err := defaultimage.ComparePartitions(disk, ref); err != nil {
					t.Error(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("imgcast %s: %v, want %q", strings.Join(args, " "), err, tc.want)
			}
			got, _ := os.ReadFile(disk)
			if i := bytes.IndexFunc(got, func(r rune) bool { return r != 0x5a }); i >= 0 {
				t.Errorf("the disk was written at byte %d although the image was refused", i)
			}
		})
	}
}
