package upstream

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// udpBufSize is the read buffer for UDP replies. It exceeds the
// dnswire.MaxUDPSize we advertise so that
// a server that ignores our EDNS size still fits; a reply that fills the
// buffer is treated as truncated and retried over TCP.
const udpBufSize = 4096

// maxIdle bounds the idle connections kept per server and transport. Beyond
// it, conns are closed after use: bursts dial, steady load reuses.
const maxIdle = 64

// serverOpts are the tunables shared by all servers of a Forwarder.
type serverOpts struct {
	idleTimeout time.Duration // how long an idle pooled conn may be reused
	probeMin    time.Duration // first probe delay after a failure
	probeMax    time.Duration // probe backoff cap
	probeTO     time.Duration // timeout of one probe
	tls         *tls.Config   // base TLS config; nil means defaults
	log         *zap.Logger
}

// server talks to one upstream: it owns its sockets and its health. Policy
// (order, failover) lives in Forwarder.
type server struct {
	spec    Spec
	opts    *serverOpts
	tlsConf *tls.Config // tls only

	// fails counts consecutive failed exchanges; > 0 means down.
	fails   atomic.Uint32
	probing atomic.Bool

	queries     atomic.Uint64
	failures    atomic.Uint64
	answers     atomic.Uint64
	latencySum  atomic.Int64 // ns, over answers
	lastLatency atomic.Int64 // ns

	udp    pool
	stream pool // tcp or tls, by spec.Proto

	// ctx ends when the server is closed; it stops the probes.
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex // orders probe starts against close
	probes sync.WaitGroup
}

func newServer(spec Spec, opts *serverOpts) *server {
	s := &server{spec: spec, opts: opts}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.udp.expiry = opts.idleTimeout
	s.stream.expiry = opts.idleTimeout
	if spec.Proto == ProtoTLS {
		var c *tls.Config
		if opts.tls != nil {
			c = opts.tls.Clone()
		} else {
			c = &tls.Config{}
		}
		c.ServerName = spec.tlsServerName()
		if c.MinVersion == 0 {
			c.MinVersion = tls.VersionTLS12
		}
		if c.ClientSessionCache == nil {
			// Resumption makes re-dials after idle expiry cheap.
			c.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		}
		s.tlsConf = c
	}
	return s
}

// close stops the probe loop and closes idle connections, and returns when
// the probe has stopped. In-flight exchanges finish; their conns are closed
// instead of pooled.
func (s *server) close() {
	s.mu.Lock()
	s.cancel()
	s.mu.Unlock()
	s.udp.close()
	s.stream.close()
	s.probes.Wait()
}

func (s *server) isClosed() bool { return s.ctx.Err() != nil }

func (s *server) down() bool { return s.fails.Load() > 0 }

// markFailed records a timeout or network error: the server goes down and a
// probe loop starts, unless one already runs.
func (s *server) markFailed(err error) {
	s.failures.Add(1)
	if s.fails.Add(1) == 1 {
		s.opts.log.Warn("upstream down", zap.Stringer("upstream", s.spec), zap.Error(err))
	}
	s.startProbe()
}

// markUp records a reply: the server is alive, whatever the rcode.
func (s *server) markUp() {
	if s.fails.Load() != 0 && s.fails.Swap(0) != 0 {
		s.opts.log.Info("upstream up", zap.Stringer("upstream", s.spec))
	}
}

func (s *server) startProbe() {
	if !s.probing.CompareAndSwap(false, true) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isClosed() {
		s.probing.Store(false)
		return
	}
	s.probes.Add(1)
	go func() {
		defer s.probes.Done()
		s.probeLoop()
	}()
}

func (s *server) probeLoop() {
	for {
		s.probeUntilUp()
		s.probing.Store(false)
		// A failure that came in while we were leaving found probing still
		// set and started nothing: take it over, or it would stay down.
		if !s.down() || s.isClosed() || !s.probing.CompareAndSwap(false, true) {
			return
		}
	}
}

func (s *server) probeUntilUp() {
	interval := s.opts.probeMin
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		if !s.down() {
			return // a real query got through meanwhile
		}
		err := s.probe()
		if err == nil {
			s.markUp()
			return
		}
		s.opts.log.Debug("upstream probe failed", zap.Stringer("upstream", s.spec), zap.Error(err))
		interval = min(interval*2, s.opts.probeMax)
		t.Reset(interval)
	}
}

// probe asks for ". NS", which any resolver has cached; any reply, whatever
// its rcode, shows the server is alive.
func (s *server) probe() error {
	q := upstreamQuery(".", dns.TypeNS, dns.ClassINET, false, false)
	q.Id = newID()
	_, err := s.exchange(s.ctx, q, time.Now().Add(s.opts.probeTO), false)
	return err
}

// newID picks a query ID. math/rand/v2's global source is ChaCha8, seeded
// per process, so IDs are unpredictable to an off-path spoofer.
func newID() uint16 { return uint16(rand.Uint32()) }

// errTruncatedRead marks a UDP reply that was cut and does not parse, or
// that filled the read buffer: it is retried over TCP like any reply with TC.
var errTruncatedRead = errors.New("reply larger than read buffer")

// exchange sends q (with its ID and EDNS already set) and returns the reply
// that matches it. UDP is used unless tcp is set or the spec says otherwise;
// a truncated UDP reply is retried over TCP on the same server.
func (s *server) exchange(ctx context.Context, q *dns.Msg, deadline time.Time, tcp bool) (*dns.Msg, error) {
	bp := getBuf()
	defer putBuf(bp)
	buf := *bp
	// Pack after two bytes of headroom, which hold the TCP length prefix.
	wire, err := q.PackBuffer(buf[2:])
	if err != nil {
		return nil, fmt.Errorf("pack query: %w", err)
	}
	if len(wire) > 0 && &wire[0] != &buf[2] {
		// PackBuffer allocated: the query did not fit. Rare; copy it out.
		frame := make([]byte, 2+len(wire))
		copy(frame[2:], wire)
		buf, wire = frame, frame[2:]
	}
	binary.BigEndian.PutUint16(buf, uint16(len(wire)))
	frame := buf[:2+len(wire)]

	if s.spec.Proto == ProtoUDP && !tcp {
		r, err := s.exchangeUDP(ctx, q, wire, deadline)
		if !errors.Is(err, errTruncatedRead) && (err != nil || !r.Truncated) {
			return r, err
		}
		// Truncated: the full answer needs TCP. Same server, same deadline,
		// a new ID: every message we send gets its own.
		q.Id = newID()
		binary.BigEndian.PutUint16(wire, q.Id)
	}
	return s.exchangeStream(ctx, q, frame, deadline)
}

func (s *server) exchangeUDP(ctx context.Context, q *dns.Msg, wire []byte, deadline time.Time) (*dns.Msg, error) {
	c := s.udp.get()
	if c == nil {
		var err error
		if c, err = s.dial(ctx, "udp", deadline); err != nil {
			return nil, err
		}
	}
	if err := c.SetDeadline(deadline); err != nil {
		c.Close()
		return nil, fmt.Errorf("set deadline: %w", err)
	}
	stop := interruptOnCancel(ctx, c)

	if _, err := c.Write(wire); err != nil {
		stop()
		c.Close()
		return nil, fmt.Errorf("write udp: %w", err)
	}
	bp := getBuf()
	defer putBuf(bp)
	rbuf := (*bp)[:udpBufSize]
	for {
		n, err := c.Read(rbuf)
		if err != nil {
			stop()
			c.Close()
			return nil, fmt.Errorf("read udp: %w", err)
		}
		r, ok := matchReply(q, rbuf[:n])
		if !ok {
			// A reply cut mid-record does not parse; if it says TC, or
			// filled the buffer, fetch the whole one over TCP (where the
			// question is checked).
			if headerMatches(q, rbuf[:n]) && (n == len(rbuf) || rbuf[2]&0x02 != 0) {
				s.release(&s.udp, c, stop)
				return nil, errTruncatedRead
			}
			continue // spoofed, late or garbled: keep waiting for ours
		}
		s.release(&s.udp, c, stop)
		return r, nil
	}
}

// exchangeStream runs one query over TCP or TLS. A pooled conn that the
// server closed while idle fails at once; then it retries on a fresh one.
func (s *server) exchangeStream(ctx context.Context, q *dns.Msg, frame []byte, deadline time.Time) (*dns.Msg, error) {
	network := ProtoTCP
	if s.spec.Proto == ProtoTLS {
		network = ProtoTLS
	}
	for {
		c := s.stream.get()
		reused := c != nil
		if c == nil {
			var err error
			if c, err = s.dial(ctx, network, deadline); err != nil {
				return nil, err
			}
		}
		r, err := s.roundTripStream(ctx, c, q, frame, deadline)
		if err == nil {
			return r, nil
		}
		if reused && isStale(err) && ctx.Err() == nil && time.Now().Before(deadline) {
			// The others idled as long as this one did: drop them all.
			s.stream.drain()
			continue
		}
		return nil, err
	}
}

func (s *server) roundTripStream(ctx context.Context, c net.Conn, q *dns.Msg, frame []byte, deadline time.Time) (*dns.Msg, error) {
	if err := c.SetDeadline(deadline); err != nil {
		c.Close()
		return nil, fmt.Errorf("set deadline: %w", err)
	}
	stop := interruptOnCancel(ctx, c)
	fail := func(op string, err error) (*dns.Msg, error) {
		stop()
		c.Close()
		return nil, fmt.Errorf("%s %s: %w", op, s.spec.Proto, err)
	}
	if _, err := c.Write(frame); err != nil {
		return fail("write", err)
	}
	bp := getBuf()
	defer putBuf(bp)
	for {
		rbuf := *bp
		if _, err := io.ReadFull(c, rbuf[:2]); err != nil {
			return fail("read", err)
		}
		n := int(binary.BigEndian.Uint16(rbuf))
		if n > len(rbuf) {
			rbuf = make([]byte, n)
		}
		rbuf = rbuf[:n]
		if _, err := io.ReadFull(c, rbuf); err != nil {
			return fail("read", err)
		}
		if r, ok := matchReply(q, rbuf); ok {
			s.release(&s.stream, c, stop)
			return r, nil
		}
		// Not ours (one query per conn, so this is garbage): keep reading
		// until the deadline, as for UDP.
	}
}

// release returns c to p, unless a cancellation already broke its deadline.
func (s *server) release(p *pool, c net.Conn, stop func() bool) {
	if !stop() {
		c.Close()
		return
	}
	p.put(c)
}

func (s *server) dial(ctx context.Context, network string, deadline time.Time) (net.Conn, error) {
	d := net.Dialer{Deadline: deadline}
	var (
		c   net.Conn
		err error
	)
	switch network {
	case ProtoTLS:
		// The handshake obeys the NetDialer's deadline too.
		td := tls.Dialer{NetDialer: &d, Config: s.tlsConf}
		c, err = td.DialContext(ctx, "tcp", s.spec.Addr)
	default:
		c, err = d.DialContext(ctx, network, s.spec.Addr)
	}
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", network, s.spec.Addr, err)
	}
	return c, nil
}

// interruptOnCancel makes a blocked read or write on c return when ctx is
// cancelled. stop reports false if that already happened: c is then unusable.
func interruptOnCancel(ctx context.Context, c net.Conn) (stop func() bool) {
	if ctx.Done() == nil {
		return alwaysTrue
	}
	return context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
}

func alwaysTrue() bool { return true }

// isStale tells a conn the server closed while it sat in the pool.
func isStale(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// headerMatches checks the ID and the QR bit of a raw reply.
func headerMatches(q *dns.Msg, b []byte) bool {
	return len(b) >= 12 && binary.BigEndian.Uint16(b) == q.Id && b[2]&0x80 != 0
}

// matchReply parses b and accepts it only if it answers q: same ID, QR set,
// same question. Replies without a question are accepted only as errors
// (servers omit it on FORMERR and the like); they carry no records to trust.
func matchReply(q *dns.Msg, b []byte) (*dns.Msg, bool) {
	if !headerMatches(q, b) {
		return nil, false
	}
	r := new(dns.Msg)
	if err := r.Unpack(b); err != nil {
		return nil, false
	}
	switch len(r.Question) {
	case 0:
		if r.Rcode == dns.RcodeSuccess || len(r.Answer) > 0 {
			return nil, false
		}
	case 1:
		rq, qq := r.Question[0], q.Question[0]
		if rq.Qtype != qq.Qtype || rq.Qclass != qq.Qclass || !strings.EqualFold(rq.Name, qq.Name) {
			return nil, false
		}
	default:
		return nil, false
	}
	return r, true
}

// Buffers hold a packed query or a reply. 4 KiB fits nearly all UDP traffic;
// larger TCP replies allocate.
var bufPool = sync.Pool{New: func() any { b := make([]byte, udpBufSize+2); return &b }}

func getBuf() *[]byte  { return bufPool.Get().(*[]byte) }
func putBuf(b *[]byte) { bufPool.Put(b) }

// pool keeps idle conns to one server, newest on top. Conns idle longer
// than expiry are closed rather than reused: servers drop idle TCP conns
// (miekg/dns after 8 s), and a stale UDP socket gains nothing.
type pool struct {
	mu     sync.Mutex
	idle   []idleConn
	closed bool
	expiry time.Duration
}

type idleConn struct {
	c     net.Conn
	since time.Time
}

// get returns an idle conn, or nil when the caller should dial. A closed
// pool has none, so exchanges in flight on a removed server still finish.
func (p *pool) get() net.Conn {
	now := time.Now()
	p.mu.Lock()
	// The oldest sit at the bottom: cut the expired ones off.
	var expired []idleConn
	i := 0
	for i < len(p.idle) && now.Sub(p.idle[i].since) > p.expiry {
		i++
	}
	if i > 0 {
		expired = append(expired, p.idle[:i]...)
		n := copy(p.idle, p.idle[i:])
		clear(p.idle[n:])
		p.idle = p.idle[:n]
	}
	var c net.Conn
	if n := len(p.idle); n > 0 {
		c = p.idle[n-1].c
		p.idle[n-1] = idleConn{}
		p.idle = p.idle[:n-1]
	}
	p.mu.Unlock()
	for _, ic := range expired {
		ic.c.Close()
	}
	return c
}

func (p *pool) put(c net.Conn) {
	p.mu.Lock()
	if p.closed || len(p.idle) >= maxIdle {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.idle = append(p.idle, idleConn{c: c, since: time.Now()})
	p.mu.Unlock()
}

// drain closes the idle conns, keeping the pool open.
func (p *pool) drain() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, ic := range idle {
		ic.c.Close()
	}
}

func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.drain()
}
