package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/sidedns/sidedns/dnswire"
)

// Defaults for Config.
const (
	// DefaultTimeout is per try: long enough for a recursive resolver to
	// walk a cold chain, short enough that failover beats a client's retry
	// (glibc waits 5 s).
	DefaultTimeout = 2 * time.Second
	// DefaultMaxConcurrent bounds outstanding upstream queries, so a flood
	// of unique names cannot exhaust sockets and memory.
	DefaultMaxConcurrent = 1024
	// DefaultProbeInterval is the first probe delay after a failure; it
	// doubles up to DefaultProbeMaxInterval. A dead upstream costs one
	// cheap query every 2 s; a blip is over in a quarter second.
	DefaultProbeInterval    = 250 * time.Millisecond
	DefaultProbeMaxInterval = 2 * time.Second
	// DefaultIdleTimeout is how long a pooled connection may sit unused.
	// It stays under miekg/dns's 8 s server idle timeout, so we rarely
	// write to a conn the server has already closed.
	DefaultIdleTimeout = 5 * time.Second
)

// Config configures a Forwarder. Zero values take the defaults.
type Config struct {
	Servers          []Spec        // tried in this order
	Timeout          time.Duration // per try; DefaultTimeout
	MaxConcurrent    int           // outstanding queries; DefaultMaxConcurrent
	TLSConfig        *tls.Config   // base for tls:// servers (e.g. RootCAs); ServerName is set per server
	Logger           *zap.Logger   // nil means no logs
	ProbeInterval    time.Duration // DefaultProbeInterval
	ProbeMaxInterval time.Duration // DefaultProbeMaxInterval
	IdleTimeout      time.Duration // DefaultIdleTimeout
}

// Forwarder sends queries to the upstream servers. It decides the order and
// the failover; each server keeps its own sockets and health.
//
// Order: servers that are up, in configured order. A timeout, a network
// error, SERVFAIL or REFUSED moves on to the next. Only timeouts and network
// errors mark a server down (a SERVFAIL is often about one broken zone, not
// the server); a down server is probed in the background until it answers.
// When every server is down, the least failed one is tried anyway, because
// the health view may be wrong. When all tries fail, the error wraps
// ErrAllFailed.
type Forwarder struct {
	servers atomic.Pointer[[]*server]
	opts    serverOpts
	timeout time.Duration
	max     int64

	inflight   atomic.Int64
	overloaded atomic.Uint64

	mu     sync.Mutex // serialises SetServers and Close
	closed bool
}

var _ Exchanger = (*Forwarder)(nil)

// NewForwarder checks cfg and returns a Forwarder. It opens no sockets.
func NewForwarder(cfg Config) (*Forwarder, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("new forwarder: no upstream servers")
	}
	if err := validSpecs(cfg.Servers); err != nil {
		return nil, fmt.Errorf("new forwarder: %w", err)
	}
	f := &Forwarder{
		timeout: orDefault(cfg.Timeout, DefaultTimeout),
		max:     int64(cfg.MaxConcurrent),
		opts: serverOpts{
			idleTimeout: orDefault(cfg.IdleTimeout, DefaultIdleTimeout),
			probeMin:    orDefault(cfg.ProbeInterval, DefaultProbeInterval),
			probeMax:    orDefault(cfg.ProbeMaxInterval, DefaultProbeMaxInterval),
			tls:         cfg.TLSConfig,
			log:         cfg.Logger,
		},
	}
	if f.max <= 0 {
		f.max = DefaultMaxConcurrent
	}
	f.opts.probeMax = max(f.opts.probeMax, f.opts.probeMin)
	f.opts.probeTO = f.timeout
	if f.opts.log == nil {
		f.opts.log = zap.NewNop()
	}
	f.servers.Store(f.build(cfg.Servers, nil))
	return f, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func validSpecs(specs []Spec) error {
	for _, s := range specs {
		switch s.Proto {
		case ProtoUDP, ProtoTCP, ProtoTLS:
		default:
			return fmt.Errorf("upstream %s: unknown proto %q", s, s.Proto)
		}
		if s.Addr == "" {
			return fmt.Errorf("upstream %s: empty address", s)
		}
	}
	return nil
}

// build makes the server list for specs, reusing the servers of old that are
// still wanted (they keep their health, sockets and counters). Duplicates are
// dropped.
func (f *Forwarder) build(specs []Spec, old []*server) *[]*server {
	byspec := make(map[Spec]*server, len(old))
	for _, s := range old {
		byspec[s.spec] = s
	}
	seen := make(map[Spec]bool, len(specs))
	list := make([]*server, 0, len(specs))
	for _, sp := range specs {
		if seen[sp] {
			continue
		}
		seen[sp] = true
		s := byspec[sp]
		if s == nil {
			s = newServer(sp, &f.opts)
		}
		list = append(list, s)
	}
	return &list
}

// SetServers replaces the upstream list, for a reload. Queries in flight
// finish on the old list; servers no longer listed are closed, servers still
// listed keep their health, sockets and counters. An empty list or an
// invalid spec leaves the list unchanged.
func (f *Forwarder) SetServers(specs []Spec) error {
	if len(specs) == 0 {
		return errors.New("set upstream servers: empty list")
	}
	if err := validSpecs(specs); err != nil {
		return fmt.Errorf("set upstream servers: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("set upstream servers: %w", net.ErrClosed)
	}
	old := *f.servers.Load()
	list := f.build(specs, old)
	f.servers.Store(list)
	closeUnused(old, *list)
	f.opts.log.Info("upstream servers set", zap.Stringers("upstreams", specsOf(*list)))
	return nil
}

func closeUnused(old, kept []*server) {
	for _, s := range old {
		used := false
		for _, k := range kept {
			used = used || k == s
		}
		if !used {
			s.close()
		}
	}
}

func specsOf(list []*server) []Spec {
	specs := make([]Spec, len(list))
	for i, s := range list {
		specs[i] = s.spec
	}
	return specs
}

// Close stops the probes and closes pooled connections. Later queries fail.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	old := *f.servers.Load()
	f.servers.Store(&[]*server{})
	closeUnused(old, nil)
	return nil
}

// Exchange sends m, a query built by upstreamQuery, and returns the first
// useful reply exactly as the upstream sent it (checked against m by
// matchReply; its ID and OPT are the upstream's). Each try gets a fresh
// random ID; m is not modified. It forwards over TCP when tcp is set (the
// client came over TCP) or the server is tcp:// or tls://. Errors:
// ErrOverloaded past MaxConcurrent; ErrAllFailed when no upstream answered
// usefully; ctx's error when the caller gave up.
func (f *Forwarder) Exchange(ctx context.Context, m *dns.Msg, tcp bool) (*dns.Msg, error) {
	if len(m.Question) != 1 {
		return nil, fmt.Errorf("forward query: %d questions, want 1", len(m.Question))
	}
	if f.inflight.Add(1) > f.max {
		f.inflight.Add(-1)
		f.overloaded.Add(1)
		return nil, ErrOverloaded
	}
	defer f.inflight.Add(-1)

	list := *f.servers.Load()
	if len(list) == 0 {
		return nil, fmt.Errorf("forward %s: %w (no upstream servers)", m.Question[0].Name, ErrAllFailed)
	}
	q := *m // shallow: each try writes its own ID into q, not into m

	var lastErr error
	for _, s := range candidates(list) {
		r, err := f.try(ctx, s, &q, tcp)
		if err == nil {
			return r, nil
		}
		if cerr := callerDone(ctx); cerr != nil {
			return nil, ctxErr(cerr, m)
		}
		lastErr = err
	}
	return nil, fmt.Errorf("forward %s: %w (last: %v)", m.Question[0].Name, ErrAllFailed, lastErr)
}

// callerDone reports whether the caller's ctx has ended. Its deadline counts
// as soon as it has passed: a socket deadline set to the same instant may
// fire before ctx's own timer does.
func callerDone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// ctxErr reports the caller's context ending. A deadline also counts as all
// failed: nothing answered in the time the caller had, and the cache may
// then serve stale.
func ctxErr(err error, m *dns.Msg) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("forward %s: %w: %w", m.Question[0].Name, ErrAllFailed, err)
	}
	return fmt.Errorf("forward %s: %w", m.Question[0].Name, err)
}

// try sends q to s once and classifies the outcome: a reply that should move
// on to the next server (SERVFAIL, REFUSED) is an error here.
func (f *Forwarder) try(ctx context.Context, s *server, q *dns.Msg, tcp bool) (*dns.Msg, error) {
	if err := callerDone(ctx); err != nil {
		return nil, err
	}
	start := time.Now()
	deadline := start.Add(f.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	q.Id = newID()
	s.queries.Add(1)
	r, err := s.exchange(ctx, q, deadline, tcp)
	if err != nil {
		if callerDone(ctx) != nil && time.Since(start) < f.timeout {
			return nil, err // the caller gave up first; not the server's fault
		}
		s.markFailed(err)
		f.opts.log.Debug("upstream failed", zap.Stringer("upstream", s.spec), zap.Error(err))
		return nil, fmt.Errorf("query %s: %w", s.spec, err)
	}
	lat := time.Since(start)
	s.answers.Add(1)
	s.latencySum.Add(int64(lat))
	s.lastLatency.Store(int64(lat))
	s.markUp()
	if r.Rcode == dns.RcodeServerFailure || r.Rcode == dns.RcodeRefused {
		s.failures.Add(1)
		return nil, fmt.Errorf("query %s: rcode %s", s.spec, dns.RcodeToString[r.Rcode])
	}
	return r, nil
}

// candidates are the servers to try, in order: the ones that are up, or, when
// all are down, the least failed one, since the health view may be stale.
func candidates(list []*server) []*server {
	up := make([]*server, 0, len(list))
	for _, s := range list {
		if !s.down() {
			up = append(up, s)
		}
	}
	if len(up) == 0 {
		up = append(up, leastFailed(list))
	}
	return up
}

func leastFailed(list []*server) *server {
	best := list[0]
	for _, s := range list[1:] {
		if s.fails.Load() < best.fails.Load() {
			best = s
		}
	}
	return best
}

// upstreamQuery is the query sidedns sends upstream for one question: RD,
// our EDNS0 (MaxUDPSize, no options) and the client's DO and CD bits. The
// rest of a client's query (its ID, EDNS options and cookies, a TSIG)
// belongs to the hop that ends at sidedns, so nothing else is copied.
func upstreamQuery(name string, qtype, qclass uint16, do, cd bool) *dns.Msg {
	m := &dns.Msg{Question: []dns.Question{{Name: name, Qtype: qtype, Qclass: qclass}}}
	m.RecursionDesired = true
	m.CheckingDisabled = cd
	m.SetEdns0(dnswire.MaxUDPSize, do)
	return m
}

// ServerStat is a snapshot of one upstream's counters, for metrics.
type ServerStat struct {
	Spec        Spec
	Up          bool
	Queries     uint64        // messages sent (tries), probes excluded
	Failures    uint64        // tries that timed out, failed on the network, or got SERVFAIL/REFUSED
	Answers     uint64        // replies received, any rcode
	LatencySum  time.Duration // over Answers; LatencySum/Answers is the mean
	LastLatency time.Duration
}

// ServerStats reports each current upstream, in configured order.
func (f *Forwarder) ServerStats() []ServerStat {
	list := *f.servers.Load()
	out := make([]ServerStat, len(list))
	for i, s := range list {
		out[i] = ServerStat{
			Spec:        s.spec,
			Up:          !s.down(),
			Queries:     s.queries.Load(),
			Failures:    s.failures.Load(),
			Answers:     s.answers.Load(),
			LatencySum:  time.Duration(s.latencySum.Load()),
			LastLatency: time.Duration(s.lastLatency.Load()),
		}
	}
	return out
}

// Overloaded counts queries refused with ErrOverloaded.
func (f *Forwarder) Overloaded() uint64 { return f.overloaded.Load() }

// Inflight is the number of queries being forwarded now.
func (f *Forwarder) Inflight() int { return int(f.inflight.Load()) }
