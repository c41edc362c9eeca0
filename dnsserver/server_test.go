package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sidedns/sidedns/dnswire"
	"github.com/sidedns/sidedns/upstream"
)

// fakeLocal answers A queries for names in its table.
type fakeLocal struct {
	names map[string]netip.Addr
	local func(netip.Addr) bool
	calls atomic.Int64
}

func (f *fakeLocal) Answer(dst []byte, q *dnswire.Query, _ netip.Addr) ([]byte, bool) {
	f.calls.Add(1)
	ip, ok := f.names[string(q.Name())+"."]
	if !ok {
		return dst, false
	}
	a := ip.As4()
	dst = dnswire.AppendHeader(dst, q, dns.RcodeSuccess, 1, 0, 0)
	dst = dnswire.AppendRecordHeader(dst, dns.TypeA, 5, 4)
	return append(dst, a[:]...), true
}

func (f *fakeLocal) IsLocalSource(a netip.Addr) bool { return f.local != nil && f.local(a) }

// fakeUpstream is an upstream.Exchanger driven by a function.
type fakeUpstream struct {
	fn    func(ctx context.Context, m *dns.Msg) (*dns.Msg, error)
	calls atomic.Int64
	tcp   atomic.Bool
}

func (f *fakeUpstream) Exchange(ctx context.Context, m *dns.Msg, tcp bool) (*dns.Msg, error) {
	f.calls.Add(1)
	f.tcp.Store(tcp)
	return f.fn(ctx, m)
}

// through puts the real cache, storing nothing, in front of ex: every query
// reaches ex, as a server without a cache would send it.
func through(tb testing.TB, ex upstream.Exchanger) Upstream {
	return cached(tb, ex, -1)
}

// cached puts a real cache of size entries in front of ex.
func cached(tb testing.TB, ex upstream.Exchanger, size int) *upstream.Cache {
	tb.Helper()
	c, err := upstream.NewCache(ex, upstream.CacheConfig{Size: size})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// answerA returns an upstream that answers n A records, with its own ID,
// AA set and RA clear, as an authoritative server would.
func answerA(n int) *fakeUpstream {
	return &fakeUpstream{fn: func(_ context.Context, m *dns.Msg) (*dns.Msg, error) {
		r := new(dns.Msg).SetReply(m)
		r.Id = m.Id + 1
		r.Authoritative = true
		for i := range n {
			r.Answer = append(r.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: m.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   net.IPv4(192, 0, 2, byte(i)),
			})
		}
		r.SetEdns0(1232, false)
		return r, nil
	}}
}

func failing(err error) *fakeUpstream {
	return &fakeUpstream{fn: func(context.Context, *dns.Msg) (*dns.Msg, error) { return nil, err }}
}

func startServer(tb testing.TB, cfg Config) (*Server, string) {
	tb.Helper()
	if cfg.Listen == nil {
		cfg.Listen = []string{"127.0.0.1:0"}
	}
	if cfg.Local == nil {
		cfg.Local = &fakeLocal{names: map[string]netip.Addr{"web.docker.": netip.MustParseAddr("172.18.0.2")}}
	}
	s, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	if err := s.Start(); err != nil {
		tb.Fatalf("Start: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s, s.Addrs()[0].String()
}

func query(tb testing.TB, addr, network, name string, edns uint16) (*dns.Msg, error) {
	tb.Helper()
	m := new(dns.Msg).SetQuestion(name, dns.TypeA)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	c := &dns.Client{Net: network, Timeout: 2 * time.Second, UDPSize: 65535}
	r, _, err := c.Exchange(m, addr)
	if err == nil && r.Id != m.Id {
		tb.Errorf("reply ID %d, want %d", r.Id, m.Id)
	}
	return r, err
}

func mustQuery(tb testing.TB, addr, network, name string, edns uint16) *dns.Msg {
	tb.Helper()
	r, err := query(tb, addr, network, name, edns)
	if err != nil {
		tb.Fatalf("query %s over %s: %v", name, network, err)
	}
	return r
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLocalAnswer(t *testing.T) {
	up := answerA(1)
	s, addr := startServer(t, Config{Upstream: through(t, up)})
	for _, network := range []string{"udp", "tcp"} {
		r := mustQuery(t, addr, network, "web.docker.", 0)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "172.18.0.2" {
			t.Fatalf("%s: got %v, want web.docker. A 172.18.0.2", network, r)
		}
	}
	if up.calls.Load() != 0 {
		t.Errorf("upstream called %d times for a local name", up.calls.Load())
	}
	if got := s.Stats.Local.Load(); got != 2 {
		t.Errorf("Stats.Local = %d, want 2", got)
	}
}

func TestForward(t *testing.T) {
	up := answerA(2)
	s, addr := startServer(t, Config{Upstream: through(t, up)})
	r := mustQuery(t, addr, "udp", "Example.Test.", 0)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
		t.Fatalf("got %v, want 2 answers", r)
	}
	if r.Question[0].Name != "Example.Test." {
		t.Errorf("question %q, want the client's case kept", r.Question[0].Name)
	}
	if r.IsEdns0() != nil {
		t.Error("reply to a query without EDNS carries an OPT record")
	}
	if r := mustQuery(t, addr, "udp", "example.test.", 1232); r.IsEdns0() == nil {
		t.Error("reply to an EDNS query lost its OPT record")
	}
	if got := s.Stats.Forwarded.Load(); got != 2 {
		t.Errorf("Stats.Forwarded = %d, want 2", got)
	}
}

func TestForwardErrors(t *testing.T) {
	tests := []struct {
		name    string
		up      *fakeUpstream
		want    int
		counter func(*Stats) *atomic.Uint64
	}{
		{"overloaded", failing(upstream.ErrOverloaded), dns.RcodeRefused, func(s *Stats) *atomic.Uint64 { return &s.Overloaded }},
		{"wrapped overload", failing(fmt.Errorf("exchange: %w", upstream.ErrOverloaded)), dns.RcodeRefused, func(s *Stats) *atomic.Uint64 { return &s.Overloaded }},
		{"all failed", failing(upstream.ErrAllFailed), dns.RcodeServerFailure, func(s *Stats) *atomic.Uint64 { return &s.ServFail }},
		{"other error", failing(errors.New("boom")), dns.RcodeServerFailure, func(s *Stats) *atomic.Uint64 { return &s.ServFail }},
		{"no upstream", nil, dns.RcodeServerFailure, func(s *Stats) *atomic.Uint64 { return &s.ServFail }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{}
			if tt.up != nil {
				cfg.Upstream = through(t, tt.up)
			}
			s, addr := startServer(t, cfg)
			for _, network := range []string{"udp", "tcp"} {
				r := mustQuery(t, addr, network, "example.test.", 0)
				if r.Rcode != tt.want {
					t.Errorf("%s: rcode %s, want %s", network, dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.want])
				}
				if len(r.Question) != 1 || r.Question[0].Name != "example.test." {
					t.Errorf("%s: question %v, want it echoed", network, r.Question)
				}
			}
			if got := tt.counter(&s.Stats).Load(); got != 2 {
				t.Errorf("counter = %d, want 2", got)
			}
		})
	}
}

func TestTCPClientForwardsOverTCP(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			up := answerA(1)
			_, addr := startServer(t, Config{Upstream: through(t, up)})
			mustQuery(t, addr, network, "example.test.", 0)
			if got, want := up.tcp.Load(), network == "tcp"; got != want {
				t.Errorf("forwarded over TCP: %v, want %v", got, want)
			}
		})
	}
}

// Forwarded replies are cut to the client's UDP size, at most
// dnswire.MaxUDPSize; TCP gets everything.
func TestForwardedReplyTruncation(t *testing.T) {
	tests := []struct {
		network string
		edns    uint16
		max     int
		wantTC  bool
	}{
		{"udp", 0, 512, true},
		{"udp", 1232, 1232, true},
		{"udp", 4096, 1232, true}, // capped: larger UDP replies fragment and amplify
		{"tcp", 0, 65535, false},
	}
	_, addr := startServer(t, Config{Upstream: through(t, answerA(100))}) // ~1.6 KB uncompressed
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/edns%d", tt.network, tt.edns), func(t *testing.T) {
			r := mustQuery(t, addr, tt.network, "big.example.test.", tt.edns)
			if r.Truncated != tt.wantTC {
				t.Errorf("TC = %v, want %v", r.Truncated, tt.wantTC)
			}
			r.Compress = true // as the server sent it
			b, _ := r.Pack()
			if len(b) > tt.max {
				t.Errorf("reply is %d bytes, client allows %d", len(b), tt.max)
			}
			if !tt.wantTC && len(r.Answer) != 100 {
				t.Errorf("got %d answers, want all 100", len(r.Answer))
			}
		})
	}
}

func TestAllowList(t *testing.T) {
	local := &fakeLocal{names: map[string]netip.Addr{"web.docker.": netip.MustParseAddr("172.18.0.2")}}
	up := answerA(1)
	s, addr := startServer(t, Config{
		Local:    local,
		Upstream: through(t, up),
		Allow:    []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
	})
	for _, name := range []string{"web.docker.", "example.test."} {
		for _, network := range []string{"udp", "tcp"} {
			r := mustQuery(t, addr, network, name, 0)
			if r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
				t.Errorf("%s over %s from 127.0.0.1: got %s with %d answers, want REFUSED",
					name, network, dns.RcodeToString[r.Rcode], len(r.Answer))
			}
		}
	}
	if local.calls.Load() != 0 || up.calls.Load() != 0 {
		t.Errorf("disallowed queries reached the table (%d) or the upstream (%d)", local.calls.Load(), up.calls.Load())
	}
	if got := s.Stats.Refused.Load(); got != 4 {
		t.Errorf("Stats.Refused = %d, want 4", got)
	}

	// A reload that allows loopback takes effect at once.
	s.SetAllow([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	if r := mustQuery(t, addr, "udp", "web.docker.", 0); r.Rcode != dns.RcodeSuccess {
		t.Errorf("after SetAllow: rcode %s, want NOERROR", dns.RcodeToString[r.Rcode])
	}
}

func TestDefaultAllow(t *testing.T) {
	dockerNet := netip.MustParsePrefix("172.18.0.0/16")
	local := &fakeLocal{local: dockerNet.Contains}
	tests := []struct {
		allow []netip.Prefix
		src   string
		want  bool
	}{
		{nil, "127.0.0.1", true},
		{nil, "::1", true},
		{nil, "172.18.0.9", true},
		{nil, "172.19.0.9", false},
		{nil, "192.0.2.1", false},
		{[]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "10.1.2.3", true},
		{[]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "127.0.0.1", false},
		{[]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "172.18.0.9", false},
	}
	for _, tt := range tests {
		s, err := New(Config{Listen: []string{"127.0.0.1:0"}, Local: local, Allow: tt.allow})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.allowed(netip.MustParseAddr(tt.src)); got != tt.want {
			t.Errorf("allow %v, src %s: allowed = %v, want %v", tt.allow, tt.src, got, tt.want)
		}
	}
}

func TestRateLimit(t *testing.T) {
	now := time.Unix(1e9, 0)
	s, addr := startServer(t, Config{
		Upstream:  through(t, answerA(1)),
		RateLimit: RateLimit{QPS: 1, Burst: 2},
		Now:       func() time.Time { return now }, // frozen: no refill during the test
	})
	for i := range 2 {
		if r := mustQuery(t, addr, "udp", "web.docker.", 0); r.Rcode != dns.RcodeSuccess {
			t.Fatalf("query %d within the burst: rcode %s", i, dns.RcodeToString[r.Rcode])
		}
	}
	c := &dns.Client{Net: "udp", Timeout: 300 * time.Millisecond}
	if r, _, err := c.Exchange(new(dns.Msg).SetQuestion("web.docker.", dns.TypeA), addr); err == nil {
		t.Fatalf("query past the limit over UDP was answered: %v", r)
	}
	if r := mustQuery(t, addr, "tcp", "web.docker.", 0); r.Rcode != dns.RcodeRefused {
		t.Errorf("query past the limit over TCP: rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	if got := s.Stats.RateLimited.Load(); got != 2 {
		t.Errorf("Stats.RateLimited = %d, want 2", got)
	}
}

func TestQuestionCount(t *testing.T) {
	s, addr := startServer(t, Config{Upstream: through(t, answerA(1))})
	for _, n := range []int{0, 2} {
		m := new(dns.Msg)
		m.Id = dns.Id()
		for i := range n {
			m.Question = append(m.Question, dns.Question{Name: fmt.Sprintf("q%d.test.", i), Qtype: dns.TypeA, Qclass: dns.ClassINET})
		}
		r, err := dns.Exchange(m, addr)
		if err != nil {
			t.Fatalf("%d questions: %v", n, err)
		}
		if r.Rcode != dns.RcodeFormatError {
			t.Errorf("%d questions: rcode %s, want FORMERR", n, dns.RcodeToString[r.Rcode])
		}
	}
	if got := s.Stats.FormErr.Load(); got != 2 {
		t.Errorf("Stats.FormErr = %d, want 2", got)
	}
}

func TestMalformedDropped(t *testing.T) {
	s, addr := startServer(t, Config{Upstream: through(t, answerA(1))})
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	packets := [][]byte{
		{0x12}, // shorter than a header
		{0x12, 0x34, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0}, // a response, not a query
	}
	for _, p := range packets {
		if _, err := conn.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "malformed packets counted", func() bool { return s.Stats.Malformed.Load() == uint64(len(packets)) })
	conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 512)); err == nil {
		t.Errorf("got a %d-byte reply to a malformed packet, want none", n)
	}
	// The server still answers.
	mustQuery(t, addr, "udp", "web.docker.", 0)
}

func TestBindFailure(t *testing.T) {
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.LocalAddr().String()

	s, err := New(Config{Listen: []string{"127.0.0.1:0", addr}})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Start()
	if err == nil {
		s.Shutdown(context.Background())
		t.Fatal("Start succeeded on a busy port")
	}
	want := "listen udp " + addr + ": bind: address already in use (use --listen to pick another address)"
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if len(s.Addrs()) != 0 {
		t.Errorf("Addrs() = %v after a failed Start", s.Addrs())
	}
}

func TestShutdownDrains(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	up := answerA(1)
	inner := up.fn
	up.fn = func(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
		close(entered)
		<-release
		return inner(ctx, m)
	}
	s, addr := startServer(t, Config{Upstream: through(t, up)})

	type result struct {
		r   *dns.Msg
		err error
	}
	answered := make(chan result, 1)
	go func() {
		r, err := query(t, addr, "udp", "slow.test.", 0)
		answered <- result{r, err}
	}()
	<-entered

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) before the in-flight query was answered", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	res := <-answered
	if res.err != nil || res.r.Rcode != dns.RcodeSuccess {
		t.Fatalf("in-flight query: %v, %v; want an answer", res.r, res.err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := query(t, addr, "tcp", "web.docker.", 0); err == nil {
		t.Error("server still answers TCP after Shutdown")
	}
}

func TestShutdownDeadlineCancelsForwards(t *testing.T) {
	cancelled := make(chan struct{})
	up := &fakeUpstream{fn: func(ctx context.Context, _ *dns.Msg) (*dns.Msg, error) {
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	}}
	s, addr := startServer(t, Config{Upstream: through(t, up), ForwardTimeout: time.Minute})
	go query(t, addr, "udp", "stuck.test.", 0)
	waitFor(t, "forward started", func() bool { return up.calls.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want a deadline error", err)
	}
	<-cancelled
}

func TestSetUpstream(t *testing.T) {
	s, addr := startServer(t, Config{Upstream: through(t, failing(upstream.ErrAllFailed))})
	s.SetUpstream(through(t, answerA(3)))
	if r := mustQuery(t, addr, "udp", "example.test.", 0); len(r.Answer) != 3 {
		t.Errorf("after SetUpstream: %d answers, want 3 from the new upstream", len(r.Answer))
	}
}

func TestQueryLog(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	_, addr := startServer(t, Config{Upstream: through(t, answerA(1)), Logger: zap.New(core), LogQueries: 1})
	mustQuery(t, addr, "udp", "web.docker.", 0)
	mustQuery(t, addr, "tcp", "example.test.", 0)
	q := logs.FilterMessage("query").All()
	if len(q) != 2 {
		t.Fatalf("got %d query log entries, want 2", len(q))
	}
	for i, want := range []map[string]any{
		{"name": "web.docker.", "via": "local", "proto": "udp", "type": "A", "rcode": "NOERROR"},
		{"name": "example.test.", "via": "upstream", "proto": "tcp"},
	} {
		got := q[i].ContextMap()
		for k, v := range want {
			if got[k] != v {
				t.Errorf("entry %d: %s = %v, want %v", i, k, got[k], v)
			}
		}
	}
}

type panicLocal struct{ fakeLocal }

func (*panicLocal) Answer([]byte, *dnswire.Query, netip.Addr) ([]byte, bool) { panic("bug") }

func TestHandlerPanicIsServFail(t *testing.T) {
	s, addr := startServer(t, Config{Local: &panicLocal{}, Upstream: through(t, answerA(1))})
	if r := mustQuery(t, addr, "udp", "web.docker.", 0); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if s.Stats.ServFail.Load() != 1 {
		t.Errorf("Stats.ServFail = %d, want 1", s.Stats.ServFail.Load())
	}
}

func TestListenIPv6(t *testing.T) {
	ln, err := net.ListenPacket("udp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback here")
	}
	ln.Close()
	_, addr := startServer(t, Config{Listen: []string{"[::1]:0"}, Upstream: through(t, answerA(1))})
	if r := mustQuery(t, addr, "udp", "web.docker.", 0); r.Rcode != dns.RcodeSuccess {
		t.Errorf("rcode %s from ::1 with the default allow list", dns.RcodeToString[r.Rcode])
	}
}

func TestParseListenAddr(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{"127.0.0.1:53", "127.0.0.1:53", ""},
		{"127.0.0.1", "127.0.0.1:53", ""},
		{"172.17.0.1:5353", "172.17.0.1:5353", ""},
		{"[::1]:53", "[::1]:53", ""},
		{"::1", "[::1]:53", ""},
		{"[::1]", "[::1]:53", ""},
		{"0.0.0.0:0", "0.0.0.0:0", ""},
		{"localhost:53", "", "want ip[:port]"},
		{"127.0.0.1:99999", "", "want ip[:port]"},
		{"", "", "want ip[:port]"},
	}
	for _, tt := range tests {
		got, err := ParseListenAddr(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseListenAddr(%q) error = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("ParseListenAddr(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no listen":      {},
		"bad listen":     {Listen: []string{"nope"}},
		"bad log rate":   {Listen: []string{"127.0.0.1:0"}, LogQueries: 2},
		"negative limit": {Listen: []string{"127.0.0.1:0"}, RateLimit: RateLimit{QPS: -1}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}
