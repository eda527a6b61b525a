package lab

import (
	"net"
	"testing"
)

// TestDoOpensSocketsInTheHost: a socket bound to the host's lab address
// can only be made inside its namespace, and the test's own thread comes
// back to its namespace afterwards.
func TestDoOpensSocketsInTheHost(t *testing.T) {
	Require(t)
	n := T(t, 95)
	h, err := n.AddHost("d", 11)
	if err != nil {
		t.Fatal(err)
	}
	addr := &net.UDPAddr{IP: h.IP}
	var c *net.UDPConn
	if err := h.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp4", addr)
		return err
	}); err != nil {
		t.Fatalf("bind %s inside %s: %v", h.IP, h.NS, err)
	}
	defer c.Close()
	if c2, err := net.ListenUDP("udp4", addr); err == nil {
		c2.Close()
		t.Fatalf("bound %s outside the host's namespace: Do did not switch back", h.IP)
	}
}
