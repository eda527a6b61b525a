package receiver

import (
	"fmt"
	"net/netip"
	"time"
)

// Defaults used for zero Config fields.
const (
	DefaultPort             = 9000
	DefaultExitWait         = 500 * time.Millisecond
	DefaultReceiveBuffer    = 4 << 20
	DefaultMemoryLimit      = 16 << 20
	DefaultProgressInterval = 500 * time.Millisecond
	// DefaultConnectRetry is short enough that, with its random
	// lengthening, a repeat after a lost CONNECT_REPLY still reaches a
	// udp-sender before it starts the transfer (2 s after the last
	// connection), after which it no longer answers.
	DefaultConnectRetry = 500 * time.Millisecond
	// MaxConnectRetry caps the interval between repeated CONNECT_REQs.
	MaxConnectRetry = 2 * time.Minute
)

// Config describes one reception. The zero value receives from a sender
// on the default ports, found by broadcast on the automatically chosen
// interface, and waits for it forever.
type Config struct {
	// Port is the port base P: the receiver uses P, the sender P+1.
	// 0 means 9000. The agent receives partition i on base+2*i.
	Port int
	// Interface is an interface name, an IPv4 address or a name prefix;
	// empty picks one the way udpcast does (eth0/en* first).
	Interface string
	// RendezvousAddr is udp-sender's --mcast-rdv-address: a multicast
	// group (or a unicast address) for the handshake instead of the
	// interface's broadcast address. A unicast address is the sender's:
	// HELLO and CONNECT_REPLY are then accepted only from it, so that
	// another host cannot take the session over.
	RendezvousAddr netip.Addr
	// TTL of multicast messages; a TTL other than 1 (without
	// RendezvousAddr) makes the handshake use 224.0.0.1, as udpcast does.
	TTL int
	// Passive never sends CONNECT_REQ: the first HELLO is the connection.
	Passive bool

	// StartTimeout bounds the wait for a sender, and then for its first
	// data packet; it restarts at every datagram the sender sends. 0 waits
	// forever. Expiry returns a *StartTimeoutError (ErrStartTimeout).
	StartTimeout time.Duration
	// ReceiveTimeout ends the transfer with ErrReceiveTimeout when the
	// sender sends nothing for this long once data have started. 0 waits
	// forever (as udpcast does by default).
	ReceiveTimeout time.Duration
	// ExitWait is how long to keep answering the sender after the end of
	// the stream (to re-acknowledge a lost final OK). 0 means 500 ms, a
	// negative value means not at all.
	ExitWait time.Duration
	// IgnoreLostData delivers slices with holes (zeroed) instead of
	// failing when an async sender moves on without them.
	IgnoreLostData bool
	// ConnectRetry is the first interval at which CONNECT_REQ is repeated
	// until a sender answers (udpcast sends it only once; a repeat
	// survives a lost HELLO). Each further interval doubles, up to
	// MaxConnectRetry, and each is lengthened by a random 0-100 %: an
	// --async udp-sender repeats its HELLO only after a second in which
	// nothing reached it, which receivers repeating every second would
	// never grant it. Once a HELLO was heard, repeats go only to the
	// sender that sent it. 0 means DefaultConnectRetry, negative means never
	// repeat.
	ConnectRetry time.Duration
	// IGMPReportInterval is how often the receiver sends its own IGMP
	// membership report for each group it joined, so that a switch that
	// snoops IGMP without a querier keeps forwarding them. 0 means 5 s,
	// negative means never. It needs a raw socket (root); without one it
	// tells Logf once (Logf may then be called from another goroutine).
	IGMPReportInterval time.Duration

	// ReceiveBuffer is the socket receive buffer in bytes (SO_RCVBUFFORCE
	// when permitted). 0 means 4 MiB.
	ReceiveBuffer int
	// MemoryLimit bounds, in bytes, the slice buffers: the slices being
	// received, those queued for the writer and being written, and
	// those kept for reuse. Buffers are taken as payloads arrive, and a
	// slice may use a third of the limit: a sender whose slices are
	// larger is refused with ErrProtocol. When the writer falls behind,
	// the receiver holds back its acknowledgements so the sender waits.
	// 0 means 16 MiB (enough for 1024-block slices of 1456 to 5461
	// bytes). Not included: the socket buffer (ReceiveBuffer) and up to
	// 4 MiB of read buffers.
	MemoryLimit int

	// StartSignal, if not nil, makes the receiver send GO (start now) to
	// the sender once it is connected and the channel yields or is closed.
	StartSignal <-chan struct{}
	// OnConnect, if set, is called once the sender accepted us, before any
	// data; an error aborts the reception (the sender is told).
	OnConnect func(Progress) error
	// Progress, if set, is called at every phase change and, while data
	// flow, at most every ProgressInterval (0: 500 ms; negative: after
	// every slice). It runs on the receiving goroutine: keep it short.
	Progress         func(Progress)
	ProgressInterval time.Duration
	// Logf, if set, receives informational and diagnostic messages.
	Logf func(format string, args ...any)
}

func (c Config) withDefaults() (Config, error) {
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Port < 1 || c.Port > 65534 {
		return c, errorf(ErrSetup, "port base %d out of range 1..65534", c.Port)
	}
	if c.TTL == 0 {
		c.TTL = 1
	}
	if c.TTL < 0 || c.TTL > 255 {
		return c, errorf(ErrSetup, "TTL %d out of range 1..255", c.TTL)
	}
	if c.RendezvousAddr.IsValid() && !c.RendezvousAddr.Unmap().Is4() {
		return c, errorf(ErrSetup, "rendezvous address %s is not IPv4", c.RendezvousAddr)
	}
	c.RendezvousAddr = c.RendezvousAddr.Unmap()
	if c.ExitWait == 0 {
		c.ExitWait = DefaultExitWait
	}
	if c.ConnectRetry == 0 {
		c.ConnectRetry = DefaultConnectRetry
	}
	if c.ReceiveBuffer == 0 {
		c.ReceiveBuffer = DefaultReceiveBuffer
	}
	if c.MemoryLimit == 0 {
		c.MemoryLimit = DefaultMemoryLimit
	}
	if c.MemoryLimit < 0 {
		return c, errorf(ErrSetup, "memory limit %d is negative", c.MemoryLimit)
	}
	if c.ProgressInterval == 0 {
		c.ProgressInterval = DefaultProgressInterval
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c, nil
}

// Phase is where a reception stands.
type Phase int

// Phases in order.
const (
	PhaseRendezvous Phase = iota // looking for a sender
	PhaseConnected               // accepted by the sender, waiting for data
	PhaseReceiving               // data flowing
	PhaseFinishing               // end of stream seen, flushing the output
	PhaseDone                    // finished successfully
)

func (p Phase) String() string {
	switch p {
	case PhaseRendezvous:
		return "rendezvous"
	case PhaseConnected:
		return "connected"
	case PhaseReceiving:
		return "receiving"
	case PhaseFinishing:
		return "finishing"
	case PhaseDone:
		return "done"
	}
	return fmt.Sprintf("Phase(%d)", int(p))
}

// DataPath says how data packets reach this receiver.
type DataPath int

// Data paths.
const (
	PathUnknown   DataPath = iota
	PathUnicast            // udp-sender's automatic point-to-point (one receiver) or --pointopoint
	PathMulticast          // a multicast group
	PathBroadcast          // udp-sender --broadcast
)

func (p DataPath) String() string {
	switch p {
	case PathUnicast:
		return "unicast"
	case PathMulticast:
		return "multicast"
	case PathBroadcast:
		return "broadcast"
	}
	return "unknown"
}

// Progress is a snapshot of a reception.
type Progress struct {
	Phase     Phase
	Interface string     // chosen interface
	LocalIP   netip.Addr // its address, the source of everything sent
	// Sender is the sender's address (IP, port P+1), once connected.
	Sender    netip.AddrPort
	Client    int        // client number the sender assigned
	BlockSize int        // negotiated block size
	DataGroup netip.Addr // data address the sender advertised
	Path      DataPath   // how data arrive, once they do
	Async     bool       // sender has no return channel (--async)
	Streaming bool       // joined a --streaming sender

	Received     int64         // bytes of complete slices handed to the writer
	Written      int64         // bytes written to the output
	Slice        int32         // slice being received
	Retransmits  int64         // RETRANSMIT requests sent
	AcksHeldBack int64         // OKs delayed because the writer fell behind
	FECRecovered int64         // blocks rebuilt from FEC
	Elapsed      time.Duration // since the first data packet
}

// Rate is the average reception rate in bytes per second.
func (p Progress) Rate() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.Received) / p.Elapsed.Seconds()
}
