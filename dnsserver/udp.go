package dnsserver

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/sidedns/sidedns/dnswire"
)

// FastLocal is implemented by a Local that can answer plain queries straight
// into wire bytes (resolver.Resolver does).
type FastLocal interface {
	AppendAnswer(dst []byte, q *dnswire.Query, src netip.Addr) ([]byte, bool)
}

// FastCache is implemented by an upstream Exchanger that can answer cache
// hits straight into wire bytes (upstream.Cache does).
type FastCache interface {
	AppendHitQuery(dst []byte, q *dnswire.Query, tcp bool) ([]byte, bool)
}

// serveUDP reads queries from one socket. Plain queries for local names and
// cache hits are answered inline without allocating; everything else is
// unpacked by miekg/dns and handled by ServeDNS on its own goroutine, since a
// forward can take seconds.
func (s *Server) serveUDP(conn *net.UDPConn) {
	defer s.udpWG.Done()
	buf := make([]byte, udpReadSize)
	out := make([]byte, 0, udpReadSize)
	var q dnswire.Query
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if s.stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("read udp", zap.Error(err))
			continue
		}
		if reply, ok := s.handleUDP(conn, buf[:n], from, out[:0], &q); ok {
			if _, err := conn.WriteToUDPAddrPort(reply, from); err != nil {
				s.log.Debug("write udp", zap.Error(err))
			}
		}
	}
}

// handleUDP deals with one packet. It returns the reply when the fast path
// made one, to be sent by the caller; otherwise the packet was dropped, or
// copied and handed to ServeDNS on its own goroutine.
func (s *Server) handleUDP(conn *net.UDPConn, pkt []byte, from netip.AddrPort, out []byte, q *dnswire.Query) ([]byte, bool) {
	src := from.Addr().Unmap()
	// Every source is rate-limited, refused ones too: REFUSED is a reply
	// like any other, and spoofed floods must not be reflected at full rate.
	switch s.checkRate(src) {
	case verdictSlip:
		return s.slipReply(out, pkt, q)
	case verdictDrop:
		return nil, false // a reply would feed a reflection attack
	}
	allowed := s.allowed(src)
	if reply, ok := s.fastUDP(out, pkt, src, allowed, q); ok {
		return reply, true
	}
	cp := make([]byte, len(pkt))
	copy(cp, pkt)
	s.slowWG.Add(1)
	go s.serveSlowUDP(conn, cp, from)
	return nil, false
}

// fastUDP answers pkt into dst when it is a plain query: REFUSED for a source
// outside the allow list, else a local name or a cache hit. The rate limit was
// checked already.
func (s *Server) fastUDP(dst, pkt []byte, src netip.Addr, allowed bool, q *dnswire.Query) (reply []byte, ok bool) {
	defer func() {
		// A bug here must cost one query, not the reader goroutine and with
		// it the process; the slow path then answers or drops it.
		if r := recover(); r != nil {
			s.log.Error("udp fast path panicked", zap.Any("panic", r), zap.Stringer("src", src))
			reply, ok = dst, false
		}
	}()
	if s.logRate > 0 || dnswire.Parse(pkt, q) != nil {
		return dst, false // the query log is written by the slow path
	}
	start := time.Now()
	if !allowed {
		s.Stats.Queries.Add(1)
		s.Stats.Refused.Add(1)
		s.metrics.observe(q.Type, dns.RcodeRefused, srcServer, start)
		reply = dnswire.AppendHeader(dst, q, dnswire.FlagRA, dns.RcodeRefused, 0, 0, q.ARCount())
		if q.EDNS {
			reply = dnswire.AppendOPT(reply, dnswire.EDNSSize, q.DO)
		}
		return reply, true
	}
	if s.fastLocal != nil {
		if reply, ok := s.fastLocal.AppendAnswer(dst, q, src); ok {
			s.Stats.Queries.Add(1)
			s.Stats.Local.Add(1)
			s.metrics.observe(q.Type, 0, srcLocal, start)
			return reply, true
		}
	}
	if fc := s.upstream.Load().fast; fc != nil {
		if reply, ok := fc.AppendHitQuery(dst, q, false); ok {
			s.Stats.Queries.Add(1)
			s.Stats.Forwarded.Add(1)
			s.metrics.observe(q.Type, int(reply[3]&0xf), srcCache, start)
			return reply, true
		}
	}
	return dst, false
}

func (s *Server) serveSlowUDP(conn *net.UDPConn, pkt []byte, from netip.AddrPort) {
	defer s.slowWG.Done()
	req := new(dns.Msg)
	if err := req.Unpack(pkt); err != nil || req.Response {
		s.Stats.Malformed.Add(1)
		return
	}
	s.serve(&udpWriter{conn: conn, to: from}, req, false) // handleUDP applied the rate limit
}

// udpReaders is how many goroutines read each UDP socket. One: a second
// reader on the same socket contends for it and shrinks the recvmmsg batches;
// on this 2-core machine one reader gave about 10% more local-name QPS and a
// lower mean latency (bench/run.sh, interleaved runs). Slow-path queries run
// on their own goroutines anyway.
const udpReaders = 1

// udpWriter is the dns.ResponseWriter for a query read by serveUDP.
type udpWriter struct {
	conn *net.UDPConn
	to   netip.AddrPort
}

func (w *udpWriter) LocalAddr() net.Addr  { return w.conn.LocalAddr() }
func (w *udpWriter) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(w.to) }
func (w *udpWriter) Network() string      { return "udp" }
func (w *udpWriter) Write(b []byte) (int, error) {
	return w.conn.WriteToUDPAddrPort(b, w.to)
}
func (w *udpWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
func (w *udpWriter) Close() error        { return nil }
func (w *udpWriter) TsigStatus() error   { return nil }
func (w *udpWriter) TsigTimersOnly(bool) {}
func (w *udpWriter) Hijack()             {}
