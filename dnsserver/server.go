// Package dnsserver is the wire server: it binds the listeners, applies the
// allow list and the rate limit, and answers each query by the rules in
// respond.go, from the local table or the upstream. It knows nothing about
// containers. See docs/ARCHITECTURE.md.
package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/sidedns/sidedns/upstream"
)

// RateLimit is a per-source token bucket. QPS 0 disables it.
type RateLimit struct {
	QPS   float64 // sustained queries per second per source address
	Burst int     // bucket size; default 2×QPS
	// Slip: every Slip-th UDP query over the limit gets an empty TC=1 reply,
	// so an honest client retries over TCP; the rest are dropped. 0 never
	// slips, 1 always does; cmd/sidedns uses DefaultSlip.
	Slip int
}

// Defaults.
const (
	DefaultPort = 53
	// udpReadSize is the read buffer for UDP queries; EDNS queries with options
	// can exceed 512 bytes.
	udpReadSize = 4096
	// udpSocketBuffer is the receive buffer asked for each UDP socket: 4 MiB
	// holds some 30,000 queries, about a third of a second at full load.
	udpSocketBuffer = 4 << 20
	// tcpIdleTimeout closes a TCP connection with no query for this long
	// (RFC 7766 6.2.3: servers should not hold idle connections for long).
	tcpIdleTimeout = 10 * time.Second
	// tcpPipeline bounds the queries in flight on one TCP connection.
	tcpPipeline = 64
	// bindRetries covers the race where TCP on the port UDP got with :0 is taken.
	bindRetries = 5
)

// Config configures a Server. Zero values mean defaults.
type Config struct {
	// Listen holds ip[:port] addresses (port 53 when omitted; port 0 picks a
	// free one, the same for UDP and TCP). Each is bound on UDP and TCP.
	Listen []string
	// Local answers names from the table; nil forwards everything.
	Local Local
	// Upstream answers names that are not ours; nil answers SERVFAIL.
	Upstream Upstream
	// Allow lists the sources that may query. Empty means loopback plus every
	// source Local.IsLocalSource accepts.
	Allow []netip.Prefix
	// RateLimit per source address; past it UDP queries get TC=1 (a
	// fraction, see RateLimit.Slip) or are dropped, and TCP queries get REFUSED.
	RateLimit RateLimit
	// ForwardTimeout bounds a forwarded query; default upstream.DefaultForwardBudget.
	ForwardTimeout time.Duration
	// Logger; default zap.NewNop.
	Logger *zap.Logger
	// LogQueries is the fraction (0..1) of queries written to the query log.
	LogQueries float64
	// Now is the clock for the rate limiter; default time.Now.
	Now func() time.Time
	// Recorder, when set, sees every lookup (the service map).
	Recorder Recorder
}

// Stats are the server's counters. The ops surface exports them.
type Stats struct {
	Queries     atomic.Uint64 // parsed queries that reached the handler
	Malformed   atomic.Uint64 // packets that did not parse, or were responses: dropped
	Refused     atomic.Uint64 // sources outside the allow list
	RateLimited atomic.Uint64 // over the per-source limit (UDP slipped or dropped, TCP REFUSED)
	Slipped     atomic.Uint64 // the part of RateLimited answered with an empty TC=1 reply
	FormErr     atomic.Uint64 // FORMERR, NOTIMP and BADVERS: the query did not parse
	Policy      atomic.Uint64 // REFUSED or NOTIMP by policy: AXFR, meta types, other classes, RD=0 misses
	Local       atomic.Uint64 // answered from the table
	Forwarded   atomic.Uint64 // answered by the upstream path
	Overloaded  atomic.Uint64 // REFUSED because too many upstream queries were outstanding
	ServFail    atomic.Uint64 // upstream failures and recovered handler panics
}

// Server is a DNS server on UDP and TCP.
type Server struct {
	Stats   Stats
	metrics *metrics
	sources sourceKinds

	listen   []netip.AddrPort
	readers  int // UDP sockets (SO_REUSEPORT) per listen address
	local    Local
	recorder Recorder
	log      *zap.Logger
	timeout  time.Duration
	logRate  float64
	limiter  *limiter
	allow    atomic.Pointer[[]netip.Prefix]
	upstream atomic.Pointer[upstreamBox]

	baseCtx context.Context
	cancel  context.CancelFunc

	mu      sync.Mutex
	started bool
	udp     []*net.UDPConn
	tcp     []*net.TCPListener
	conns   map[*net.TCPConn]struct{}
	addrs   []netip.AddrPort

	stopping atomic.Bool    // readers exit on their next read error
	udpWG    sync.WaitGroup // UDP readers
	acceptWG sync.WaitGroup // TCP accept loops and connection readers
	inflight sync.WaitGroup // queries being answered (forwards, TCP queries)
}

// upstreamBox lets SetUpstream swap the upstream atomically, nil included.
type upstreamBox struct{ up Upstream }

// New validates cfg and returns a Server that is not yet listening.
func New(cfg Config) (*Server, error) {
	if len(cfg.Listen) == 0 {
		return nil, errors.New("new server: no listen address")
	}
	s := &Server{
		local:   cfg.Local,
		log:     cfg.Logger,
		timeout: cfg.ForwardTimeout,
		logRate: cfg.LogQueries,
		metrics: newMetrics(),
	}
	s.recorder = cfg.Recorder
	for _, l := range cfg.Listen {
		ap, err := ParseListenAddr(l)
		if err != nil {
			return nil, fmt.Errorf("new server: %w", err)
		}
		s.listen = append(s.listen, ap)
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.timeout <= 0 {
		s.timeout = upstream.DefaultForwardBudget
	}
	if cfg.LogQueries < 0 || cfg.LogQueries > 1 {
		return nil, fmt.Errorf("new server: query log rate %v is not within 0..1", cfg.LogQueries)
	}
	if cfg.RateLimit.QPS < 0 || cfg.RateLimit.Burst < 0 || cfg.RateLimit.Slip < 0 {
		return nil, fmt.Errorf("new server: negative rate limit %v/%v/%v", cfg.RateLimit.QPS, cfg.RateLimit.Burst, cfg.RateLimit.Slip)
	}
	if cfg.RateLimit.QPS > 0 {
		now := cfg.Now
		if now == nil {
			now = time.Now
		}
		s.limiter = newLimiter(cfg.RateLimit, now)
	}
	s.readers = udpReaders(runtime.GOMAXPROCS(0))
	s.conns = make(map[*net.TCPConn]struct{})
	s.SetAllow(cfg.Allow)
	s.SetUpstream(cfg.Upstream)
	s.baseCtx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// ParseListenAddr parses ip[:port] (IPv6 as [ip]:port); the port defaults to 53.
func ParseListenAddr(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	ip, err := netip.ParseAddr(trimBrackets(s))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("parse listen address %q: want ip[:port], e.g. 127.0.0.1:53 or [::1]:53", s)
	}
	if ip.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("parse listen address %q: zones are not supported", s)
	}
	return netip.AddrPortFrom(ip, DefaultPort), nil
}

func trimBrackets(s string) string {
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		return s[1 : len(s)-1]
	}
	return s
}

// SetAllow replaces the allow list (SIGHUP reload). Empty means the default:
// loopback plus Local.IsLocalSource.
func (s *Server) SetAllow(allow []netip.Prefix) {
	p := make([]netip.Prefix, 0, len(allow))
	for _, a := range allow {
		p = append(p, a.Masked())
	}
	s.allow.Store(&p)
}

// SetUpstream replaces the upstream (SIGHUP reload).
func (s *Server) SetUpstream(up Upstream) { s.upstream.Store(&upstreamBox{up: up}) }

// Start binds every listen address on UDP and TCP and starts serving. On error
// nothing stays bound.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("start server: already started")
	}
	var (
		udp   []*net.UDPConn
		tcp   []*net.TCPListener
		addrs []netip.AddrPort
	)
	for _, ap := range s.listen {
		pcs, ln, bound, err := bind(ap, s.readers)
		if err != nil {
			for _, c := range udp {
				c.Close()
			}
			for _, l := range tcp {
				l.Close()
			}
			return err
		}
		udp, tcp, addrs = append(udp, pcs...), append(tcp, ln), append(addrs, bound)
	}
	for _, c := range udp {
		s.udpWG.Add(1)
		go s.serveUDPBatch(c)
	}
	for _, ln := range tcp {
		s.acceptWG.Add(1)
		go s.serveTCP(ln)
	}
	s.udp, s.tcp, s.addrs = udp, tcp, addrs
	s.started = true
	s.log.Info("dns server listening", zap.Stringers("addrs", addrs), zap.Int("udp_sockets_per_address", s.readers))
	return nil
}

// udpReaders is how many UDP sockets, each with one reader, serve a listen
// address: one per two cores. On 2 cores one reader was measured fastest (a
// second one contends for the same cores and shrinks the recvmmsg batches);
// a bigger host gets SO_REUSEPORT sockets, among which the kernel spreads
// clients, so the readers never share a socket.
func udpReaders(procs int) int {
	if !reusePortSupported {
		return 1
	}
	return max(1, procs/2)
}

// bind opens n UDP sockets and one TCP listener on the same address. With
// port 0, TCP takes the port UDP got, retrying when that port is taken on
// TCP. With n > 1 the UDP sockets share the port through SO_REUSEPORT.
func bind(ap netip.AddrPort, n int) ([]*net.UDPConn, *net.TCPListener, netip.AddrPort, error) {
	lc := net.ListenConfig{}
	if n > 1 {
		lc.Control = setReusePort
	}
	ctx := context.Background()
	for try := 0; ; try++ {
		pc, err := lc.ListenPacket(ctx, "udp", ap.String())
		if err != nil {
			return nil, nil, netip.AddrPort{}, bindError(err)
		}
		bound := netip.AddrPortFrom(ap.Addr(), pc.LocalAddr().(*net.UDPAddr).AddrPort().Port())
		conns := []*net.UDPConn{pc.(*net.UDPConn)}
		closeAll := func() {
			for _, c := range conns {
				c.Close()
			}
		}
		for len(conns) < n {
			pc, err := lc.ListenPacket(ctx, "udp", bound.String())
			if err != nil {
				closeAll()
				return nil, nil, netip.AddrPort{}, bindError(err)
			}
			conns = append(conns, pc.(*net.UDPConn))
		}
		for _, c := range conns {
			// A burst that arrives while the reader is descheduled waits in
			// the socket buffer instead of being dropped by the kernel. The
			// kernel caps it at net.core.rmem_max; a smaller buffer is no error.
			c.SetReadBuffer(udpSocketBuffer)
		}
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(bound))
		if err != nil {
			closeAll()
			if ap.Port() == 0 && try < bindRetries && errors.Is(err, syscall.EADDRINUSE) {
				continue
			}
			return nil, nil, netip.AddrPort{}, bindError(err)
		}
		return conns, ln, bound, nil
	}
}

func bindError(err error) error {
	if errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%w (port 53 needs root or CAP_NET_BIND_SERVICE; or use --listen to pick another address)", err)
	}
	return fmt.Errorf("%w (use --listen to pick another address)", err)
}

// Addrs returns the bound addresses (one per listen address, UDP and TCP share
// the port). It is empty before Start.
func (s *Server) Addrs() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]netip.AddrPort(nil), s.addrs...)
}

// Shutdown stops accepting queries and waits for the in-flight ones to be
// answered, or for ctx to end; then it cancels the forwards still running.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	udp, tcp := s.udp, s.tcp
	s.udp, s.tcp, s.started = nil, nil, false
	s.stopping.Store(true)
	for _, ln := range tcp {
		ln.Close()
	}
	// Connection readers stop at their next read; their queries in flight
	// still get written.
	for c := range s.conns {
		c.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	defer s.cancel()

	// Stop reading but keep the sockets open until the queries in flight
	// have written their answers.
	for _, c := range udp {
		c.SetReadDeadline(time.Now())
	}
	s.udpWG.Wait()
	drained := make(chan struct{})
	go func() {
		s.inflight.Wait()
		close(drained)
	}()
	var err error
	select {
	case <-drained:
	case <-ctx.Done():
		err = fmt.Errorf("shut down dns server: queries in flight: %w", ctx.Err())
	}
	s.cancel() // forwards still running end now, and their readers with them
	for _, c := range udp {
		c.Close()
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.acceptWG.Wait()
	return err
}

func (s *Server) allowed(src netip.Addr) bool {
	s.sources.see(src) // every query passes here, on the fast and the slow path
	allow := *s.allow.Load()
	if len(allow) == 0 {
		return src.IsLoopback() || (s.local != nil && s.local.IsLocalSource(src))
	}
	for _, p := range allow {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

func typeString(t uint16) string {
	if s, ok := dns.TypeToString[t]; ok {
		return s
	}
	return "TYPE" + strconv.Itoa(int(t))
}
