package receiver

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Receive joins a udpcast session, writes the stream to w, and returns once
// the sender has signalled the end and everything has been written. It
// returns a nil error only for a complete stream.
//
// If the error matches ErrStartTimeout nothing has been written to w.
// Cancelling ctx ends the reception promptly (the sender is told we leave)
// and the error wraps context.Cause(ctx). All sockets are closed when
// Receive returns. If w.Write blocks forever, Receive still returns on
// cancellation or error; that one Write is left to finish on its own.
//
// Receive may be called again, or concurrently on other port bases.
func Receive(ctx context.Context, cfg Config, w io.Writer) (Progress, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Progress{}, err
	}
	s := &session{ctx: ctx, cfg: cfg, w: w, done: make(chan struct{}), logged: map[string]int{}}
	defer close(s.done)
	defer s.stopKeepAlive()
	if err := s.setup(); err != nil {
		return s.prog, err
	}
	defer s.conn.Close()
	stop := context.AfterFunc(ctx, s.wake)
	defer stop()
	err = s.run()
	s.snapshot()
	return s.prog, err
}

type session struct {
	ctx  context.Context
	cfg  Config
	w    io.Writer
	done chan struct{}

	ifc       netIface
	ifi       *net.Interface
	conn      *net.UDPConn
	pc        *ipv4.PacketConn
	rcvbuf    int
	control   netip.AddrPort // rendezvous address, port P+1
	ctrlGroup netip.Addr     // joined for the rendezvous, if multicast
	dataGroup netip.Addr     // joined for data, if any
	keep      *keepAlive     // IGMP reports for the joined groups
	srcCM     *ipv4.ControlMessage

	// Learnt at rendezvous.
	helloFrom  netip.AddrPort
	sender     netip.AddrPort
	senderUDP  *net.UDPAddr
	senderIP   [4]byte
	senderPort int
	client     int
	blockSize  int
	advertised netip.Addr
	streaming  bool
	async      bool
	connected  bool

	dataStarted bool
	finishing   bool
	firstData   time.Time
	path        DataPath

	msgs  []ipv4.Message
	batch int // messages offered to the next ReadBatch
	// readFlags are recvmmsg flags: MSG_WAITFORONE once reads block.
	readFlags int
	sendBuf   []byte
	woken     atomic.Bool
	goReq     atomic.Bool

	t    *transfer
	out  *output
	pool pool

	prog         Progress
	lastProgress time.Time
	logged       map[string]int
}

func (s *session) setup() error {
	cfg := s.cfg
	ifaces, err := listInterfaces()
	if err != nil {
		return wrapf(ErrSetup, err, "network interfaces")
	}
	if s.ifc, err = chooseInterface(ifaces, cfg.Interface); err != nil {
		return err
	}
	if s.ifi, err = net.InterfaceByIndex(s.ifc.Index); err != nil {
		return wrapf(ErrSetup, err, "interface %s", s.ifc.Name)
	}
	s.prog.Interface, s.prog.LocalIP = s.ifc.Name, s.ifc.IP
	ctrl := controlAddress(s.ifc, cfg.RendezvousAddr, cfg.TTL)
	s.control = netip.AddrPortFrom(ctrl, uint16(cfg.Port+1))

	if s.conn, s.rcvbuf, err = openSocket(cfg.Port, cfg.ReceiveBuffer); err != nil {
		return err
	}
	s.pc = ipv4.NewPacketConn(s.conn)
	fail := func(err error, what string) error {
		s.conn.Close()
		return wrapf(ErrSetup, err, "%s on %s", what, s.ifc.Name)
	}
	if ctrl.IsMulticast() {
		if err := s.pc.SetMulticastInterface(s.ifi); err != nil {
			return fail(err, "multicast interface")
		}
		if err := s.pc.SetMulticastTTL(cfg.TTL); err != nil {
			return fail(err, "multicast TTL")
		}
		if err := s.pc.JoinGroup(s.ifi, &net.UDPAddr{IP: ctrl.AsSlice()}); err != nil {
			return fail(err, "join "+ctrl.String())
		}
		s.ctrlGroup = ctrl
		s.keepJoined(ctrl)
	}
	if err := s.pc.SetControlMessage(ipv4.FlagDst, true); err != nil {
		return fail(err, "IP_PKTINFO")
	}
	s.srcCM = &ipv4.ControlMessage{Src: s.ifc.IP.AsSlice()}
	s.sendBuf = make([]byte, 0, sizeRetransmit)
	s.allocMessages(8, 2048)
	return nil
}

func (s *session) allocMessages(n, size int) {
	s.msgs = make([]ipv4.Message, n)
	s.batch = n
	buf := make([]byte, n*size)
	for i := range s.msgs {
		s.msgs[i].Buffers = [][]byte{buf[i*size : (i+1)*size : (i+1)*size]}
		s.msgs[i].OOB = ipv4.NewControlMessage(ipv4.FlagDst)
	}
}

// wake interrupts a blocked socket read; the loop then looks at its flags.
func (s *session) wake() {
	s.woken.Store(true)
	_ = s.conn.SetReadDeadline(time.Unix(1, 0))
}

// readBatch waits until deadline (zero: no limit) for datagrams. It
// returns 0 and no error on timeout or wake-up.
func (s *session) readBatch(deadline time.Time) (int, error) {
	if err := s.conn.SetReadDeadline(deadline); err != nil {
		return 0, wrapf(ErrSetup, err, "socket deadline")
	}
	if err := s.ctx.Err(); err != nil {
		return 0, s.cancelled()
	}
	if s.woken.Swap(false) {
		return 0, nil
	}
	n, err := s.pc.ReadBatch(s.msgs[:s.batch], s.readFlags)
	if err != nil {
		if errors.Is(err, syscall.EINTR) {
			// A blocking read met one of the runtime's preemption signals.
			return 0, nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if s.ctx.Err() != nil {
				return 0, s.cancelled()
			}
			return 0, nil
		}
		return 0, wrapf(ErrSetup, err, "receive on port %d", s.cfg.Port)
	}
	return n, nil
}

func (s *session) cancelled() error {
	return wrapf(s.ctx.Err(), context.Cause(s.ctx), "reception cancelled after %s", humanBytes(s.prog.Received))
}

func (s *session) sendTo(b []byte, to *net.UDPAddr) {
	if _, err := s.pc.WriteTo(b, s.srcCM, to); err != nil {
		s.logLimited("send", "send to %s: %v", to, err)
	}
}

// send is transferEnv's: a message to the sender.
func (s *session) send(b []byte) { s.sendTo(b, s.senderUDP) }

func (s *session) logf(format string, args ...any) { s.cfg.Logf(format, args...) }

// logLimited logs the first few messages of a kind, so that a flood of
// foreign packets cannot flood the log.
func (s *session) logLimited(kind, format string, args ...any) {
	n := s.logged[kind]
	s.logged[kind] = n + 1
	switch {
	case n < 3:
		s.cfg.Logf(format, args...)
	case n == 3:
		s.cfg.Logf(format+" (further such messages suppressed)", args...)
	}
}

func (s *session) run() error {
	if s.cfg.StartSignal != nil && !s.cfg.Passive {
		go func() {
			select {
			case <-s.cfg.StartSignal:
				s.goReq.Store(true)
				s.wake()
			case <-s.done:
			}
		}()
	}
	s.report(PhaseRendezvous)
	err := s.rendezvous()
	if err == nil {
		err = s.receive()
	}
	if s.out != nil {
		s.out.close(err != nil)
	}
	if s.t != nil {
		s.t.release()
	}
	// udpcast tells the sender on every exit path once connected, so that
	// it stops waiting for us.
	if s.connected {
		s.sendBuf = appendDisconnect(s.sendBuf[:0])
		s.send(s.sendBuf)
	}
	if err == nil {
		s.report(PhaseDone)
	}
	return err
}

// rendezvous finds the sender and gets a client number from it.
func (s *session) rendezvous() error {
	now := time.Now()
	var startDeadline, nextReq time.Time
	if s.cfg.StartTimeout > 0 {
		startDeadline = now.Add(s.cfg.StartTimeout)
	}
	if !s.cfg.Passive {
		nextReq = now
	}
	for {
		if !nextReq.IsZero() && !now.Before(nextReq) {
			s.sendConnectReq(s.control)
			if s.helloFrom.IsValid() && s.helloFrom != s.control {
				s.sendConnectReq(s.helloFrom)
			}
			nextReq = time.Time{}
			if s.cfg.ConnectRetry > 0 {
				nextReq = now.Add(s.cfg.ConnectRetry)
			}
		}
		n, err := s.readBatch(earliest(startDeadline, nextReq))
		if err != nil {
			return err
		}
		now = time.Now()
		for i := range n {
			heard, err := s.rendezvousPacket(&s.msgs[i])
			if err != nil {
				return err
			}
			if heard && s.cfg.StartTimeout > 0 {
				startDeadline = now.Add(s.cfg.StartTimeout)
			}
			if s.connected {
				return s.onConnected()
			}
		}
		if !startDeadline.IsZero() && !now.Before(startDeadline) {
			return &StartTimeoutError{Addr: s.control, Timeout: s.cfg.StartTimeout}
		}
	}
}

func (s *session) sendConnectReq(to netip.AddrPort) {
	s.sendBuf = appendConnectReq(s.sendBuf[:0], uint32(s.rcvbuf))
	s.sendTo(s.sendBuf, udpAddr(to))
}

// rendezvousPacket handles a datagram before connecting. heard reports a
// message from a sender (which restarts the start timeout).
func (s *session) rendezvousPacket(m *ipv4.Message) (heard bool, err error) {
	src, ok := addrPortOf(m.Addr)
	if !ok || int(src.Port()) != s.cfg.Port+1 || !src.Addr().Is4() {
		return false, nil
	}
	b := m.Buffers[0][:m.N]
	op, _ := opcode(b)
	switch op {
	case opConnectReply:
		r, ok := parseConnectReply(b)
		if !ok {
			return false, nil
		}
		if r.client < 0 {
			return true, errorf(ErrRefused, "sender %s refused the connection: too many clients already connected (or it serves one point-to-point receiver)", src)
		}
		s.logf("received message, cap=%08x", r.caps)
		if r.client >= maxClients {
			return true, errorf(ErrProtocol, "sender %s assigned client number %d (max %d)", src, r.client, maxClients-1)
		}
		if r.caps&capNewGen != 0 {
			s.advertised = r.dataAddr
		}
		s.async = r.caps&capAsync != 0
		return true, s.connect(src, int(r.client), int64(r.blockSize))
	case opHello, opHelloNew, opHelloStreaming:
		h, ok := parseHello(b)
		if !ok {
			return false, nil
		}
		if h.streaming {
			s.streaming = true
		}
		bs := int64(-1)
		if h.caps&capNewGen != 0 {
			s.advertised = h.dataAddr
			bs = int64(h.blockSize)
		}
		if h.caps&capAsync != 0 || s.cfg.Passive {
			s.async = h.caps&capAsync != 0
			return true, s.connect(src, 0, bs)
		}
		s.helloFrom = src
		s.sendConnectReq(src)
		return true, nil
	case opConnectReq, opData, opFEC:
		return false, nil
	default:
		s.logLimited("badreply", "Bad server reply %04x from %s. Other transfer in progress? (ignored)", op, src)
		return false, nil
	}
}

func (s *session) connect(sender netip.AddrPort, client int, blockSize int64) error {
	if blockSize <= 0 || blockSize > maxBlockSize {
		return errorf(ErrProtocol, "sender %s announced block size %d, outside 1..%d", sender, blockSize, maxBlockSize)
	}
	s.sender, s.senderUDP = sender, udpAddr(sender)
	s.senderIP, s.senderPort = sender.Addr().As4(), int(sender.Port())
	s.client, s.blockSize = client, int(blockSize)
	s.connected = true
	return nil
}

func (s *session) onConnected() error {
	s.logf("Connected as #%d to %s", s.client, s.sender.Addr())
	g := s.advertised
	if g.IsValid() && g.IsMulticast() && g != s.ifc.IP && g != s.control.Addr() {
		if err := s.pc.JoinGroup(s.ifi, &net.UDPAddr{IP: g.AsSlice()}); err != nil {
			return wrapf(ErrSetup, err, "join data group %s on %s", g, s.ifc.Name)
		}
		s.dataGroup = g
		s.keepJoined(g)
		s.logf("Listening to multicast on %s", g)
	}
	// Batches sized for data packets; at most ~4 MiB of them.
	size := max(sizeDataHeader+s.blockSize, sizeReqAck)
	n := min(64, max(8, (4<<20)/size))
	s.allocMessages(n, size)
	s.blockingReads()

	s.report(PhaseConnected)
	if s.cfg.OnConnect != nil {
		if err := s.cfg.OnConnect(s.prog); err != nil {
			return err
		}
	}
	return nil
}

// receive runs the transfer until the end of the stream has been
// delivered and written.
func (s *session) receive() error {
	s.pool = pool{bs: s.blockSize, limit: s.cfg.MemoryLimit}
	s.t = newTransfer(s, s.blockSize, s.client, s.streaming, s.cfg.IgnoreLostData)
	s.out = newOutput(s.wake)
	go s.out.run(s.w, newFECCodec(s.blockSize))
	s.lastProgress = time.Now()

	lastHeard := time.Now()
	goSent := false
	for !s.t.ended {
		if err := s.housekeeping(); err != nil {
			return err
		}
		if !s.dataStarted && !goSent && !s.cfg.Passive && !s.async && s.goReq.Load() {
			s.logf("Sending go signal")
			s.sendBuf = appendGo(s.sendBuf[:0])
			s.send(s.sendBuf)
			goSent = true
		}
		var deadline time.Time
		switch {
		case !s.dataStarted && s.cfg.StartTimeout > 0:
			deadline = lastHeard.Add(s.cfg.StartTimeout)
		case s.dataStarted && s.cfg.ReceiveTimeout > 0:
			deadline = lastHeard.Add(s.cfg.ReceiveTimeout)
		}
		heard, now, err := s.pump(deadline)
		if err != nil {
			return err
		}
		if heard {
			lastHeard = now
		}
		if s.t.ended {
			break
		}
		if !deadline.IsZero() && !now.Before(deadline) {
			if !s.dataStarted {
				return s.explainSilence(&StartTimeoutError{Addr: s.sender, Timeout: s.cfg.StartTimeout, Connected: true})
			}
			return s.explainSilence(errorf(ErrReceiveTimeout, "sender %s went silent after %s (nothing received for %s)",
				s.sender, humanBytes(s.prog.Received), s.cfg.ReceiveTimeout))
		}
	}
	return s.finish()
}

// readPause is how long the receiving thread sleeps after a read that
// found fewer datagrams than it could take, while data flow.
const readPause = 100 * time.Microsecond

// minPauseBuffer is the smallest socket buffer that pausing is safe with:
// room for a hundred full datagrams, several pauses' worth at 1 Gbit/s.
const minPauseBuffer = 256 << 10

// pump reads one batch of datagrams (waiting until deadline at most) and
// handles them. heard reports that one came from the sender; now is when
// the read returned. It stops early when the batch ends the stream.
func (s *session) pump(deadline time.Time) (heard bool, now time.Time, err error) {
	n, err := s.readBatch(deadline)
	if err != nil {
		return false, time.Time{}, err
	}
	s.adaptBatch(n)
	now = time.Now()
	ended := s.t.ended
	for i := range n {
		fromSender, err := s.transferPacket(&s.msgs[i], now)
		if err != nil {
			return heard, now, err
		}
		heard = heard || fromSender
		if !ended && s.t.ended {
			break
		}
	}
	return heard, now, nil
}

// adaptBatch sizes the next read after one that returned n datagrams, and
// paces the reads. x/net's ReadBatch prepares every message offered, so
// offering 64 when one is waiting costs more than the datagram. And a
// receiver faster than its sender would otherwise wake for nearly every
// datagram: a system call and two context switches each, most of a
// receiver's CPU. A pause of ~0.1 ms after a short batch lets datagrams
// gather in the socket buffer (a dozen at gigabit rates, a few percent of
// its size) so the next recvmmsg takes them all at once; it delays our
// answers to the sender by far less than a slice takes to send, so the
// sender never waits for it. A plain nanosleep, not time.Sleep: the
// runtime poller would round the pause up to a millisecond.
func (s *session) adaptBatch(n int) {
	switch {
	case n == s.batch && s.batch < len(s.msgs):
		s.batch = min(2*s.batch, len(s.msgs))
	case n < s.batch/4 && s.batch > 4:
		s.batch /= 2
	}
	if n > 0 && n < s.batch && s.dataStarted && s.rcvbuf >= minPauseBuffer {
		ts := unix.NsecToTimespec(readPause.Nanoseconds())
		_ = unix.Nanosleep(&ts, nil)
	}
}

// housekeeping takes back written slices, sends OKs that waited for
// memory, and notices a failed writer.
func (s *session) housekeeping() error {
	s.pool.reclaim(s.out)
	s.t.flushDeferred()
	s.out.wantWake.Store(s.finishing || len(s.t.deferred) > 0)
	if err := s.out.failure(); err != nil {
		return wrapf(ErrWrite, err, "output failed after %s", humanBytes(s.out.written.Load()))
	}
	return nil
}

// transferPacket handles a datagram after connecting; heard reports that
// it came from the sender.
func (s *session) transferPacket(m *ipv4.Message, now time.Time) (bool, error) {
	ua, ok := m.Addr.(*net.UDPAddr)
	if !ok {
		return false, nil
	}
	if ip := ua.IP.To4(); ip == nil || [4]byte(ip) != s.senderIP || ua.Port != s.senderPort {
		s.logLimited("rogue", "Rogue packet received %s, expecting %s", ua, s.sender)
		return false, nil
	}
	b := m.Buffers[0][:m.N]
	op, _ := opcode(b)
	switch op {
	case opData, opFEC:
		h, ok := parseDataHeader(b)
		if !ok {
			return true, nil
		}
		if !s.dataStarted {
			s.startData(m, now)
		}
		return true, s.t.packet(h, b[sizeDataHeader:])
	case opReqAck:
		r, ok := parseReqAck(b)
		if !ok {
			return true, nil
		}
		if !s.dataStarted {
			s.startData(m, now)
		}
		return true, s.t.reqAck(r)
	case opHello, opHelloNew, opHelloStreaming:
		return true, nil
	default:
		s.logLimited("opcode", "Unexpected opcode %04x", op)
		return true, nil
	}
}

// startData locks onto the data path when the first data packet arrives.
func (s *session) startData(m *ipv4.Message, now time.Time) {
	s.dataStarted = true
	s.firstData = now
	dst := dstOf(m)
	s.path = classifyPath(dst, s.ifc)
	// IP_PKTINFO was only needed for this; leave the groups data do not
	// use, as udpcast closes its other sockets.
	_ = s.pc.SetControlMessage(ipv4.FlagDst, false)
	for i := range s.msgs {
		s.msgs[i].OOB = nil
	}
	for _, g := range []netip.Addr{s.ctrlGroup, s.dataGroup} {
		if g.IsValid() && g != dst && dst.IsValid() {
			_ = s.pc.LeaveGroup(s.ifi, &net.UDPAddr{IP: g.AsSlice()})
			s.keepLeft(g)
		}
	}
	s.report(PhaseReceiving)
}

// finish keeps answering the sender (a lost final OK makes it repeat its
// REQACK) until ExitWait has passed without a datagram from it and the
// writer has written everything.
func (s *session) finish() error {
	s.out.close(false)
	s.finishing = true
	s.report(PhaseFinishing)
	last := time.Now()
	lingering := s.cfg.ExitWait > 0
	for {
		if err := s.housekeeping(); err != nil {
			return err
		}
		written := false
		select {
		case <-s.out.done:
			written = true
		default:
		}
		if written && !lingering {
			return nil
		}
		var deadline time.Time
		if lingering {
			deadline = last.Add(s.cfg.ExitWait)
		}
		heard, now, err := s.pump(deadline)
		if err != nil {
			return err
		}
		if heard {
			last = now
		}
		if lingering && now.Sub(last) >= s.cfg.ExitWait {
			lingering = false
		}
	}
}

// transferEnv, continued.

func (s *session) newSlice(num int32, bytes int) (*slice, error) {
	need := blocksFor(bytes, s.blockSize) * s.blockSize
	for s.pool.mustWait(need) {
		s.pool.reclaim(s.out)
		if !s.pool.mustWait(need) {
			break
		}
		select {
		case <-s.out.freedSignal:
		case <-s.out.done:
			if err := s.out.failure(); err != nil {
				return nil, wrapf(ErrWrite, err, "output failed after %s", humanBytes(s.out.written.Load()))
			}
			s.pool.reclaim(s.out)
			s.pool.queued = 0 // nothing will come back any more
		case <-s.ctx.Done():
			return nil, s.cancelled()
		}
	}
	sl := s.pool.get(need)
	sl.reset(num, bytes, s.blockSize)
	return sl, nil
}

func (s *session) deliver(sl *slice) {
	if sl.bytes == 0 {
		s.pool.put(sl)
		return
	}
	s.pool.queued += cap(sl.buf)
	s.prog.Received += int64(sl.bytes)
	s.out.push(sl)
	if iv := s.cfg.ProgressInterval; s.cfg.Progress != nil && (iv < 0 || time.Since(s.lastProgress) >= iv) {
		s.report(PhaseReceiving)
	}
}

func (s *session) discard(sl *slice) { s.pool.put(sl) }

func (s *session) canAck() bool {
	if s.t != nil && s.t.ended {
		return true
	}
	return s.pool.canAck()
}

// snapshot refreshes s.prog.
func (s *session) snapshot() {
	p := &s.prog
	p.Sender, p.Client, p.BlockSize = s.sender, s.client, s.blockSize
	p.DataGroup, p.Path, p.Async, p.Streaming = s.advertised, s.path, s.async, s.streaming
	if s.out != nil {
		p.Written = s.out.written.Load()
		p.FECRecovered = s.out.fecFixed.Load()
	}
	if s.t != nil {
		p.Slice = s.t.current()
		p.Retransmits = s.t.retransmits
		p.AcksHeldBack = s.t.heldBack
	}
	if s.dataStarted {
		p.Elapsed = time.Since(s.firstData)
	}
}

func (s *session) report(phase Phase) {
	s.prog.Phase = phase
	if s.cfg.Progress == nil {
		return
	}
	s.snapshot()
	s.lastProgress = time.Now()
	s.cfg.Progress(s.prog)
}

func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}
