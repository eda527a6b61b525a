package ping

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/imgcast/imgcast/internal/lab"
)

func TestEchoLoopback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rtt, err := Echo(ctx, netip.Addr{}, netip.MustParseAddr("127.0.0.1"))
	if errors.Is(err, os.ErrPermission) {
		t.Skip("neither raw nor unprivileged ICMP sockets are allowed here")
	}
	if err != nil || rtt <= 0 || rtt > time.Second {
		t.Fatalf("rtt %v, err %v", rtt, err)
	}
}

func TestEchoInLab(t *testing.T) {
	lab.Require(t)
	n := lab.T(t, 63)
	h, err := n.AddHost("h", 11)
	if err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddr(h.IP.String())
	for _, tc := range []struct {
		dst  string
		want error
	}{
		{n.Switch.IP.String(), nil},
		{"10.63.0.99", ErrNoReply}, // nobody there
	} {
		// The socket is made in the host's namespace, the echo runs
		// from there.
		err := h.Do(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := Echo(ctx, src, netip.MustParseAddr(tc.dst))
			return err
		})
		if !errors.Is(err, tc.want) && err != tc.want {
			t.Errorf("ping %s: %v, want %v", tc.dst, err, tc.want)
		}
	}
}
