package server

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/imgcast/imgcast/pkg/layout"
)

// SenderConfig is how each partition's udp-sender is run.
type SenderConfig struct {
	// Program is the udp-sender binary (default "udp-sender").
	Program   string
	Interface string
	// PortBase is the port of the first stream; stream i uses
	// PortBase+2*i and the port above it.
	PortBase int
	// Clients is --min-receivers: a transfer starts about 2 s after this
	// many receivers have connected.
	Clients int
	// MaxWait is --max-wait: start anyway this long after the first
	// receiver connected. MinWait is --min-wait. Zero leaves them out.
	MaxWait, MinWait time.Duration
	// RetriesUntilDrop is --retries-until-drop (0: udp-sender's default,
	// 200, which takes minutes to drop a dead receiver).
	RetriesUntilDrop int
	MaxBitrate       string // --max-bitrate, e.g. "600m"
	FEC              string // --fec, e.g. "8x8/128"
	RdvAddress       string // --mcast-rdv-address
	TTL              int    // --ttl (0: udp-sender's default)
	// Extra are further udp-sender arguments, passed as they are.
	Extra []string
	// StreamHeader puts a FOGMC1 record naming the image file in front
	// of each stream.
	StreamHeader bool
}

// Port returns the port base of stream i.
func (c SenderConfig) Port(i int) int { return layout.Port(c.PortBase, i) }

// Args returns udp-sender's arguments for stream i, which waits for
// receivers receivers. The data comes on stdin, so there is no --file, and
// --nokbd keeps udp-sender from taking stdin for a keyboard.
func (c SenderConfig) Args(i, receivers int) []string {
	args := []string{
		"--nokbd",
		"--interface", c.Interface,
		"--portbase", strconv.Itoa(c.Port(i)),
		"--min-receivers", strconv.Itoa(receivers),
	}
	if c.MaxWait > 0 {
		args = append(args, "--max-wait", seconds(c.MaxWait))
	}
	if c.MinWait > 0 {
		args = append(args, "--min-wait", seconds(c.MinWait))
	}
	if c.RetriesUntilDrop > 0 {
		args = append(args, "--retries-until-drop", strconv.Itoa(c.RetriesUntilDrop))
	}
	if c.MaxBitrate != "" {
		args = append(args, "--max-bitrate", c.MaxBitrate)
	}
	if c.FEC != "" {
		args = append(args, "--fec", c.FEC)
	}
	if c.RdvAddress != "" {
		args = append(args, "--mcast-rdv-address", c.RdvAddress)
	}
	if c.TTL > 0 {
		args = append(args, "--ttl", strconv.Itoa(c.TTL))
	}
	return append(args, c.Extra...)
}

// seconds renders d in whole seconds, rounded up (udp-sender takes
// integers), never below 1.
func seconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}

func (c SenderConfig) validate() error {
	switch {
	case c.Interface == "":
		return fmt.Errorf("udp-sender needs an interface (--interface)")
	case c.Clients < 1:
		return fmt.Errorf("clients must be at least 1, not %d", c.Clients)
	case c.PortBase < 1024 || c.PortBase > 65000 || c.PortBase%2 != 0:
		return fmt.Errorf("portbase %d must be even and between 1024 and 65000", c.PortBase)
	case c.MaxWait < 0 || c.MinWait < 0:
		return fmt.Errorf("waits must not be negative")
	}
	return nil
}
