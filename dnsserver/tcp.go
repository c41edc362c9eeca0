package dnsserver

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/sidedns/sidedns/dnswire"
)

// serveTCP accepts connections until the listener closes.
func (s *Server) serveTCP(ln *net.TCPListener) {
	defer s.acceptWG.Done()
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if s.stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors, say: wait a little rather than spin.
			s.log.Warn("accept tcp", zap.Error(err))
			time.Sleep(100 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		if s.stopping.Load() {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.acceptWG.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// serveConn reads length-prefixed queries from one connection. Each query is
// answered on its own goroutine and written as soon as it is ready, so a
// slow forward does not hold up the answers behind it (RFC 7766 6.2.1.1,
// pipelining). Replies carry the client's ID, which is how it matches them.
func (s *Server) serveConn(c *net.TCPConn) {
	defer s.acceptWG.Done()
	var (
		wmu     sync.Mutex // one reply written at a time
		pending sync.WaitGroup
		slots   = make(chan struct{}, tcpPipeline)
	)
	defer func() {
		pending.Wait()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	src := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	rd := bufio.NewReader(c)
	for {
		c.SetReadDeadline(time.Now().Add(tcpIdleTimeout))
		var size [2]byte
		if _, err := io.ReadFull(rd, size[:]); err != nil {
			return
		}
		pkt := make([]byte, binary.BigEndian.Uint16(size[:]))
		if _, err := io.ReadFull(rd, pkt); err != nil {
			return
		}
		slots <- struct{}{}
		pending.Add(1)
		s.inflight.Add(1)
		go func() {
			defer func() { <-slots; pending.Done(); s.inflight.Done() }()
			reply, ok := s.handleTCP(pkt, &request{src: src, tcp: true})
			if !ok {
				return
			}
			wmu.Lock()
			defer wmu.Unlock()
			c.SetWriteDeadline(time.Now().Add(tcpIdleTimeout))
			if _, err := c.Write(reply); err != nil {
				s.log.Debug("write tcp", zap.Error(err))
			}
		}()
	}
}

// handleTCP answers one query from a TCP connection, framed for the wire.
func (s *Server) handleTCP(pkt []byte, r *request) (reply []byte, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			reply, ok = s.panicked(make([]byte, 2, 512), r, p), true
			binary.BigEndian.PutUint16(reply, uint16(len(reply)-2))
		}
	}()
	out := make([]byte, 2, 514)
	if s.limiter != nil && s.limiter.check(r.src, true) != verdictAllow {
		// A TCP source cannot be spoofed; past the limit it is told REFUSED.
		s.Stats.RateLimited.Add(1)
		r.start = time.Now()
		if errors.Is(dnswire.Parse(pkt, &r.q), dnswire.ErrNotQuery) {
			return nil, false
		}
		out = s.fail(out, r, dns.RcodeRefused)
	} else {
		var next step
		out, next = s.respond(out, pkt, r)
		switch next {
		case stepDrop:
			return nil, false
		case stepForward:
			out = s.forward(out, r)
		}
	}
	binary.BigEndian.PutUint16(out, uint16(len(out)-2))
	return out, true
}
