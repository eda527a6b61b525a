package mcastcheck

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
)

// StreamConfig describes a test stream.
type StreamConfig struct {
	Group netip.Addr // the multicast group
	Port  int
	// Interface is where the multicast goes out; nil lets the routing
	// table decide.
	Interface *net.Interface
	// Source is the address to send from (invalid: the kernel's choice).
	Source netip.Addr
	TTL    int // multicast TTL; 0 means 1 (the LAN only), as udp-sender
	Rate   int // packets per second, 1..MaxRate
	Size   int // bytes per packet; 0 means DefaultSize
	// ID names the stream in every packet; 0 picks one at random.
	ID uint64
	// Packets is how many packets the stream sends (it may be extended);
	// 0 sends until Stop.
	Packets uint64
	// Unicast are receivers that get a unicast copy of every packet.
	Unicast []netip.Addr
	// Logf hears about send errors (first of a kind); may be nil.
	Logf func(format string, args ...any)
}

// MaxRate bounds a stream's packet rate.
const MaxRate = 1000

// Stream sends numbered, timestamped packets to a group at a steady
// rate, and unicast copies of some of them to chosen receivers for
// comparison.
type Stream struct {
	cfg  StreamConfig
	conn *net.UDPConn
	pc   *ipv4.PacketConn

	mu     sync.Mutex
	next   uint64 // the sequence number sent next
	end    uint64 // 0: open-ended
	copies map[netip.Addr]seqRange

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// seqRange is [first, end) of sequence numbers.
type seqRange struct{ first, end uint64 }

// StartStream opens the socket and starts sending.
func StartStream(cfg StreamConfig) (*Stream, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	local := &net.UDPAddr{}
	if cfg.Source.IsValid() {
		local.IP = cfg.Source.AsSlice()
	}
	conn, err := net.ListenUDP("udp4", local)
	if err != nil {
		return nil, fmt.Errorf("test stream: socket: %w", err)
	}
	s := newStream(cfg)
	s.conn, s.pc = conn, ipv4.NewPacketConn(conn)
	if cfg.Interface != nil {
		if err := s.pc.SetMulticastInterface(cfg.Interface); err != nil {
			conn.Close()
			return nil, fmt.Errorf("test stream: multicast interface %s: %w", cfg.Interface.Name, err)
		}
	}
	if err := s.pc.SetMulticastTTL(cfg.TTL); err != nil {
		conn.Close()
		return nil, fmt.Errorf("test stream: multicast TTL: %w", err)
	}
	go s.run()
	return s, nil
}

// withDefaults checks c and fills in its zero fields.
func (c StreamConfig) withDefaults() (StreamConfig, error) {
	if !c.Group.Is4() || !c.Group.IsMulticast() {
		return c, fmt.Errorf("test stream: %s is not an IPv4 multicast group", c.Group)
	}
	if c.Port < 1 || c.Port > 65535 {
		return c, fmt.Errorf("test stream: port %d out of range", c.Port)
	}
	if c.Rate < 1 || c.Rate > MaxRate {
		return c, fmt.Errorf("test stream: rate %d packets/s out of range 1..%d", c.Rate, MaxRate)
	}
	if c.Size == 0 {
		c.Size = DefaultSize
	}
	if c.Size < MinSize || c.Size > MaxSize {
		return c, fmt.Errorf("test stream: packet size %d out of range %d..%d", c.Size, MinSize, MaxSize)
	}
	if c.TTL == 0 {
		c.TTL = 1
	}
	if c.ID == 0 {
		c.ID = rand.Uint64() | 1
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c, nil
}

// newStream is a stream that has not started (and has no socket yet).
func newStream(cfg StreamConfig) *Stream {
	s := &Stream{cfg: cfg, end: cfg.Packets, copies: map[netip.Addr]seqRange{},
		stop: make(chan struct{}), done: make(chan struct{})}
	for _, a := range cfg.Unicast {
		s.copies[a] = seqRange{0, ^uint64(0)}
	}
	return s
}

// ID is the stream's ID.
func (s *Stream) ID() uint64 { return s.cfg.ID }

// Source is the address and port the stream is sent from.
func (s *Stream) Source() netip.AddrPort {
	if s.conn == nil {
		return netip.AddrPortFrom(s.cfg.Source, 0)
	}
	a, _ := netip.ParseAddrPort(s.conn.LocalAddr().String())
	return a
}

// Config is the stream's configuration, with defaults filled in.
func (s *Stream) Config() StreamConfig { return s.cfg }

// Next is the sequence number the stream sends next.
func (s *Stream) Next() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next
}

// Extend makes a stream that would stop before end go on until end. It
// reports false if the stream has already ended.
func (s *Stream) Extend(end uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.end != 0 && s.next >= s.end {
		return false
	}
	if s.end != 0 && end > s.end {
		s.end = end
	}
	return true
}

// running reports whether the stream has more to send.
func (s *Stream) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.end == 0 || s.next < s.end
}

// AddCopy sends a unicast copy of packets first..end-1 to addr (at the
// stream's port), replacing any earlier copy to addr.
func (s *Stream) AddCopy(addr netip.Addr, first, end uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.copies[addr] = seqRange{first, end}
}

// Copies is how many unicast copies are still to be sent.
func (s *Stream) Copies() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.copies)
}

// Done is closed when the stream has ended.
func (s *Stream) Done() <-chan struct{} { return s.done }

// Stop ends the stream and waits until it has.
func (s *Stream) Stop() {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
}

// Wait waits until the stream has ended or ctx is done (then it stops
// the stream).
func (s *Stream) Wait(ctx context.Context) {
	select {
	case <-s.done:
	case <-ctx.Done():
		s.Stop()
	}
}

// maxLag is how far behind its schedule the stream may fall (a stalled
// machine) before it shifts the schedule instead of catching up in a
// burst that would look like loss at the receivers.
const maxLag = 500 * time.Millisecond

func (s *Stream) run() {
	defer close(s.done)
	defer s.conn.Close()
	rate := s.cfg.Rate
	start := time.Now()
	buf := make([]byte, 0, s.cfg.Size)
	group := &net.UDPAddr{IP: s.cfg.Group.AsSlice(), Port: s.cfg.Port}
	var to []netip.Addr
	timer := time.NewTimer(0)
	defer timer.Stop()
	logged := map[string]bool{}
	for {
		s.mu.Lock()
		seq, end := s.next, s.end
		to = to[:0]
		for a, r := range s.copies {
			switch {
			case seq >= r.end:
				delete(s.copies, a)
			case seq >= r.first:
				to = append(to, a)
			}
		}
		s.mu.Unlock()
		if end != 0 && seq >= end {
			return
		}
		due := start.Add(time.Duration(seq) * time.Second / time.Duration(rate))
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-s.stop:
				return
			case <-timer.C:
			}
		} else if -wait > maxLag {
			start = start.Add(-wait)
		}
		select {
		case <-s.stop:
			return
		default:
		}
		p := Packet{Kind: KindMulticast, Stream: s.cfg.ID, Seq: seq, Sent: time.Now(), Rate: uint32(rate), End: end}
		buf = p.Append(buf[:0], s.cfg.Size)
		s.send(buf, group, logged)
		if len(to) > 0 {
			p.Kind = KindUnicast
			buf = p.Append(buf[:0], s.cfg.Size)
			for _, a := range to {
				s.send(buf, &net.UDPAddr{IP: a.AsSlice(), Port: s.cfg.Port}, logged)
			}
		}
		s.mu.Lock()
		s.next = seq + 1
		s.mu.Unlock()
	}
}

func (s *Stream) send(b []byte, to *net.UDPAddr, logged map[string]bool) {
	_, err := s.conn.WriteToUDP(b, to)
	if err == nil {
		return
	}
	// The first failure per destination: a local firewall (EPERM) or a
	// missing route shows up here rather than at the receivers.
	if dst := to.IP.String(); !logged[dst] && len(logged) < 16 {
		logged[dst] = true
		s.cfg.Logf("test stream %x: send to %s: %v", s.cfg.ID, to, err)
	}
}
