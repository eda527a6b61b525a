package receiver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/imgcast/imgcast/internal/bytesize"
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
	s := &session{ctx: ctx, cfg: cfg, w: w, done: make(chan struct{}), logged: map[string]int{}, jitter: rand.Float64}
	defer close(s.done)
	defer s.stopKeepAlive()
	if err := s.setup(); err != nil {
		return s.prog, err
	}
	defer s.conn.Close()
	stop := context.AfterFunc(ctx, s.recovering("cancellation", s.wake))
	defer stop()
	err = s.run()
	if ie, ok := errors.AsType[*internalError](err); ok {
		s.logf("%s\n%s", ie.msg, ie.stack)
	}
	s.protect("progress report", func() error { s.snapshot(); return nil })
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

	// Rendezvous.
	acceptFrom  netip.Addr // the only source of handshake messages, if valid
	retry       connectBackoff
	jitter      func() float64 // in [0, 1), randomises the repeats
	refusedBy   netip.AddrPort // a sender that refused us once
	unusable    string         // the last unusable handshake, by source and block size
	ignored     int            // handshake messages from other sources
	ignoredFrom netip.AddrPort

	// fault is a panic recovered on a helper goroutine.
	fault atomic.Pointer[internalError]

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
		if err := s.joinGroup(ctrl); err != nil {
			s.conn.Close()
			return err
		}
		s.ctrlGroup = ctrl
		s.keepJoined(ctrl)
	}
	if rdv := cfg.RendezvousAddr; rdv.IsValid() && !rdv.IsMulticast() && !rdv.IsUnspecified() &&
		rdv != s.ifc.Broadcast && rdv != netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		s.acceptFrom = rdv
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

// joinGroup is where the receiver joins a multicast group: the
// rendezvous group at setup, the data group once connected.
func (s *session) joinGroup(g netip.Addr) error {
	if err := s.pc.JoinGroup(s.ifi, &net.UDPAddr{IP: g.AsSlice()}); err != nil {
		return wrapf(ErrSetup, err, "join %s on %s", g, s.ifc.Name)
	}
	return nil
}

// leaveGroup leaves a group joined by joinGroup.
func (s *session) leaveGroup(g netip.Addr) {
	_ = s.pc.LeaveGroup(s.ifi, &net.UDPAddr{IP: g.AsSlice()})
}

// wake interrupts a blocked socket read; the loop then looks at its flags.
func (s *session) wake() {
	s.woken.Store(true)
	_ = s.conn.SetReadDeadline(time.Unix(1, 0))
}

// recovering wraps the body of a helper goroutine: a panic becomes the
// reception's error instead of killing the process.
func (s *session) recovering(where string, f func()) func() {
	return func() {
		defer func() {
			if r := recover(); r != nil {
				s.fault.CompareAndSwap(nil, newInternalError(where, r))
				s.wake()
			}
		}()
		f()
	}
}

// protect runs f on the receiving goroutine, turning a panic into an
// error.
func (s *session) protect(where string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = newInternalError(where, r)
		}
	}()
	return f()
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
	if f := s.fault.Load(); f != nil {
		return 0, f
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
	return wrapf(s.ctx.Err(), context.Cause(s.ctx), "reception cancelled after %s", bytesize.Format(s.prog.Received))
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
		go s.recovering("start signal", func() {
			select {
			case <-s.cfg.StartSignal:
				s.goReq.Store(true)
				s.wake()
			case <-s.done:
			}
		})()
	}
	err := s.protect("receiving loop", func() error {
		s.report(PhaseRendezvous)
		if err := s.rendezvous(); err != nil {
			return err
		}
		return s.receive()
	})
	if s.out != nil {
		s.out.close(err != nil)
	}
	cleanup := s.protect("cleanup", func() error {
		if s.t != nil {
			s.t.release()
		}
		// udpcast tells the sender on every exit path once connected, so
		// that it stops waiting for us.
		if s.connected {
			s.sendBuf = appendDisconnect(s.sendBuf[:0])
			s.send(s.sendBuf)
		}
		if err == nil {
			s.report(PhaseDone)
		}
		return nil
	})
	if err == nil {
		err = cleanup
	}
	return err
}

// rendezvous finds the sender and gets a client number from it.
func (s *session) rendezvous() error {
	now := time.Now()
	var startDeadline time.Time
	if s.cfg.StartTimeout > 0 {
		startDeadline = now.Add(s.cfg.StartTimeout)
	}
	if !s.cfg.Passive {
		s.retry = connectBackoff{first: s.cfg.ConnectRetry, next: now}
	}
	for {
		if s.retry.due(now) {
			// Before any HELLO, to the rendezvous address; after one,
			// only to the sender that sent it, which answers.
			if s.helloFrom.IsValid() {
				s.sendConnectReq(s.helloFrom)
			} else {
				s.sendConnectReq(s.control)
			}
			s.retry.sent(now, s.jitter)
		}
		n, err := s.readBatch(earliest(startDeadline, s.retry.next))
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
			return &StartTimeoutError{Addr: s.control, Timeout: s.cfg.StartTimeout, Ignored: s.ignored, IgnoredFrom: s.ignoredFrom}
		}
	}
}

// connectBackoff schedules the repeated CONNECT_REQs: the first repeat
// after first, each further one after twice the previous interval (at
// most MaxConnectRetry), each lengthened by a random 0-100 %. The
// repeats survive a lost HELLO, and thin out so that any number of
// receivers leave an --async udp-sender the quiet second it needs to
// send its next HELLO: repeating every second, two receivers never did.
type connectBackoff struct {
	first    time.Duration // 0: never repeat
	interval time.Duration
	next     time.Time // zero: nothing scheduled
}

func (b *connectBackoff) due(now time.Time) bool {
	return !b.next.IsZero() && !now.Before(b.next)
}

// sent schedules the next repeat after one was sent at now; jitter
// returns a number in [0, 1).
func (b *connectBackoff) sent(now time.Time, jitter func() float64) {
	if b.first <= 0 {
		b.next = time.Time{}
		return
	}
	switch {
	case b.interval == 0:
		b.interval = b.first
	default:
		b.interval = min(2*b.interval, MaxConnectRetry)
	}
	b.next = now.Add(b.interval + time.Duration(jitter()*float64(b.interval)))
}

func (s *session) sendConnectReq(to netip.AddrPort) {
	s.sendBuf = appendConnectReq(s.sendBuf[:0], uint32(s.rcvbuf))
	s.sendTo(s.sendBuf, udpAddr(to))
}

// rendezvousPacket handles a datagram before connecting. heard reports a
// message from a sender (which restarts the start timeout). Nothing a
// single datagram says ends the rendezvous with an error: a refusal or an
// unusable block size counts once the same sender has said it twice.
func (s *session) rendezvousPacket(m *ipv4.Message) (heard bool, err error) {
	src, ok := addrPortOf(m.Addr)
	if !ok || int(src.Port()) != s.cfg.Port+1 || !src.Addr().Is4() {
		return false, nil
	}
	b := m.Buffers[0][:m.N]
	op, _ := opcode(b)
	switch op {
	case opConnectReply, opHello, opHelloNew, opHelloStreaming:
		if s.acceptFrom.IsValid() && src.Addr() != s.acceptFrom {
			s.ignored++
			s.ignoredFrom = src
			s.logLimited("foreign", "Ignored a handshake message from %s: only the rendezvous address %s is accepted", src, s.acceptFrom)
			return false, nil
		}
	}
	switch op {
	case opConnectReply:
		r, ok := parseConnectReply(b)
		if !ok {
			return false, nil
		}
		if r.client < 0 {
			if s.refusedBy == src {
				return true, errorf(ErrRefused, "sender %s refused the connection: too many clients already connected (or it serves one point-to-point receiver)", src)
			}
			// Ask again: udp-sender answers every request, so a refusal
			// that is not repeated was not the sender's.
			s.refusedBy = src
			s.logLimited("refused", "Sender %s refused the connection; asking again", src)
			s.sendConnectReq(src)
			return true, nil
		}
		if r.client >= maxClients {
			s.logLimited("badreply", "Ignored a CONNECT_REPLY from %s with client number %d (max %d)", src, r.client, maxClients-1)
			return true, nil
		}
		if ok, err := s.checkBlockSize(src, int64(r.blockSize)); !ok {
			if err == nil {
				s.sendConnectReq(src) // so that the sender repeats itself
			}
			return true, err
		}
		s.logf("received message, cap=%08x", r.caps)
		if r.caps&capNewGen != 0 {
			s.advertised = r.dataAddr
		}
		s.async = r.caps&capAsync != 0
		s.connect(src, int(r.client), int(r.blockSize))
		return true, nil
	case opHello, opHelloNew, opHelloStreaming:
		h, ok := parseHello(b)
		if !ok {
			return false, nil
		}
		if h.caps&capAsync == 0 && !s.cfg.Passive {
			// The CONNECT_REPLY will say everything; HELLO only says
			// where the sender is.
			s.helloFrom = src
			s.streaming = s.streaming || h.streaming
			s.sendConnectReq(src)
			return true, nil
		}
		bs := int64(-1)
		if h.caps&capNewGen != 0 {
			bs = int64(h.blockSize)
		}
		if ok, err := s.checkBlockSize(src, bs); !ok {
			return true, err // an async sender repeats its HELLO every second
		}
		if h.caps&capNewGen != 0 {
			s.advertised = h.dataAddr
		}
		s.streaming = s.streaming || h.streaming
		s.async = h.caps&capAsync != 0
		s.connect(src, 0, int(bs))
		return true, nil
	case opConnectReq, opData, opFEC:
		return false, nil
	default:
		s.logLimited("badreply", "Bad server reply %04x from %s. Other transfer in progress? (ignored)", op, src)
		return false, nil
	}
}

// blockSizeProblem says why a block size cannot be used, or "".
func (s *session) blockSizeProblem(bs int64) string {
	switch {
	case bs <= 0 || bs > maxBlockSize:
		return fmt.Sprintf("outside 1..%d", maxBlockSize)
	case bs > int64(s.maxSliceBytes()):
		return fmt.Sprintf("a slice may use at most %s of memory (a third of the memory limit)", bytesize.Format(int64(s.maxSliceBytes())))
	}
	return ""
}

// checkBlockSize accepts a block size announced by src. An unusable one
// is ignored the first time (the message may be forged, and a sender
// repeats itself) and is an error the second time from the same sender.
func (s *session) checkBlockSize(src netip.AddrPort, bs int64) (bool, error) {
	problem := s.blockSizeProblem(bs)
	if problem == "" {
		return true, nil
	}
	key := fmt.Sprintf("%s/%d", src, bs)
	if s.unusable != key {
		s.unusable = key
		s.logLimited("blocksize", "Sender %s announced block size %d, which this receiver cannot use (%s); waiting for it to repeat itself", src, bs, problem)
		return false, nil
	}
	return false, errorf(ErrProtocol, "sender %s announced block size %d, which this receiver cannot use: %s", src, bs, problem)
}

// maxSliceBytes is the most one slice may take of the memory limit: the
// slices next and next+1 and one being written must fit at once.
func (s *session) maxSliceBytes() int { return s.cfg.MemoryLimit / 3 }

func (s *session) connect(sender netip.AddrPort, client int, blockSize int) {
	s.sender, s.senderUDP = sender, udpAddr(sender)
	s.senderIP, s.senderPort = sender.Addr().As4(), int(sender.Port())
	s.client, s.blockSize = client, blockSize
	s.connected = true
}

func (s *session) onConnected() error {
	s.logf("Connected as #%d to %s", s.client, s.sender.Addr())
	g := s.advertised
	if g.IsValid() && g.IsMulticast() && g != s.ifc.IP && g != s.control.Addr() {
		if err := s.joinGroup(g); err != nil {
			return err
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
	s.pool = pool{limit: s.cfg.MemoryLimit}
	s.t = newTransfer(s, transferConfig{
		blockSize: s.blockSize, client: s.client,
		streaming: s.streaming, ignoreLost: s.cfg.IgnoreLostData,
		noAcks:        s.async || s.cfg.Passive,
		maxSliceBytes: s.maxSliceBytes(),
	})
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
		silence := s.silenceDeadline(lastHeard)
		decide := s.t.deadline()
		heard, now, err := s.pump(earliest(silence, decide))
		if err != nil {
			return err
		}
		if heard {
			lastHeard = now
		}
		if !decide.IsZero() && !now.Before(decide) {
			if err := s.t.tick(now); err != nil {
				return err
			}
		}
		if s.t.ended {
			break
		}
		if !silence.IsZero() && !now.Before(silence) {
			return s.explainSilence(s.silenceError())
		}
	}
	return s.finish()
}

// silenceDeadline is when the sender's silence since lastHeard ends the
// reception: StartTimeout until data flow, ReceiveTimeout after. Zero
// means never.
func (s *session) silenceDeadline(lastHeard time.Time) time.Time {
	switch {
	case !s.dataStarted && s.cfg.StartTimeout > 0:
		return lastHeard.Add(s.cfg.StartTimeout)
	case s.dataStarted && s.cfg.ReceiveTimeout > 0:
		return lastHeard.Add(s.cfg.ReceiveTimeout)
	}
	return time.Time{}
}

// silenceError is the error for a silence that reached its deadline.
func (s *session) silenceError() error {
	if !s.dataStarted {
		return &StartTimeoutError{Addr: s.sender, Timeout: s.cfg.StartTimeout, Connected: true}
	}
	return errorf(ErrReceiveTimeout, "sender %s went silent after %s (nothing received for %s)",
		s.sender, bytesize.Format(s.prog.Received), s.cfg.ReceiveTimeout)
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
	return s.outputError()
}

// outputError is the writer's failure, if any.
func (s *session) outputError() error {
	err := s.out.failure()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrInternal):
		return err
	}
	return wrapf(ErrWrite, err, "output failed after %s", bytesize.Format(s.out.written.Load()))
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
		return true, s.t.packet(h, b[sizeDataHeader:], now)
	case opReqAck:
		r, ok := parseReqAck(b)
		if !ok {
			return true, nil
		}
		if !s.dataStarted {
			s.startData(m, now)
		}
		return true, s.t.reqAck(r, now)
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
			s.leaveGroup(g)
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

func (s *session) alloc(n int) ([]byte, error) {
	for {
		s.pool.reclaim(s.out)
		if b := s.pool.take(n); b != nil {
			return b, nil
		}
		if s.pool.queued == 0 {
			// The window alone never needs more than the limit; the
			// writer has nothing to give back.
			return nil, errorf(ErrInternal, "no memory for a slice of %s: %s held, limit %s",
				bytesize.Format(int64(n)), bytesize.Format(int64(s.pool.held)), bytesize.Format(int64(s.pool.limit)))
		}
		select {
		case <-s.out.freedSignal:
		case <-s.out.done:
			if err := s.outputError(); err != nil {
				return nil, err
			}
			s.pool.reclaim(s.out)
			s.pool.queued = 0 // nothing will come back any more
		case <-s.ctx.Done():
			return nil, s.cancelled()
		}
	}
}

func (s *session) deliver(sl *slice) {
	if sl.bytes == 0 {
		s.discard(sl)
		return
	}
	s.pool.queued += cap(sl.buf)
	s.prog.Received += int64(sl.bytes)
	s.out.push(sl)
	if iv := s.cfg.ProgressInterval; s.cfg.Progress != nil && (iv < 0 || time.Since(s.lastProgress) >= iv) {
		s.report(PhaseReceiving)
	}
}

func (s *session) discard(sl *slice) {
	s.pool.put(sl.buf)
	sl.buf = nil
}

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
