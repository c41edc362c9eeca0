package dnsserver

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/sidedns/sidedns/dnswire"
)

// serveUDP reads queries from one socket, one datagram per system call (the
// portable reader; Linux uses serveUDPBatch).
func (s *Server) serveUDP(conn *net.UDPConn) {
	defer s.udpWG.Done()
	buf := make([]byte, udpReadSize)
	out := make([]byte, 0, udpReadSize)
	var r request
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if s.stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("read udp", zap.Error(err))
			continue
		}
		if reply, ok := s.handleUDP(conn, buf[:n], from, out[:0], &r); ok {
			if _, err := conn.WriteToUDPAddrPort(reply, from); err != nil {
				s.log.Debug("write udp", zap.Error(err))
			}
		}
	}
}

// handleUDP deals with one datagram. It returns the reply when respond made
// one inline, to be sent by the caller; otherwise the packet was dropped, or
// copied and forwarded on its own goroutine.
func (s *Server) handleUDP(conn *net.UDPConn, pkt []byte, from netip.AddrPort, out []byte, r *request) (reply []byte, ok bool) {
	r.src, r.tcp = from.Addr().Unmap(), false
	// Every source is rate-limited, refused ones too: REFUSED is a reply
	// like any other, and spoofed floods must not be reflected at full rate.
	switch s.checkRate(r.src) {
	case verdictSlip:
		return s.slipReply(out, pkt, &r.q)
	case verdictDrop:
		return nil, false // a reply would feed a reflection attack
	}
	defer func() {
		// A bug must cost one query, not the reader goroutine and with it
		// the process.
		if p := recover(); p != nil {
			reply, ok = s.panicked(out[:0], r, p), true
		}
	}()
	reply, next := s.respond(out, pkt, r)
	switch next {
	case stepReply:
		return reply, true
	case stepForward:
		cp := &udpForward{pkt: append([]byte(nil), pkt...), to: from, start: r.start}
		s.inflight.Add(1)
		go s.forwardUDP(conn, cp)
	}
	return nil, false
}

// udpForward is a query handed from the reader to its own goroutine.
type udpForward struct {
	pkt   []byte
	to    netip.AddrPort
	start time.Time
}

func (s *Server) forwardUDP(conn *net.UDPConn, f *udpForward) {
	defer s.inflight.Done()
	// The reader's Query points into its buffer: read our copy again;
	// respond parsed the same bytes without error.
	r := &request{src: f.to.Addr().Unmap(), start: f.start}
	if err := dnswire.Parse(f.pkt, &r.q); err != nil {
		return
	}
	reply := s.forward(make([]byte, 0, 512), r)
	if _, err := conn.WriteToUDPAddrPort(reply, f.to); err != nil {
		s.log.Debug("write udp", zap.Error(err))
	}
}
