package main

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcast/imgcast/pkg/server"
)

// The kernel command line imgcast-server's boot.ipxe hands out must parse
// without errors: an unknown key would stop every client at boot.
func TestSettingsAcceptImgcastServerBootScript(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"images/lab/d1.partitions": "label: gpt\n", "images/lab/d1p1.img": "data",
		"vmlinuz": "KERNEL", "initramfs.img": "INITRD",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, mode := range []string{"multicast", "unicast"} {
		srv, err := server.New(server.Config{
			Images: filepath.Join(dir, "images"), Address: "10.77.0.1", Port: 8080, Mode: mode, After: "poweroff",
			Kernel: filepath.Join(dir, "vmlinuz"), Initrds: []string{filepath.Join(dir, "initramfs.img")},
			Consoles: []string{"ttyS0"},
			Sender:   server.SenderConfig{Program: "true", Interface: "lo", PortBase: 9000, Clients: 1},
			Log:      log.New(io.Discard, "", 0),
		})
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(srv.Handler())
		resp, err := http.Get(hs.URL + "/boot.ipxe")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		hs.Close()
		var kernel string
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, "kernel ") {
				kernel = line
			}
		}
		if kernel == "" {
			t.Fatalf("no kernel line in boot.ipxe:\n%s", body)
		}
		// iPXE expands ${netX/mac} before the kernel sees the line.
		s, err := parseSettings(strings.ReplaceAll(kernel, "${netX/mac}", "52:54:00:12:34:56"))
		if err != nil {
			t.Fatalf("%s mode: the client rejects the server's command line: %v\n%s", mode, err, kernel)
		}
		if string(s.Mode) != mode || s.After != AfterPowerOff || s.serverAddr().String() != "10.77.0.1" || s.serverPort() != 8080 ||
			s.MAC.String() != "52:54:00:12:34:56" || s.Report == "" || s.Session == "" || s.Image == "" {
			t.Errorf("%s mode: settings %+v from %s", mode, s, kernel)
		}
	}
}
