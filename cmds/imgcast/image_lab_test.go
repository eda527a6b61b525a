package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/defaultimage"
	"github.com/imgcast/imgcast/internal/lab"
	"github.com/imgcast/imgcast/pkg/status"
)

// labBinaries builds imgcast and imgcast-server once per test binary.
var labBinaries struct {
	once             sync.Once
	dir              string
	imgcast, server  string
	images, ref, err string
}

func buildLabBinaries(t *testing.T) (imgcast, server, images, ref string) {
	t.Helper()
	b := &labBinaries
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "imgcast-lab-")
		if err != nil {
			b.err = err.Error()
			return
		}
		b.dir = dir
		b.imgcast, b.server = filepath.Join(dir, "imgcast"), filepath.Join(dir, "imgcast-server")
		for out, pkg := range map[string]string{b.imgcast: ".", b.server: "../imgcast-server"} {
			if o, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
				b.err = fmt.Sprintf("go build %s: %v\n%s", pkg, err, o)
				return
			}
		}
		b.images, b.ref = filepath.Join(dir, "images", "default"), filepath.Join(dir, "reference.raw")
		if err := defaultimage.Build(b.images, b.ref); err != nil {
			b.err = err.Error()
		}
	})
	if b.err != "" {
		t.Fatal(b.err)
	}
	return b.imgcast, b.server, filepath.Dir(b.images), b.ref
}

func TestMain(m *testing.M) {
	code := m.Run()
	if labBinaries.dir != "" {
		os.RemoveAll(labBinaries.dir)
	}
	defaultimage.RemoveShared()
	os.Exit(code)
}

// TestImageFromServerInNamespaces runs the real serving side
// (imgcast-server driving udpcast's udp-sender) and two `imgcast image`
// clients in network namespaces: both disks must come out with the
// reference partitions, received by multicast, and the server must have
// seen both clients report done.
func TestImageFromServerInNamespaces(t *testing.T) {
	lab.Require(t, "udp-sender", "curl")
	imgcast, server, images, ref := buildLabBinaries(t)
	n := lab.T(t, 91)
	srvIP := n.Switch.IP.String()
	base := "http://" + srvIP + ":8080"

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var srvLog bytes.Buffer
	srv := n.Switch.Command(ctx, server, "--images", images, "--interface", n.Bridge, "--clients", "2",
		"--max-wait", "60s", "--listen", srvIP+":8080", "--portbase", "9000")
	srv.Stdout, srv.Stderr = &srvLog, &srvLog
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("imgcast-server log:\n%s", srvLog.String())
		}
	}()
	waitHTTP(t, n.Switch, base+"/api/session")

	type client struct {
		host *lab.Host
		disk string
		out  bytes.Buffer
		err  error
	}
	var clients []*client
	for i := range 2 {
		h, err := n.AddHost(fmt.Sprintf("c%d", i), 11+i)
		if err != nil {
			t.Fatal(err)
		}
		disk := filepath.Join(t.TempDir(), "disk.raw")
		if err := os.WriteFile(disk, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(disk, defaultimage.DiskSize); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, &client{host: h, disk: disk})
	}
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := c.host.Command(ctx, imgcast, "image", "-mode", "multicast", "-disk", c.disk, "-interface", "eth0",
				"-rdv", srvIP, "-start-timeout", "60s", "-receive-timeout", "10s",
				"-report", base+"/api/status", base+"/images/default/")
			cmd.Stdout, cmd.Stderr = &c.out, &c.out
			c.err = cmd.Run()
		}()
	}
	wg.Wait()
	for i, c := range clients {
		if c.err != nil {
			t.Fatalf("client %d: %v\n%s", i, c.err, c.out.String())
		}
		if err := defaultimage.ComparePartitions(c.disk, ref); err != nil {
			t.Errorf("client %d: %v", i, err)
		}
		if !strings.Contains(c.out.String(), "(multicast)") {
			t.Errorf("client %d did not receive by multicast:\n%s", i, c.out.String())
		}
	}

	// The server saw both machines finish.
	out, err := n.Switch.Command(ctx, "curl", "-sf", base+"/api/status").Output()
	if err != nil {
		t.Fatalf("GET /api/status: %v", err)
	}
	var list []status.Client
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatalf("/api/status: %v\n%s", err, out)
	}
	done := 0
	for _, c := range list {
		if c.State == status.Done {
			done++
		}
	}
	if done != 2 {
		t.Errorf("server lists %d clients done, want 2:\n%s", done, out)
	}
}

func waitHTTP(t *testing.T, h *lab.Host, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if h.Run("curl", "-sf", "-o", "/dev/null", url) == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer within 20s", url)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
