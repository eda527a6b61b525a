package lab

import (
	"context"
	"os/exec"
	"strings"
	"testing"
)

func TestHostsReachEachOther(t *testing.T) {
	Require(t, "ping")
	n := T(t, 98)
	a, err := n.AddHost("a", 11)
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.AddHost("b", 12)
	if err != nil {
		t.Fatal(err)
	}
	for _, from := range []*Host{a, b, n.Switch} {
		for _, to := range []*Host{a, b, n.Switch} {
			if err := from.Run("ping", "-c1", "-W2", to.IP.String()); err != nil {
				t.Errorf("%s -> %s: %v", from.NS, to.IP, err)
			}
		}
	}
	if _, err := n.AddTap(); err != nil {
		t.Fatal(err)
	}
}

func TestDropUDPInstallsAndRemovesRule(t *testing.T) {
	Require(t)
	n := T(t, 97)
	h, err := n.AddHost("h", 11)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.DropUDP(9000, 10); err != nil {
		t.Fatal(err)
	}
	if err := h.DropUDP(9000, 3); err != nil { // replaces, does not stack
		t.Fatal(err)
	}
	out, err := h.Command(context.Background(), "nft", "list", "ruleset").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(out), "numgen random"); got != 1 {
		t.Fatalf("want exactly one drop rule, got %d:\n%s", got, out)
	}
	if !strings.Contains(string(out), "< 3") {
		t.Fatalf("rule not replaced:\n%s", out)
	}
	if err := h.StopDropping(); err != nil {
		t.Fatal(err)
	}
}

func TestCloseRemovesNamespaces(t *testing.T) {
	Require(t)
	n, err := New(96)
	if err != nil {
		t.Fatal(err)
	}
	h, err := n.AddHost("x", 11)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), h.NS) || strings.Contains(string(out), n.Switch.NS) {
		t.Fatalf("namespaces left after Close:\n%s", out)
	}
}
