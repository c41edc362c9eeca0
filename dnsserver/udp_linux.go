//go:build linux && (amd64 || arm64)

package dnsserver

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// udpBatch is how many datagrams one recvmmsg or sendmmsg call moves. Under
// load the kernel work per query, not our code, bounds the rate; batching
// cuts the system calls per query to a fraction.
const udpBatch = 32

// mmsghdr is struct mmsghdr from <sys/socket.h> on 64-bit Linux.
type mmsghdr struct {
	hdr syscall.Msghdr
	len uint32
	_   [4]byte
}

// batchIO holds the buffers of one reader: everything is allocated once, so
// the loop allocates nothing per packet.
type batchIO struct {
	in      [udpBatch]mmsghdr
	inIov   [udpBatch]syscall.Iovec
	inName  [udpBatch]syscall.RawSockaddrInet6
	inBuf   [udpBatch][udpReadSize]byte
	out     [udpBatch]mmsghdr
	outIov  [udpBatch]syscall.Iovec
	outName [udpBatch]syscall.RawSockaddrInet6
	outBuf  [udpBatch][udpReadSize]byte
	nOut    int
}

// serveUDPBatch is serveUDP with recvmmsg and sendmmsg.
func (s *Server) serveUDPBatch(conn *net.UDPConn) {
	defer s.udpWG.Done()
	rc, err := conn.SyscallConn()
	if err != nil {
		s.udpWG.Add(1)
		s.serveUDP(conn)
		return
	}
	b := new(batchIO)
	for i := range b.in {
		b.inIov[i] = syscall.Iovec{Base: &b.inBuf[i][0]}
		b.in[i].hdr.Iov = &b.inIov[i]
		b.in[i].hdr.Iovlen = 1
		b.in[i].hdr.Name = (*byte)(unsafe.Pointer(&b.inName[i]))
		b.out[i].hdr.Iov = &b.outIov[i]
		b.out[i].hdr.Iovlen = 1
		b.out[i].hdr.Name = (*byte)(unsafe.Pointer(&b.outName[i]))
	}
	var (
		n     int
		errno syscall.Errno
	)
	// The closures are made once: made in the loop, each would escape.
	recv := func(fd uintptr) bool {
		for i := range b.in {
			b.inIov[i].SetLen(udpReadSize)
			b.in[i].hdr.Namelen = syscall.SizeofSockaddrInet6
		}
		r, _, e := syscall.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.in[0])), udpBatch, syscall.MSG_DONTWAIT, 0, 0)
		if e == syscall.EAGAIN {
			return false // wait in the poller
		}
		n, errno = int(r), e
		return true
	}
	sent := 0
	send := func(fd uintptr) bool {
		r, _, e := syscall.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.out[sent])), uintptr(b.nOut-sent), 0, 0, 0)
		if e == syscall.EAGAIN {
			return false
		}
		if e != 0 {
			// The first message failed (say, netfilter refused it): skip
			// just that one, the rest of the batch goes to other clients.
			s.log.Debug("sendmmsg", zap.Error(e))
			sent++
			return sent >= b.nOut
		}
		sent += int(r)
		return sent >= b.nOut
	}

	var r request
	for {
		if err := rc.Read(recv); err != nil {
			if s.stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("recvmmsg", zap.Error(err))
			continue
		}
		if errno != 0 {
			s.log.Debug("recvmmsg", zap.Error(errno))
			continue
		}
		b.nOut = 0
		for i := range n {
			from, ok := sockaddrToAddrPort(&b.inName[i])
			if !ok {
				continue
			}
			pkt := b.inBuf[i][:b.in[i].len]
			reply, ok := s.handleUDP(conn, pkt, from, b.outBuf[b.nOut][:0], &r)
			if !ok {
				continue
			}
			o := b.nOut
			b.outName[o] = b.inName[i]
			b.out[o].hdr.Namelen = b.in[i].hdr.Namelen
			b.outIov[o] = syscall.Iovec{Base: &reply[0]}
			b.outIov[o].SetLen(len(reply))
			b.nOut++
		}
		if b.nOut > 0 {
			sent = 0
			if err := rc.Write(send); err != nil {
				s.log.Debug("sendmmsg", zap.Error(err))
			}
		}
	}
}

// sockaddrToAddrPort reads the sender's address that recvmmsg stored.
func sockaddrToAddrPort(sa *syscall.RawSockaddrInet6) (netip.AddrPort, bool) {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	switch sa.Family {
	case syscall.AF_INET:
		sa4 := (*syscall.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port), true
	case syscall.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port), true
	}
	return netip.AddrPort{}, false
}
