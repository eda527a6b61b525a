package receiver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// openSocket binds the one socket a reception uses: 0.0.0.0:port, with
// SO_BROADCAST, a large receive buffer, and IP_MULTICAST_ALL off so that
// only groups this socket joins are delivered to it. Everything is sent
// from it with an IP_PKTINFO source address (the interface IP), which
// keeps the sender's view of us identical to udpcast's.
func openSocket(port, rcvbuf int) (*net.UDPConn, int, error) {
	var sockErr error
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		err := c.Control(func(fd uintptr) {
			s := int(fd)
			if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_BROADCAST, 1); err != nil {
				sockErr = fmt.Errorf("SO_BROADCAST: %w", err)
				return
			}
			if err := unix.SetsockoptInt(s, unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0); err != nil {
				sockErr = fmt.Errorf("IP_MULTICAST_ALL: %w", err)
				return
			}
			// The forced variant needs CAP_NET_ADMIN; the plain one is
			// capped by net.core.rmem_max.
			if unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf) != nil {
				_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
			}
		})
		if err != nil {
			return err
		}
		return sockErr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", fmt.Sprintf("0.0.0.0:%d", port))
	if err != nil {
		hint := ""
		if errors.Is(err, syscall.EADDRINUSE) {
			hint = " (another receiver with the same port base is running on this machine)"
		}
		return nil, 0, wrapf(ErrSetup, err, "bind socket to 0.0.0.0:%d%s", port, hint)
	}
	conn := pc.(*net.UDPConn)
	actual := 0
	if raw, err := conn.SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) {
			actual, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		})
	}
	return conn, actual, nil
}

// controlAddress is where the first CONNECT_REQ goes (port aside), and
// whether it is a multicast group to join.
func controlAddress(ifc netIface, rdv netip.Addr, ttl int) netip.Addr {
	if ttl == 1 && !rdv.IsValid() {
		if ifc.Broadcast.IsValid() && !ifc.Broadcast.IsUnspecified() {
			return ifc.Broadcast
		}
		if ifc.IP.Is4() && ifc.IP.As4()[0] == 127 {
			return ifc.IP // udpcast's loopback rule
		}
		return netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	if rdv.IsValid() {
		return rdv
	}
	return netip.AddrFrom4([4]byte{224, 0, 0, 1})
}

// udpAddr converts without keeping a reference to a.
func udpAddr(a netip.AddrPort) *net.UDPAddr {
	return net.UDPAddrFromAddrPort(a)
}

// addrPortOf converts a received source address.
func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ip, ok := netip.AddrFromSlice(ua.IP)
	if !ok {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(ua.Port)), true
}

// classifyPath tells how a datagram addressed to dst reached us.
func classifyPath(dst netip.Addr, ifc netIface) DataPath {
	switch {
	case !dst.IsValid():
		return PathUnknown
	case dst.IsMulticast():
		return PathMulticast
	case dst == ifc.Broadcast || dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return PathBroadcast
	default:
		return PathUnicast
	}
}

// dstOf returns the destination address recorded by IP_PKTINFO.
func dstOf(m *ipv4.Message) netip.Addr {
	if m.NN == 0 {
		return netip.Addr{}
	}
	var cm ipv4.ControlMessage
	if cm.Parse(m.OOB[:m.NN]) != nil || cm.Dst == nil {
		return netip.Addr{}
	}
	a, _ := netip.AddrFromSlice(cm.Dst)
	return a.Unmap()
}

// blockingReadTimeout bounds how long a blocking read sleeps in the kernel
// before the runtime poller (and so read deadlines, wake-ups and
// cancellation) takes over again.
const blockingReadTimeout = 20 * time.Millisecond

// blockingReads makes ReadBatch wait for data inside recvmmsg instead of
// in the runtime's poller. While data flow, that is one system call per
// wake-up (recvmmsg, MSG_WAITFORONE, returning everything queued) instead
// of three (recvmmsg, EAGAIN, epoll_wait, recvmmsg), and no scheduler
// round trip: the difference between beating udpcast's receiver on CPU or
// not. SO_RCVTIMEO ends a blocked read after blockingReadTimeout with
// EAGAIN; the poller then waits for the socket with the read deadline as
// usual, so wake-ups are delayed by at most that while data flow, and not
// at all once the socket is idle.
func (s *session) blockingReads() {
	raw, err := s.conn.SyscallConn()
	if err != nil {
		return
	}
	ok := false
	_ = raw.Control(func(fd uintptr) {
		tv := unix.NsecToTimeval(blockingReadTimeout.Nanoseconds())
		if unix.SetsockoptTimeval(int(fd), unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv) != nil {
			return
		}
		ok = unix.SetNonblock(int(fd), false) == nil
	})
	if ok {
		s.readFlags = unix.MSG_WAITFORONE
	}
}
