// Package dnsserver is the wire server: it binds the listeners, applies the
// allow list and the rate limit, and sends each query either to the local
// table or to the upstream Exchanger. It knows nothing about containers.
package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/sidedns/sidedns/dnswire"
	"github.com/sidedns/sidedns/upstream"
)

// Local is the container table. Resolve returns ok=false when the name is not
// ours and the query must be forwarded; a local answer is already truncated to
// maxSize. IsLocalSource reports whether src belongs to a Docker network (the
// default allow list).
type Local interface {
	Resolve(req *dns.Msg, src netip.Addr, maxSize int) (*dns.Msg, bool)
	IsLocalSource(src netip.Addr) bool
}

// RateLimit is a per-source token bucket. QPS 0 disables it.
type RateLimit struct {
	QPS   float64 // sustained queries per second per source address
	Burst int     // bucket size; default 2×QPS
}

// Defaults.
const (
	DefaultPort = 53
	// DefaultForwardTimeout bounds a whole forward (every upstream try): glibc's
	// resolver gives up after 5 s, so a later answer helps nobody.
	DefaultForwardTimeout = 5 * time.Second
	// udpReadSize is the read buffer for UDP queries; EDNS queries with options
	// can exceed miekg's 512-byte default.
	udpReadSize = 4096
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
	// Upstream forwards names that are not ours; nil answers SERVFAIL.
	// Exchange must not modify the query and must return a reply the caller owns.
	Upstream upstream.Exchanger
	// Allow lists the sources that may query. Empty means loopback plus every
	// source Local.IsLocalSource accepts.
	Allow []netip.Prefix
	// RateLimit per source address; past it UDP queries are dropped and TCP
	// queries get REFUSED.
	RateLimit RateLimit
	// ForwardTimeout bounds a forwarded query; default DefaultForwardTimeout.
	ForwardTimeout time.Duration
	// Logger; default zap.NewNop.
	Logger *zap.Logger
	// LogQueries is the fraction (0..1) of queries written to the query log.
	LogQueries float64
	// Now is the clock for the rate limiter; default time.Now.
	Now func() time.Time
}

// Stats are the server's counters. The ops surface exports them.
type Stats struct {
	Queries     atomic.Uint64 // parsed queries that reached the handler
	Malformed   atomic.Uint64 // packets that did not parse, or were responses: dropped
	Refused     atomic.Uint64 // sources outside the allow list
	RateLimited atomic.Uint64 // over the per-source limit (UDP dropped, TCP REFUSED)
	FormErr     atomic.Uint64 // not exactly one question, or not a QUERY opcode
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

	listen    []netip.AddrPort
	local     Local
	fastLocal FastLocal // local, when it has the wire fast path; else nil
	log       *zap.Logger
	timeout   time.Duration
	logRate   float64
	limiter   *limiter
	allow     atomic.Pointer[[]netip.Prefix]
	upstream  atomic.Pointer[exchangerBox]

	baseCtx context.Context
	cancel  context.CancelFunc

	mu      sync.Mutex
	started bool
	servers []*dns.Server // TCP
	udp     []*net.UDPConn
	addrs   []netip.AddrPort

	stopping atomic.Bool    // readers exit on their next read error
	udpWG    sync.WaitGroup // UDP readers
	slowWG   sync.WaitGroup // UDP queries handed to ServeDNS
}

// exchangerBox holds the upstream and, when it has one, its wire hit path, so
// the query path does not type-assert per packet.
type exchangerBox struct {
	ex   upstream.Exchanger
	fast FastCache
}

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
		s.timeout = DefaultForwardTimeout
	}
	if cfg.LogQueries < 0 || cfg.LogQueries > 1 {
		return nil, fmt.Errorf("new server: query log rate %v is not within 0..1", cfg.LogQueries)
	}
	if cfg.RateLimit.QPS < 0 || cfg.RateLimit.Burst < 0 {
		return nil, fmt.Errorf("new server: negative rate limit %v/%v", cfg.RateLimit.QPS, cfg.RateLimit.Burst)
	}
	if cfg.RateLimit.QPS > 0 {
		now := cfg.Now
		if now == nil {
			now = time.Now
		}
		s.limiter = newLimiter(cfg.RateLimit, now)
	}
	s.fastLocal, _ = cfg.Local.(FastLocal)
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

// SetUpstream replaces the upstream Exchanger (SIGHUP reload).
func (s *Server) SetUpstream(ex upstream.Exchanger) {
	fast, _ := ex.(FastCache)
	s.upstream.Store(&exchangerBox{ex: ex, fast: fast})
}

// Start binds every listen address on UDP and TCP and starts serving. On error
// nothing stays bound.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("start server: already started")
	}
	var (
		pcs []net.PacketConn
		lns []net.Listener
	)
	closeAll := func() {
		for _, pc := range pcs {
			pc.Close()
		}
		for _, ln := range lns {
			ln.Close()
		}
	}
	var addrs []netip.AddrPort
	for _, ap := range s.listen {
		pc, ln, bound, err := bind(ap)
		if err != nil {
			closeAll()
			return err
		}
		pcs, lns, addrs = append(pcs, pc), append(lns, ln), append(addrs, bound)
	}

	var started sync.WaitGroup
	for i := range pcs {
		conn := pcs[i].(*net.UDPConn)
		s.udp = append(s.udp, conn)
		for range udpReaders {
			s.udpWG.Add(1)
			go s.serveUDPBatch(conn)
		}
		srv := &dns.Server{Listener: lns[i], Net: "tcp", Handler: s,
			MsgAcceptFunc: s.accept, MsgInvalidFunc: s.invalid}
		// miekg answers packets it cannot parse with FORMERR through this
		// writer; we drop them instead. The handler writes with
		// ResponseWriter.Write, which bypasses it.
		srv.DecorateWriter = func(dns.Writer) dns.Writer { return discard{} }
		started.Add(1)
		// Done once: when serving starts, or when it fails before that.
		ready := sync.OnceFunc(started.Done)
		srv.NotifyStartedFunc = ready
		s.servers = append(s.servers, srv)
		go func() {
			err := srv.ActivateAndServe()
			ready()
			if err != nil {
				s.log.Error("dns listener stopped", zap.String("net", srv.Net), zap.Error(err))
			}
		}()
	}
	started.Wait()
	s.addrs = addrs
	s.started = true
	s.log.Info("dns server listening", zap.Stringers("addrs", addrs))
	return nil
}

// bind opens UDP then TCP on the same address. With port 0, TCP takes the
// port UDP got, retrying when that port is taken on TCP.
func bind(ap netip.AddrPort) (net.PacketConn, net.Listener, netip.AddrPort, error) {
	for try := 0; ; try++ {
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return nil, nil, netip.AddrPort{}, bindError(err)
		}
		bound := netip.AddrPortFrom(ap.Addr(), pc.LocalAddr().(*net.UDPAddr).AddrPort().Port())
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(bound))
		if err != nil {
			pc.Close()
			if ap.Port() == 0 && try < bindRetries && errors.Is(err, syscall.EADDRINUSE) {
				continue
			}
			return nil, nil, netip.AddrPort{}, bindError(err)
		}
		return pc, ln, bound, nil
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
	servers, udp := s.servers, s.udp
	s.servers, s.udp, s.started = nil, nil, false
	s.mu.Unlock()
	defer s.cancel()

	errs := make([]error, len(servers)+1)
	var wg sync.WaitGroup
	for i, srv := range servers {
		wg.Go(func() { errs[i] = srv.ShutdownContext(ctx) })
	}
	// Stop reading but keep the sockets open until the queries in flight
	// have written their answers.
	s.stopping.Store(true)
	for _, c := range udp {
		c.SetReadDeadline(time.Now())
	}
	s.udpWG.Wait()
	drained := make(chan struct{})
	go func() {
		s.slowWG.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
		errs[len(servers)] = fmt.Errorf("udp queries in flight: %w", ctx.Err())
	}
	for _, c := range udp {
		c.Close()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("shut down dns server: %w", err)
	}
	return nil
}

// accept lets every query through to the handler, so the allow list is checked
// before any reply; responses sent to us are dropped.
func (s *Server) accept(dh dns.Header) dns.MsgAcceptAction {
	const qr = 1 << 15
	if dh.Bits&qr != 0 {
		s.Stats.Malformed.Add(1)
		return dns.MsgIgnore
	}
	return dns.MsgAccept
}

func (s *Server) invalid([]byte, error) { s.Stats.Malformed.Add(1) }

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

// ServeDNS handles one query. Order: allow list, rate limit, shape checks,
// local table, upstream.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) { s.serve(w, req, true) }

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg, rateLimit bool) {
	start := time.Now()
	s.Stats.Queries.Add(1)
	src, tcp := remote(w)
	var qtype uint16
	if len(req.Question) > 0 {
		qtype = req.Question[0].Qtype
	}
	logIt := false // set once the query is known to be well-formed
	reply := func(resp *dns.Msg, from source, size int) {
		// Counted and logged before the write, so a client that has its
		// answer sees it counted.
		s.metrics.observe(qtype, resp.Rcode, from, start)
		if logIt {
			s.logQuery(src, tcp, req.Question[0], resp.Rcode, sourceNames[from], start)
		}
		s.write(w, resp, tcp, size)
	}
	defer func() {
		if r := recover(); r != nil {
			s.Stats.ServFail.Add(1)
			s.log.Error("query handler panicked", zap.Any("panic", r), zap.Stringer("src", src))
			reply(rcode(req, dns.RcodeServerFailure), srcServer, dns.MinMsgSize)
		}
	}()

	if !s.allowed(src) {
		s.Stats.Refused.Add(1)
		reply(rcode(req, dns.RcodeRefused), srcServer, dns.MinMsgSize)
		return
	}
	if rateLimit && s.limiter != nil && !s.limiter.allow(src) {
		s.Stats.RateLimited.Add(1)
		if tcp {
			reply(rcode(req, dns.RcodeRefused), srcServer, dns.MinMsgSize)
		}
		return
	}
	if req.Opcode != dns.OpcodeQuery {
		s.Stats.FormErr.Add(1)
		reply(rcode(req, dns.RcodeNotImplemented), srcServer, dns.MinMsgSize)
		return
	}
	if len(req.Question) != 1 {
		s.Stats.FormErr.Add(1)
		reply(rcode(req, dns.RcodeFormatError), srcServer, dns.MinMsgSize)
		return
	}

	size := dns.MaxMsgSize
	opt := req.IsEdns0()
	if !tcp {
		size = dns.MinMsgSize
		if opt != nil {
			size = int(dnswire.ReplySize(opt.UDPSize()))
		}
	}

	logIt = s.logRate > 0 && rand.Float64() < s.logRate

	if s.local != nil {
		if resp, ok := s.local.Resolve(req, src, size); ok {
			s.Stats.Local.Add(1)
			reply(resp, srcLocal, size)
			return
		}
	}

	resp, from := s.forward(req, tcp)
	s.Stats.Forwarded.Add(1)
	if opt == nil {
		upstream.StripOPT(resp) // RFC 6891 7: no OPT in a reply to a query without one
	}
	reply(resp, from, size)
}

// forward asks the upstream and maps its errors to a reply.
func (s *Server) forward(req *dns.Msg, tcp bool) (*dns.Msg, source) {
	ex := s.upstream.Load().ex
	if ex == nil {
		s.Stats.ServFail.Add(1)
		return rcode(req, dns.RcodeServerFailure), srcServer
	}
	ctx, cancel := context.WithTimeout(s.baseCtx, s.timeout)
	defer cancel()
	if tcp {
		ctx = upstream.WithTCP(ctx)
	}
	var origin upstream.Origin
	ctx = upstream.WithOrigin(ctx, &origin)
	id, q := req.Id, req.Question[0]
	resp, err := ex.Exchange(ctx, req)
	switch {
	case errors.Is(err, upstream.ErrOverloaded):
		s.Stats.Overloaded.Add(1)
		return rcode(req, dns.RcodeRefused), srcServer
	case err != nil || resp == nil:
		s.Stats.ServFail.Add(1)
		s.log.Debug("forward failed", zap.String("name", q.Name),
			zap.String("type", dns.TypeToString[q.Qtype]), zap.Error(err))
		return rcode(req, dns.RcodeServerFailure), srcServer
	}
	// Exchangers from upstream restore the client's ID and question case; an
	// Exchanger from elsewhere may not.
	resp.Id = id
	if len(resp.Question) == 1 {
		resp.Question[0].Name = q.Name
	}
	switch origin {
	case upstream.OriginCache:
		return resp, srcCache
	case upstream.OriginStale:
		return resp, srcStale
	}
	return resp, srcUpstream
}

// write packs resp and sends it, truncating UDP replies larger than size.
// It uses ResponseWriter.Write, which bypasses the discard writer.
func (s *Server) write(w dns.ResponseWriter, resp *dns.Msg, tcp bool, size int) {
	b, err := resp.Pack()
	if err == nil && !tcp && len(b) > size {
		resp.Truncate(size)
		b, err = resp.Pack()
	}
	if err != nil {
		s.log.Warn("pack reply", zap.Error(err))
		return
	}
	if _, err := w.Write(b); err != nil {
		s.log.Debug("write reply", zap.Error(err))
	}
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

func (s *Server) logQuery(src netip.Addr, tcp bool, q dns.Question, rc int, via string, start time.Time) {
	proto := "udp"
	if tcp {
		proto = "tcp"
	}
	s.log.Info("query",
		zap.Stringer("src", src),
		zap.String("proto", proto),
		zap.String("name", q.Name),
		zap.String("type", typeString(q.Qtype)),
		zap.String("rcode", dns.RcodeToString[rc]),
		zap.String("via", via),
		zap.Duration("took", time.Since(start)))
}

func typeString(t uint16) string {
	if s, ok := dns.TypeToString[t]; ok {
		return s
	}
	return "TYPE" + strconv.Itoa(int(t))
}

// remote returns the client address (IPv4-mapped addresses unmapped) and
// whether it came over TCP.
func remote(w dns.ResponseWriter) (netip.Addr, bool) {
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap(), false
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

// rcode builds an empty reply with the given rcode, echoing EDNS if asked.
func rcode(req *dns.Msg, rc int) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Rcode = rc
	m.RecursionAvailable = true
	if len(req.Question) != 1 {
		m.Question = nil
	}
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(dnswire.EDNSSize, opt.Do())
	}
	return m
}
