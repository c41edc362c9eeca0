package upstream_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap/zaptest"

	"github.com/sidedns/sidedns/dnswire"
	"github.com/sidedns/sidedns/upstream"
)

// cacheFakeUpstream is a counting Exchanger whose answers the test sets.
type cacheFakeUpstream struct {
	calls atomic.Int64

	mu      sync.Mutex
	handler func(q *dns.Msg) (*dns.Msg, error)
	gate    chan struct{} // when set, Exchange waits for it to close
	last    *dns.Msg
}

func (f *cacheFakeUpstream) Exchange(ctx context.Context, q *dns.Msg, _ bool) (*dns.Msg, error) {
	f.calls.Add(1)
	f.mu.Lock()
	h, gate := f.handler, f.gate
	f.last = q.Copy()
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return h(q)
}

func (f *cacheFakeUpstream) set(h func(q *dns.Msg) (*dns.Msg, error)) {
	f.mu.Lock()
	f.handler = h
	f.mu.Unlock()
}

func (f *cacheFakeUpstream) lastQuery() *dns.Msg {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// cacheAnswerA answers every query with one A record (or AAAA for AAAA).
func cacheAnswerA(ttl uint32) func(q *dns.Msg) (*dns.Msg, error) {
	return func(q *dns.Msg) (*dns.Msg, error) {
		r := new(dns.Msg)
		r.SetReply(q)
		qq := q.Question[0]
		hdr := dns.RR_Header{Name: qq.Name, Rrtype: qq.Qtype, Class: dns.ClassINET, Ttl: ttl}
		switch qq.Qtype {
		case dns.TypeAAAA:
			r.Answer = append(r.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.ParseIP("2001:db8::1")})
		default:
			hdr.Rrtype = dns.TypeA
			r.Answer = append(r.Answer, &dns.A{Hdr: hdr, A: net.IPv4(192, 0, 2, 1).To4()})
		}
		if o := q.IsEdns0(); o != nil {
			r.SetEdns0(1232, o.Do())
		}
		return r, nil
	}
}

// cacheAnswerNeg answers rcode (NXDOMAIN or NOERROR/NODATA) with an SOA
// whose TTL and MINIMUM are given; soaTTL 0 means no SOA at all.
func cacheAnswerNeg(rcode int, soaTTL, minimum uint32) func(q *dns.Msg) (*dns.Msg, error) {
	return func(q *dns.Msg) (*dns.Msg, error) {
		r := new(dns.Msg)
		r.SetRcode(q, rcode)
		if soaTTL > 0 {
			r.Ns = append(r.Ns, &dns.SOA{
				Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: soaTTL},
				Ns:  "ns.example.", Mbox: "hostmaster.example.", Serial: 1, Refresh: 3600, Retry: 600,
				Expire: 86400, Minttl: minimum,
			})
		}
		return r, nil
	}
}

func cacheAnswerRcode(rcode int, truncated bool) func(q *dns.Msg) (*dns.Msg, error) {
	return func(q *dns.Msg) (*dns.Msg, error) {
		r := new(dns.Msg)
		r.SetRcode(q, rcode)
		r.Truncated = truncated
		return r, nil
	}
}

func cacheAnswerErr(err error) func(q *dns.Msg) (*dns.Msg, error) {
	return func(*dns.Msg) (*dns.Msg, error) { return nil, err }
}

// cacheClock is a fake clock that moves only when told.
type cacheClock struct {
	mu sync.Mutex
	t  time.Time
}

func newCacheClock() *cacheClock {
	return &cacheClock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
}

func (c *cacheClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *cacheClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// cacheSetup builds a cache over a fake upstream that answers A with ttl 300.
func cacheSetup(tb testing.TB, cfg upstream.CacheConfig) (*upstream.Cache, *cacheFakeUpstream, *cacheClock) {
	tb.Helper()
	f := &cacheFakeUpstream{}
	f.set(cacheAnswerA(300))
	clk := newCacheClock()
	if cfg.Now == nil {
		cfg.Now = clk.Now
	}
	if cfg.Logger == nil {
		if t, ok := tb.(*testing.T); ok {
			cfg.Logger = zaptest.NewLogger(t)
		}
	}
	c, err := upstream.NewCache(f, cfg)
	if err != nil {
		tb.Fatalf("NewCache: %v", err)
	}
	tb.Cleanup(func() { c.Close() }) //nolint:errcheck // always nil
	return c, f, clk
}

func cacheQ(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

// cacheParse packs m and parses it as the server does.
func cacheParse(tb testing.TB, m *dns.Msg) *dnswire.Query {
	tb.Helper()
	pkt, err := m.Pack()
	if err != nil {
		tb.Fatalf("pack query: %v", err)
	}
	q := new(dnswire.Query)
	if err := dnswire.Parse(pkt, q); err != nil {
		tb.Fatalf("parse query %v: %v", m, err)
	}
	return q
}

// cacheFinish completes the reply body at out[start:] for q as the server
// does and unpacks what the client gets.
func cacheFinish(tb testing.TB, out []byte, start int, q *dnswire.Query, tcp bool) *dns.Msg {
	tb.Helper()
	out, ok := dnswire.Finish(out, start, q, false, dnswire.Limit(q, tcp))
	if !ok {
		tb.Fatalf("Finish: the cache's reply %x does not answer the query", out[start:])
	}
	r := new(dns.Msg)
	if err := r.Unpack(out[start:]); err != nil {
		tb.Fatalf("unpack reply: %v", err)
	}
	return r
}

// cacheResolve asks c for m as the server would (Parse, Resolve, Finish)
// and returns what the client gets, and where it came from.
func cacheResolve(ctx context.Context, tb testing.TB, c *upstream.Cache, m *dns.Msg, tcp bool) (*dns.Msg, upstream.Origin, error) {
	tb.Helper()
	q := cacheParse(tb, m)
	out, from, err := c.Resolve(ctx, []byte("prefix"), q, tcp)
	if string(out[:6]) != "prefix" {
		tb.Fatalf("Resolve overwrote dst: %q", out[:6])
	}
	if err != nil {
		if len(out) != 6 {
			tb.Fatalf("Resolve failed with %v but appended %d bytes", err, len(out)-6)
		}
		return nil, from, err
	}
	return cacheFinish(tb, out, 6, q, tcp), from, nil
}

// cacheAsk resolves m over UDP and checks what every reply must carry.
func cacheAsk(tb testing.TB, c *upstream.Cache, m *dns.Msg) *dns.Msg {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, _, err := cacheResolve(ctx, tb, c, m, false)
	if err != nil {
		tb.Fatalf("Resolve %s: %v", m.Question[0].Name, err)
	}
	if r.Id != m.Id {
		tb.Fatalf("reply ID %d, want the query's %d", r.Id, m.Id)
	}
	if len(r.Question) != 1 || r.Question[0] != m.Question[0] {
		tb.Fatalf("reply question %v, want %v", r.Question, m.Question)
	}
	if !r.RecursionAvailable || r.Authoritative {
		tb.Fatalf("reply RA %v AA %v, want RA and no AA on a forwarded answer", r.RecursionAvailable, r.Authoritative)
	}
	return r
}

// cacheTTLs returns the TTL of every record except OPT.
func cacheTTLs(r *dns.Msg) []uint32 {
	var out []uint32
	for _, s := range [][]dns.RR{r.Answer, r.Ns, r.Extra} {
		for _, rr := range s {
			if rr.Header().Rrtype != dns.TypeOPT {
				out = append(out, rr.Header().Ttl)
			}
		}
	}
	return out
}

func cacheWantTTL(tb testing.TB, r *dns.Msg, want uint32) {
	tb.Helper()
	ttls := cacheTTLs(r)
	if len(ttls) == 0 {
		tb.Fatalf("reply has no records:\n%v", r)
	}
	for _, ttl := range ttls {
		if ttl != want {
			tb.Fatalf("TTLs %v, want all %d", ttls, want)
		}
	}
}

func cacheWantCalls(tb testing.TB, f *cacheFakeUpstream, want int64) {
	tb.Helper()
	if got := f.calls.Load(); got != want {
		tb.Fatalf("upstream saw %d queries, want %d", got, want)
	}
}

// cacheSettled waits until every goroutine of the test's synctest bubble
// (clients, flights, prefetches) is blocked or gone, then requires cond.
func cacheSettled(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	synctest.Wait()
	if !cond() {
		tb.Fatalf("not so once the cache settled: %s", what)
	}
}

func TestCacheHitCountsDown(t *testing.T) {
	// No prefetch: the hit at one second left would start one.
	c, f, clk := cacheSetup(t, upstream.CacheConfig{PrefetchHits: -1})
	if _, from, err := cacheResolve(context.Background(), t, c, cacheQ("web.example.", dns.TypeA), false); err != nil || from != upstream.OriginUpstream {
		t.Fatalf("first query: from %v, error %v; want upstream", from, err)
	}
	clk.Advance(100*time.Second + 500*time.Millisecond)
	r, from, err := cacheResolve(context.Background(), t, c, cacheQ("web.example.", dns.TypeA), false)
	if err != nil || from != upstream.OriginCache {
		t.Fatalf("second query: from %v, error %v; want the cache", from, err)
	}
	cacheWantTTL(t, r, 200)
	if a, ok := r.Answer[0].(*dns.A); !ok || !a.A.Equal(net.IPv4(192, 0, 2, 1)) {
		t.Fatalf("answer %v, want A 192.0.2.1", r.Answer)
	}
	cacheWantCalls(t, f, 1)

	clk.Advance(199 * time.Second) // age 299.5 s: one second left
	cacheWantTTL(t, cacheAsk(t, c, cacheQ("web.example.", dns.TypeA)), 1)
	cacheWantCalls(t, f, 1)

	clk.Advance(time.Second) // expired: goes upstream again
	cacheWantTTL(t, cacheAsk(t, c, cacheQ("web.example.", dns.TypeA)), 300)
	cacheWantCalls(t, f, 2)

	st := c.Stats()
	if st.Hits != 2 || st.Misses != 2 {
		t.Fatalf("stats %+v, want 2 hits and 2 misses", st)
	}
}

func TestCacheTTLClamp(t *testing.T) {
	tests := []struct {
		name     string
		cfg      upstream.CacheConfig
		upstream func(q *dns.Msg) (*dns.Msg, error)
		want     uint32
	}{
		{"raised to MinTTL", upstream.CacheConfig{MinTTL: time.Minute}, cacheAnswerA(5), 60},
		{"zero TTL raised to MinTTL", upstream.CacheConfig{MinTTL: 10 * time.Second}, cacheAnswerA(0), 10},
		{"capped at MaxTTL", upstream.CacheConfig{MaxTTL: time.Hour}, cacheAnswerA(100000), 3600},
		{"default cap one day", upstream.CacheConfig{}, cacheAnswerA(7 * 86400), 86400},
		{"negative from SOA minimum", upstream.CacheConfig{}, cacheAnswerNeg(dns.RcodeNameError, 3600, 60), 60},
		{"negative from SOA TTL", upstream.CacheConfig{}, cacheAnswerNeg(dns.RcodeNameError, 45, 600), 45},
		{"negative capped at 30 min", upstream.CacheConfig{}, cacheAnswerNeg(dns.RcodeNameError, 86400, 86400), 1800},
		{"negative cap configurable", upstream.CacheConfig{NegativeMaxTTL: time.Minute}, cacheAnswerNeg(dns.RcodeSuccess, 3600, 3600), 60},
		{"negative capped by MaxTTL too", upstream.CacheConfig{MaxTTL: 20 * time.Second}, cacheAnswerNeg(dns.RcodeNameError, 3600, 3600), 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, f, clk := cacheSetup(t, tt.cfg)
			f.set(tt.upstream)
			cacheWantTTL(t, cacheAsk(t, c, cacheQ("a.example.", dns.TypeA)), tt.want)
			clk.Advance(time.Duration(tt.want-1) * time.Second)
			cacheWantTTL(t, cacheAsk(t, c, cacheQ("a.example.", dns.TypeA)), 1)
			cacheWantCalls(t, f, 1)
			clk.Advance(time.Second)
			cacheAsk(t, c, cacheQ("a.example.", dns.TypeA))
			cacheWantCalls(t, f, 2)
		})
	}
}

func TestCacheNegative(t *testing.T) {
	tests := []struct {
		name      string
		rcode     int
		soa       bool
		wantCalls int64 // after three queries within a minute
	}{
		{"NXDOMAIN with SOA is cached", dns.RcodeNameError, true, 1},
		{"NODATA with SOA is cached", dns.RcodeSuccess, true, 1},
		{"NXDOMAIN without SOA is not cached", dns.RcodeNameError, false, 3},
		{"NODATA without SOA is not cached", dns.RcodeSuccess, false, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, f, clk := cacheSetup(t, upstream.CacheConfig{})
			var soaTTL uint32
			if tt.soa {
				soaTTL = 300
			}
			f.set(cacheAnswerNeg(tt.rcode, soaTTL, 60))
			for range 3 {
				r := cacheAsk(t, c, cacheQ("missing.example.", dns.TypeAAAA))
				if r.Rcode != tt.rcode || len(r.Answer) != 0 {
					t.Fatalf("rcode %s with %d answers, want %s and none",
						dns.RcodeToString[r.Rcode], len(r.Answer), dns.RcodeToString[tt.rcode])
				}
				if tt.soa && len(r.Ns) != 1 {
					t.Fatalf("authority %v, want the SOA", r.Ns)
				}
				clk.Advance(20 * time.Second)
			}
			cacheWantCalls(t, f, tt.wantCalls)
			wantLen := 0
			if tt.soa {
				wantLen = 1
			}
			if c.Len() != wantLen {
				t.Fatalf("Len %d, want %d", c.Len(), wantLen)
			}
		})
	}
}

func TestCacheNotCachedAndKeepsGoodEntry(t *testing.T) {
	tests := []struct {
		name      string
		upstream  func(q *dns.Msg) (*dns.Msg, error)
		rcode     int
		truncated bool
		wantErr   error
	}{
		{"truncated", cacheAnswerRcode(dns.RcodeSuccess, true), dns.RcodeSuccess, true, nil},
		{"SERVFAIL", cacheAnswerRcode(dns.RcodeServerFailure, false), dns.RcodeServerFailure, false, nil},
		{"REFUSED", cacheAnswerRcode(dns.RcodeRefused, false), dns.RcodeRefused, false, nil},
		{"error", cacheAnswerErr(upstream.ErrAllFailed), 0, false, upstream.ErrAllFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Disable serve-stale so the bad reply itself reaches the client.
			c, f, clk := cacheSetup(t, upstream.CacheConfig{StaleWindow: -1, PrefetchHits: -1})

			// Not cached: every query goes upstream.
			f.set(tt.upstream)
			for range 2 {
				r, _, err := cacheResolve(context.Background(), t, c, cacheQ("bad.example.", dns.TypeA), false)
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				if err == nil && (r.Rcode != tt.rcode || r.Truncated != tt.truncated) {
					t.Fatalf("rcode %s TC %v, want %s TC %v", dns.RcodeToString[r.Rcode], r.Truncated,
						dns.RcodeToString[tt.rcode], tt.truncated)
				}
			}
			cacheWantCalls(t, f, 2)
			if c.Len() != 0 {
				t.Fatalf("Len %d after uncacheable replies, want 0", c.Len())
			}

			// A good entry survives a bad refresh (here: its prefetch-free
			// expiry refresh) and is still there for the next good one.
			f.set(cacheAnswerA(60))
			cacheAsk(t, c, cacheQ("good.example.", dns.TypeA))
			clk.Advance(61 * time.Second)
			f.set(tt.upstream)
			cacheResolve(context.Background(), t, c, cacheQ("good.example.", dns.TypeA), false) //nolint:errcheck // checked above
			if c.Len() != 1 {
				t.Fatalf("Len %d, want the good entry kept", c.Len())
			}
		})
	}
}

func TestCacheErrorDoesNotReplaceOnPrefetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, f, clk := cacheSetup(t, upstream.CacheConfig{})
		f.set(cacheAnswerA(100))
		q := cacheQ("keep.example.", dns.TypeA)
		cacheAsk(t, c, q)
		f.set(cacheAnswerRcode(dns.RcodeServerFailure, false))
		clk.Advance(95 * time.Second)
		cacheAsk(t, c, q)
		cacheAsk(t, c, q) // popular and near expiry: prefetch, which gets SERVFAIL
		cacheSettled(t, "the prefetch has run", func() bool { return f.calls.Load() == 2 })
		r := cacheAsk(t, c, q)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("after a failed prefetch got %v, want the cached answer", r)
		}
		cacheWantTTL(t, r, 5)
	})
}

func TestCacheKey(t *testing.T) {
	withDO := func(m *dns.Msg) *dns.Msg { m.SetEdns0(1232, true); return m }
	withEDNS := func(m *dns.Msg) *dns.Msg { m.SetEdns0(4096, false); return m }
	withCD := func(m *dns.Msg) *dns.Msg { m.CheckingDisabled = true; return m }
	tests := []struct {
		name       string
		first, two *dns.Msg
		shared     bool
	}{
		{"same name", cacheQ("k.example.", dns.TypeA), cacheQ("k.example.", dns.TypeA), true},
		{"case-insensitive", cacheQ("K.Example.", dns.TypeA), cacheQ("k.eXAMPLE.", dns.TypeA), true},
		{"EDNS without DO shares", cacheQ("k.example.", dns.TypeA), withEDNS(cacheQ("k.example.", dns.TypeA)), true},
		{"type", cacheQ("k.example.", dns.TypeA), cacheQ("k.example.", dns.TypeAAAA), false},
		{"class", cacheQ("k.example.", dns.TypeA), func() *dns.Msg {
			m := cacheQ("k.example.", dns.TypeA)
			m.Question[0].Qclass = dns.ClassCHAOS
			return m
		}(), false},
		{"DO bit", cacheQ("k.example.", dns.TypeA), withDO(cacheQ("k.example.", dns.TypeA)), false},
		{"CD bit", cacheQ("k.example.", dns.TypeA), withCD(cacheQ("k.example.", dns.TypeA)), false},
		{"name", cacheQ("k.example.", dns.TypeA), cacheQ("k2.example.", dns.TypeA), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, f, _ := cacheSetup(t, upstream.CacheConfig{})
			cacheAsk(t, c, tt.first)
			cacheAsk(t, c, tt.two)
			want := int64(2)
			if tt.shared {
				want = 1
			}
			cacheWantCalls(t, f, want)
		})
	}
}

func TestCacheForwardsDOAndCD(t *testing.T) {
	c, f, _ := cacheSetup(t, upstream.CacheConfig{})
	m := cacheQ("sec.example.", dns.TypeA)
	m.SetEdns0(4096, true)
	m.CheckingDisabled = true
	r := cacheAsk(t, c, m)
	q := f.lastQuery()
	if o := q.IsEdns0(); o == nil || !o.Do() || !q.CheckingDisabled {
		t.Fatalf("upstream query %v, want DO and CD set", q)
	}
	if o := r.IsEdns0(); o == nil || !o.Do() || !r.CheckingDisabled {
		t.Fatalf("reply %v, want CD and an OPT with DO", r)
	}
	// A client without EDNS gets no OPT (RFC 6891), from the cache too.
	for range 2 {
		r = cacheAsk(t, c, cacheQ("plain.example.", dns.TypeA))
		if r.IsEdns0() != nil {
			t.Fatalf("reply to a query without EDNS has an OPT: %v", r)
		}
	}
}

func TestCachePreservesCaseAndID(t *testing.T) {
	c, f, _ := cacheSetup(t, upstream.CacheConfig{})
	f.set(func(q *dns.Msg) (*dns.Msg, error) { // an upstream that claims AA: not ours to pass on
		r, err := cacheAnswerA(300)(q)
		r.Authoritative = true
		return r, err
	})
	for i, name := range []string{"MiXeD.ExAmPlE.", "mixed.example.", "MIXED.EXAMPLE.", "mIxEd.eXaMpLe."} {
		m := cacheQ(name, dns.TypeA)
		m.Id = uint16(1000 + i)
		m.RecursionDesired = i%2 == 0
		r := cacheAsk(t, c, m) // checks ID and question
		if got := r.Answer[0].Header().Name; got != name {
			t.Fatalf("answer owner %q, want the client's %q", got, name)
		}
		if r.RecursionDesired != m.RecursionDesired {
			t.Fatalf("RD %v, want the query's %v", r.RecursionDesired, m.RecursionDesired)
		}
	}
	cacheWantCalls(t, f, 1)
}

func TestCacheCoalescesMisses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, f, _ := cacheSetup(t, upstream.CacheConfig{})
		gate := make(chan struct{})
		f.mu.Lock()
		f.gate = gate
		f.mu.Unlock()

		const clients = 100
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for i := range clients {
			wg.Go(func() {
				// Each client its own case and ID: each must get its own copy.
				name := "cold.example."
				if i%2 == 1 {
					name = "COLD.example."
				}
				m := cacheQ(name, dns.TypeA)
				m.Id = uint16(i)
				r, _, err := cacheResolve(context.Background(), t, c, m, false)
				switch {
				case err != nil:
					errs <- err
				case r.Id != m.Id || r.Question[0].Name != name:
					errs <- fmt.Errorf("client %d got ID %d question %s", i, r.Id, r.Question[0].Name)
				case len(r.Answer) != 1:
					errs <- fmt.Errorf("client %d got %d answers", i, len(r.Answer))
				default:
					r.Answer[0].Header().Ttl = 1 // a private copy: must not show up elsewhere
				}
			})
		}
		cacheSettled(t, "every other client waits for the first", func() bool { return c.Stats().Coalesced == clients-1 })
		close(gate)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		cacheWantCalls(t, f, 1)
		cacheWantTTL(t, cacheAsk(t, c, cacheQ("cold.example.", dns.TypeA)), 300)
	})
}

func TestCacheWaiterContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, f, _ := cacheSetup(t, upstream.CacheConfig{})
		gate := make(chan struct{})
		f.mu.Lock()
		f.gate = gate
		f.mu.Unlock()

		first := make(chan error, 1)
		go func() {
			_, _, err := cacheResolve(context.Background(), t, c, cacheQ("slow.example.", dns.TypeA), false)
			first <- err
		}()
		cacheSettled(t, "the upstream query is out", func() bool { return f.calls.Load() == 1 })

		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if _, _, err := cacheResolve(ctx, t, c, cacheQ("slow.example.", dns.TypeA), false); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("impatient waiter got %v, want its deadline", err)
		}
		close(gate)
		if err := <-first; err != nil {
			t.Fatalf("patient client: %v", err)
		}
		cacheWantCalls(t, f, 1)
	})
}

func TestCacheLeaderCancelDoesNotFailOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, f, _ := cacheSetup(t, upstream.CacheConfig{})
		gate := make(chan struct{})
		f.mu.Lock()
		f.gate = gate
		f.mu.Unlock()

		ctx, cancel := context.WithCancel(context.Background())
		leader := make(chan error, 1)
		go func() {
			_, _, err := cacheResolve(ctx, t, c, cacheQ("lead.example.", dns.TypeA), false)
			leader <- err
		}()
		cacheSettled(t, "the upstream query is out", func() bool { return f.calls.Load() == 1 })
		follower := make(chan error, 1)
		go func() {
			_, _, err := cacheResolve(context.Background(), t, c, cacheQ("lead.example.", dns.TypeA), false)
			follower <- err
		}()
		cacheSettled(t, "the follower joined", func() bool { return c.Stats().Coalesced == 1 })
		cancel()
		if err := <-leader; !errors.Is(err, context.Canceled) {
			t.Fatalf("leader got %v, want canceled", err)
		}
		close(gate)
		if err := <-follower; err != nil {
			t.Fatalf("follower: %v", err)
		}
	})
}

func TestCacheTCPAndUDPMissesDoNotShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, f, _ := cacheSetup(t, upstream.CacheConfig{})
		gate := make(chan struct{})
		f.mu.Lock()
		f.gate = gate
		f.mu.Unlock()
		var wg sync.WaitGroup
		for _, tcp := range []bool{false, true} {
			wg.Go(func() { cacheResolve(context.Background(), t, c, cacheQ("t.example.", dns.TypeA), tcp) }) //nolint:errcheck // counts only
		}
		cacheSettled(t, "two upstream queries are out", func() bool { return f.calls.Load() == 2 })
		close(gate)
		wg.Wait()
	})
}

func TestCachePrefetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, f, clk := cacheSetup(t, upstream.CacheConfig{})
		f.set(cacheAnswerA(100))
		q := cacheQ("hot.example.", dns.TypeA)
		cacheAsk(t, c, q) // miss, stored at t0
		clk.Advance(50 * time.Second)
		cacheAsk(t, c, q) // hit 1: not near expiry
		cacheWantCalls(t, f, 1)

		clk.Advance(41 * time.Second) // t0+91: in the last tenth of the TTL
		cacheWantTTL(t, cacheAsk(t, c, q), 9)
		cacheSettled(t, "the prefetch has run", func() bool { return f.calls.Load() == 2 })
		cacheWantTTL(t, cacheAsk(t, c, q), 100) // the refreshed entry
		if st := c.Stats(); st.Prefetches != 1 || st.Misses != 1 {
			t.Fatalf("stats %+v, want one prefetch and one miss", st)
		}

		clk.Advance(10 * time.Second) // past the original expiry (t0+100)
		cacheWantTTL(t, cacheAsk(t, c, q), 90)
		cacheWantCalls(t, f, 2)
		if st := c.Stats(); st.Misses != 1 {
			t.Fatalf("stats %+v, want no new miss", st)
		}
	})
}

func TestCachePrefetchOncePerEntry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, f, clk := cacheSetup(t, upstream.CacheConfig{})
		gate := make(chan struct{})
		q := cacheQ("busy.example.", dns.TypeA)
		cacheAsk(t, c, q)
		f.mu.Lock()
		f.gate = gate
		f.mu.Unlock()
		clk.Advance(295 * time.Second)
		for range 50 {
			cacheAsk(t, c, q)
		}
		cacheSettled(t, "one prefetch waits upstream", func() bool { return f.calls.Load() == 2 })
		close(gate)
		synctest.Wait()
		cacheWantTTL(t, cacheAsk(t, c, q), 300) // the refreshed entry
		cacheWantCalls(t, f, 2)
		if st := c.Stats(); st.Prefetches != 1 {
			t.Fatalf("stats %+v, want exactly one prefetch", st)
		}
	})
}

func TestCachePrefetchDisabled(t *testing.T) {
	c, f, clk := cacheSetup(t, upstream.CacheConfig{PrefetchHits: -1})
	q := cacheQ("cold.example.", dns.TypeA)
	cacheAsk(t, c, q)
	clk.Advance(299 * time.Second)
	for range 5 {
		cacheAsk(t, c, q)
	}
	// maybePrefetch counts a prefetch before it starts one, so no wait is needed.
	if n := c.Stats().Prefetches; n != 0 {
		t.Fatalf("%d prefetches with prefetch disabled", n)
	}
	cacheWantCalls(t, f, 1)
}

func TestCacheServeStale(t *testing.T) {
	tests := []struct {
		name      string
		fail      func(q *dns.Msg) (*dns.Msg, error)
		advance   time.Duration // after expiry
		wantStale bool
	}{
		{"all failed within window", cacheAnswerErr(upstream.ErrAllFailed), time.Minute, true},
		{"wrapped error within window", cacheAnswerErr(fmt.Errorf("forward x: %w", upstream.ErrAllFailed)), 50 * time.Minute, true},
		{"SERVFAIL within window", cacheAnswerRcode(dns.RcodeServerFailure, false), time.Minute, true},
		{"past the window", cacheAnswerErr(upstream.ErrAllFailed), time.Hour + time.Second, false},
		{"overloaded is not a failure", cacheAnswerErr(upstream.ErrOverloaded), time.Minute, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, f, clk := cacheSetup(t, upstream.CacheConfig{StaleWindow: time.Hour, PrefetchHits: -1})
			f.set(cacheAnswerA(60))
			q := cacheQ("stale.example.", dns.TypeA)
			cacheAsk(t, c, q)
			clk.Advance(60*time.Second + tt.advance)
			f.set(tt.fail)
			r, from, err := cacheResolve(context.Background(), t, c, q, false)
			cacheWantCalls(t, f, 2) // refresh first, always
			if tt.wantStale {
				if err != nil || from != upstream.OriginStale {
					t.Fatalf("want a stale answer, got origin %v error %v", from, err)
				}
				if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Id != q.Id {
					t.Fatalf("want the stale answer, got %v", r)
				}
				cacheWantTTL(t, r, 30)
				if st := c.Stats(); st.Stale != 1 {
					t.Fatalf("stats %+v, want one stale answer", st)
				}
				return
			}
			if err == nil && r.Rcode == dns.RcodeSuccess {
				t.Fatalf("want a failure, got %v", r)
			}
			if st := c.Stats(); st.Stale != 0 {
				t.Fatalf("stats %+v, want no stale answer", st)
			}
		})
	}
}

func TestCacheStaleThenRecovers(t *testing.T) {
	c, f, clk := cacheSetup(t, upstream.CacheConfig{PrefetchHits: -1})
	q := cacheQ("flaky.example.", dns.TypeA)
	cacheAsk(t, c, q)
	clk.Advance(time.Hour)
	f.set(cacheAnswerErr(upstream.ErrAllFailed))
	cacheWantTTL(t, cacheAsk(t, c, q), 30)
	cacheWantCalls(t, f, 2)

	// For 30 s after a failed refresh, stale comes at once (RFC 8767 failure
	// recheck), so clients do not wait on a dead upstream each time.
	clk.Advance(29 * time.Second)
	cacheWantTTL(t, cacheAsk(t, c, q), 30)
	cacheWantCalls(t, f, 2)

	clk.Advance(time.Second) // then refresh again: still failing
	cacheWantTTL(t, cacheAsk(t, c, q), 30)
	cacheWantCalls(t, f, 3)

	clk.Advance(30 * time.Second)
	f.set(cacheAnswerA(120))
	cacheWantTTL(t, cacheAsk(t, c, q), 120)
	cacheWantCalls(t, f, 4)
	if st := c.Stats(); st.Stale != 3 {
		t.Fatalf("stats %+v, want 3 stale answers", st)
	}
}

func TestCacheStaleOnClientDeadline(t *testing.T) {
	c, f, clk := cacheSetup(t, upstream.CacheConfig{PrefetchHits: -1})
	q := cacheQ("slowstale.example.", dns.TypeA)
	cacheAsk(t, c, q)
	clk.Advance(10 * time.Minute)
	gate := make(chan struct{})
	f.mu.Lock()
	f.gate = gate
	f.mu.Unlock()
	defer close(gate)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	r, from, err := cacheResolve(ctx, t, c, q, false)
	if err != nil || from != upstream.OriginStale {
		t.Fatalf("want the stale answer when the client's time runs out, got origin %v error %v", from, err)
	}
	cacheWantTTL(t, r, 30)

	// Canceled is not a deadline: the client is gone, no answer needed.
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, _, err := cacheResolve(ctx, t, c, q, false); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled client got %v, want canceled", err)
	}
}

func TestCacheNegativeTTLIsSmallestRecord(t *testing.T) {
	c, f, _ := cacheSetup(t, upstream.CacheConfig{})
	f.set(func(q *dns.Msg) (*dns.Msg, error) {
		r, _ := cacheAnswerNeg(dns.RcodeNameError, 3600, 600)(q)
		r.Answer = append(r.Answer, &dns.CNAME{
			Hdr:    dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 20},
			Target: "gone.example.",
		})
		return r, nil
	})
	cacheWantTTL(t, cacheAsk(t, c, cacheQ("alias.example.", dns.TypeA)), 20)
}

func TestCacheEviction(t *testing.T) {
	c, f, _ := cacheSetup(t, upstream.CacheConfig{Size: 2})
	for _, n := range []string{"a.example.", "b.example.", "c.example."} {
		cacheAsk(t, c, cacheQ(n, dns.TypeA))
	}
	if c.Len() != 2 || c.Stats().Evictions != 1 {
		t.Fatalf("Len %d stats %+v, want 2 entries and 1 eviction", c.Len(), c.Stats())
	}
	cacheAsk(t, c, cacheQ("c.example.", dns.TypeA)) // most recent: a hit
	cacheWantCalls(t, f, 3)
	cacheAsk(t, c, cacheQ("a.example.", dns.TypeA)) // evicted: a miss
	cacheWantCalls(t, f, 4)
}

// Meta types are passed through, never stored.
func TestCachePassThrough(t *testing.T) {
	c, f, _ := cacheSetup(t, upstream.CacheConfig{})
	for range 2 {
		cacheAsk(t, c, cacheQ("any.example.", dns.TypeANY))
	}
	cacheWantCalls(t, f, 2)
	if c.Len() != 0 {
		t.Fatalf("Len %d, want nothing cached", c.Len())
	}
}

// A negative Size (--cache-size 0) stores nothing: every query goes
// upstream and gets the upstream's TTLs, but identical misses still share
// one exchange.
func TestCacheStoringOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, f, _ := cacheSetup(t, upstream.CacheConfig{Size: -1})
		f.set(func(q *dns.Msg) (*dns.Msg, error) {
			r, err := cacheAnswerA(300)(q)
			r.Answer = append(r.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 7},
				A:   net.IPv4(192, 0, 2, 2).To4(),
			})
			return r, err
		})
		for range 2 {
			r := cacheAsk(t, c, cacheQ("off.example.", dns.TypeA))
			if ttls := cacheTTLs(r); len(ttls) != 2 || ttls[0] != 300 || ttls[1] != 7 {
				t.Fatalf("TTLs %v, want the upstream's [300 7]", ttls)
			}
		}
		cacheWantCalls(t, f, 2)
		if _, ok := c.AppendHit(nil, cacheParse(t, cacheQ("off.example.", dns.TypeA))); ok || c.Len() != 0 {
			t.Fatalf("AppendHit hit %v, Len %d; want nothing stored", ok, c.Len())
		}

		gate := make(chan struct{})
		f.mu.Lock()
		f.gate = gate
		f.mu.Unlock()
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				if _, _, err := cacheResolve(context.Background(), t, c, cacheQ("off.example.", dns.TypeA), false); err != nil {
					t.Error(err)
				}
			})
		}
		cacheSettled(t, "every other client waits for the first", func() bool { return c.Stats().Coalesced == 9 })
		close(gate)
		wg.Wait()
		cacheWantCalls(t, f, 3)
	})
}

func TestNewCacheRejectsBadConfig(t *testing.T) {
	f := &cacheFakeUpstream{}
	for _, cfg := range []upstream.CacheConfig{
		{MinTTL: 2 * time.Hour, MaxTTL: time.Hour},
		{MinTTL: -time.Second},
	} {
		if _, err := upstream.NewCache(f, cfg); err == nil {
			t.Errorf("NewCache(%+v) succeeded, want an error", cfg)
		}
	}
	if _, err := upstream.NewCache(nil, upstream.CacheConfig{}); err == nil {
		t.Error("NewCache(nil) succeeded")
	}
}

// cacheWireQuery is a query with the given ID and optional EDNS, parsed as
// the server parses it.
func cacheWireQuery(tb testing.TB, name string, qtype uint16, id uint16, edns, do bool) *dnswire.Query {
	tb.Helper()
	m := cacheQ(name, qtype)
	m.Id = id
	if edns {
		m.SetEdns0(1232, do)
	}
	return cacheParse(tb, m)
}

func TestCacheAppendHit(t *testing.T) {
	c, f, clk := cacheSetup(t, upstream.CacheConfig{})

	// Cold: no hit, nothing appended.
	dst := []byte("prefix")
	req := cacheWireQuery(t, "Wire.Example.", dns.TypeA, 7, false, false)
	if out, ok := c.AppendHit(dst, req); ok || string(out) != "prefix" {
		t.Fatalf("cold AppendHit = %q, %v; want the prefix and false", out, ok)
	}
	cacheAsk(t, c, cacheQ("wire.example.", dns.TypeA))
	clk.Advance(10 * time.Second)

	tests := []struct {
		name     string
		edns, do bool
		hit      bool
	}{
		{"no EDNS", false, false, true},
		{"EDNS", true, false, true},
		{"DO is another key", true, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := cacheWireQuery(t, "WiRe.ExAmPlE.", dns.TypeA, 4242, tt.edns, tt.do)
			out, ok := c.AppendHit(dst, req)
			if ok != tt.hit {
				t.Fatalf("AppendHit ok %v, want %v", ok, tt.hit)
			}
			if !ok {
				return
			}
			if string(out[:6]) != "prefix" {
				t.Fatalf("dst prefix overwritten: %q", out[:6])
			}
			r := cacheFinish(t, out, 6, req, false)
			if r.Id != 4242 || !r.Response || !r.RecursionDesired || !r.RecursionAvailable || r.Authoritative ||
				r.Question[0].Name != "WiRe.ExAmPlE." {
				t.Fatalf("reply header/question wrong: %v", r)
			}
			if r.Answer[0].Header().Name != "WiRe.ExAmPlE." {
				t.Fatalf("answer owner %q, want the client's case via compression", r.Answer[0].Header().Name)
			}
			cacheWantTTL(t, r, 290)
			if (r.IsEdns0() != nil) != tt.edns {
				t.Fatalf("reply OPT %v, want present=%v", r.IsEdns0(), tt.edns)
			}
		})
	}
	cacheWantCalls(t, f, 1)

	// Expired: left to Resolve.
	clk.Advance(300 * time.Second)
	if _, ok := c.AppendHit(nil, req); ok {
		t.Fatal("AppendHit served an expired entry")
	}
	// A query whose question did not parse is never a hit.
	if _, ok := c.AppendHit(nil, &dnswire.Query{}); ok {
		t.Fatal("AppendHit answered a query without a question")
	}
}

// The cache hands out whole replies; a UDP client gets what fits its buffer,
// with TC (Finish's cut), and TCP or a large EDNS buffer gets all of it.
func TestCacheHitFitsTheClient(t *testing.T) {
	c, f, _ := cacheSetup(t, upstream.CacheConfig{})
	const n = 60 // about 960 bytes: over 512
	f.set(func(q *dns.Msg) (*dns.Msg, error) {
		r := new(dns.Msg)
		r.SetReply(q)
		for i := range n {
			r.Answer = append(r.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
				A:   netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}).AsSlice(),
			})
		}
		return r, nil
	})
	cacheAsk(t, c, cacheQ("big.example.", dns.TypeA))
	for _, tt := range []struct {
		name      string
		edns, tcp bool
		whole     bool
	}{
		{"UDP without EDNS", false, false, false},
		{"UDP with EDNS 1232", true, false, true},
		{"TCP", false, true, true},
	} {
		req := cacheWireQuery(t, "big.example.", dns.TypeA, 1, tt.edns, false)
		out, ok := c.AppendHit(nil, req)
		if !ok {
			t.Fatalf("%s: AppendHit missed", tt.name)
		}
		r := cacheFinish(t, out, 0, req, tt.tcp)
		if whole := len(r.Answer) == n && !r.Truncated; whole != tt.whole || r.Truncated == tt.whole {
			t.Errorf("%s: %d answers, TC %v; want whole %v", tt.name, len(r.Answer), r.Truncated, tt.whole)
		}
	}
}

// cacheLoopbackExchanger sends queries to a real DNS server over loopback.
type cacheLoopbackExchanger struct {
	addr   string
	client *dns.Client
}

func (l *cacheLoopbackExchanger) Exchange(ctx context.Context, m *dns.Msg, _ bool) (*dns.Msg, error) {
	r, _, err := l.client.ExchangeContext(ctx, m, l.addr)
	if err != nil {
		return nil, fmt.Errorf("exchange with %s: %w", l.addr, err)
	}
	return r, nil
}

// cacheLoopbackServer starts a miekg/dns server on 127.0.0.1:0 (UDP and
// TCP) that answers with answer and counts the queries.
func cacheLoopbackServer(tb testing.TB, answer func(q *dns.Msg) (*dns.Msg, error)) (addr string, count *atomic.Int64) {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		tb.Fatalf("listen: %v", err)
	}
	count = new(atomic.Int64)
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		count.Add(1)
		r, _ := answer(q)
		w.WriteMsg(r) //nolint:errcheck // the client notices
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe() //nolint:errcheck // stopped in Cleanup
		<-started
		tb.Cleanup(func() { srv.Shutdown() }) //nolint:errcheck // best effort
	}
	return pc.LocalAddr().String(), count
}

func TestCacheOverLoopback(t *testing.T) {
	addr, count := cacheLoopbackServer(t, cacheAnswerA(300))
	ex := &cacheLoopbackExchanger{addr: addr, client: &dns.Client{Net: "udp", Timeout: 2 * time.Second}}
	c, err := upstream.NewCache(ex, upstream.CacheConfig{Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() }) //nolint:errcheck // always nil
	for _, name := range []string{"Loop.Example.", "loop.example.", "LOOP.EXAMPLE."} {
		r := cacheAsk(t, c, cacheQ(name, dns.TypeA))
		if len(r.Answer) != 1 || !strings.EqualFold(r.Answer[0].Header().Name, name) {
			t.Fatalf("answer %v", r.Answer)
		}
	}
	req := cacheWireQuery(t, "lOOp.example.", dns.TypeA, 99, true, false)
	out, ok := c.AppendHit(nil, req)
	if !ok {
		t.Fatal("wire hit missed")
	}
	if r := cacheFinish(t, out, 0, req, false); r.Id != 99 || r.Question[0].Name != "lOOp.example." {
		t.Fatalf("wire reply %v", r)
	}
	if got := count.Load(); got != 1 {
		t.Fatalf("server saw %d queries, want 1", got)
	}
}

// cacheOverForwarder is a cache in front of a real Forwarder and a loopback
// upstream that answers with answer.
func cacheOverForwarder(tb testing.TB, cfg upstream.CacheConfig, answer func(q *dns.Msg) (*dns.Msg, error)) (*upstream.Cache, *atomic.Int64) {
	tb.Helper()
	addr, count := cacheLoopbackServer(tb, answer)
	spec, err := upstream.ParseSpec(addr)
	if err != nil {
		tb.Fatal(err)
	}
	fwd, err := upstream.NewForwarder(upstream.Config{Servers: []upstream.Spec{spec}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { fwd.Close() }) //nolint:errcheck // always nil
	c, err := upstream.NewCache(fwd, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() }) //nolint:errcheck // always nil
	return c, count
}

// What goes upstream is built from the question alone, and what comes back
// is the client's reply: its ID, case, RD and CD, RA, no AA, and an OPT
// exactly when it sent one; the upstream's ID, AA and OPT stay behind.
func TestCacheOverForwarder(t *testing.T) {
	var mu sync.Mutex
	var seen []*dns.Msg
	c, _ := cacheOverForwarder(t, upstream.CacheConfig{Logger: zaptest.NewLogger(t)}, func(q *dns.Msg) (*dns.Msg, error) {
		mu.Lock()
		seen = append(seen, q.Copy())
		mu.Unlock()
		r, err := cacheAnswerA(300)(q)
		r.Question[0].Name = strings.ToLower(r.Question[0].Name)
		r.Authoritative = true
		r.SetEdns0(4096, false)
		return r, err
	})
	tests := []struct {
		name         string
		edns, do, cd bool
		rd           bool
	}{
		{name: "plain", rd: true},
		{name: "no RD", rd: false},
		{name: "EDNS", edns: true, rd: true},
		{name: "EDNS with DO and CD", edns: true, do: true, cd: true, rd: true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for j := range 2 { // a miss, then a hit
				m := cacheQ(fmt.Sprintf("Fwd-%d.ExAmPlE.", i), dns.TypeA)
				m.Id = uint16(100*i + j)
				m.RecursionDesired, m.CheckingDisabled = tt.rd, tt.cd
				if tt.edns {
					m.SetEdns0(4096, tt.do)
					// Options are for this hop only.
					m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0123456789abcdef"})
				}
				r := cacheAsk(t, c, m) // ID, question, RA, no AA
				if r.RecursionDesired != tt.rd || r.CheckingDisabled != tt.cd {
					t.Errorf("reply RD %v CD %v, want the query's %v %v", r.RecursionDesired, r.CheckingDisabled, tt.rd, tt.cd)
				}
				if r.Answer[0].Header().Name != m.Question[0].Name {
					t.Errorf("answer owner %q, want the client's %q", r.Answer[0].Header().Name, m.Question[0].Name)
				}
				o := r.IsEdns0()
				if (o != nil) != tt.edns || (o != nil && (o.UDPSize() != dnswire.MaxUDPSize || o.Do() != tt.do || len(o.Option) != 0)) {
					t.Errorf("reply OPT %v, want present %v with size %d DO %v", o, tt.edns, dnswire.MaxUDPSize, tt.do)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != i+1 {
				t.Fatalf("upstream saw %d queries, want %d", len(seen), i+1)
			}
			u := seen[i]
			o := u.IsEdns0()
			if u.Id == uint16(100*i) || !u.RecursionDesired || u.CheckingDisabled != tt.cd ||
				o == nil || o.UDPSize() != dnswire.MaxUDPSize || o.Do() != tt.do || len(o.Option) != 0 || len(u.Extra) != 1 {
				t.Errorf("upstream query %v, want a fresh ID, RD, CD %v, and only our OPT (DO %v)", u, tt.cd, tt.do)
			}
		})
	}
}

// FuzzCacheAppendHit feeds arbitrary packets through Parse to the hit path
// and Finish: no panic, and a hit is a well-formed reply to that packet.
func FuzzCacheAppendHit(f *testing.F) {
	c, _, _ := cacheSetup(f, upstream.CacheConfig{PrefetchHits: -1})
	for _, n := range []string{"fuzz.example.", "a.b.c.example."} {
		cacheAsk(f, c, cacheQ(n, dns.TypeA))
		m := cacheQ(n, dns.TypeA)
		m.SetEdns0(1232, false)
		cacheAsk(f, c, m)
		for _, edns := range []bool{false, true} {
			m := cacheQ(strings.ToUpper(n), dns.TypeA)
			if edns {
				m.SetEdns0(1232, false)
			}
			b, err := m.Pack()
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b, edns)
		}
	}
	f.Fuzz(func(t *testing.T, req []byte, tcp bool) {
		var q dnswire.Query
		if dnswire.Parse(req, &q) != nil {
			return
		}
		out, ok := c.AppendHit(nil, &q)
		if !ok {
			if len(out) != 0 {
				t.Fatalf("miss appended %d bytes", len(out))
			}
			return
		}
		out, ok = dnswire.Finish(out, 0, &q, false, dnswire.Limit(&q, tcp))
		if !ok {
			t.Fatalf("Finish rejected a cached reply")
		}
		if len(out) > dnswire.Limit(&q, tcp) {
			t.Fatalf("reply of %d bytes over the limit %d", len(out), dnswire.Limit(&q, tcp))
		}
		r := new(dns.Msg)
		if err := r.Unpack(out); err != nil {
			t.Fatalf("hit is not a valid message: %v", err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(req); err != nil {
			t.Fatalf("answered a query miekg cannot parse: %v", err)
		}
		if r.Id != m.Id || !r.Response || r.Authoritative || !r.RecursionAvailable ||
			len(r.Question) != 1 || r.Question[0] != m.Question[0] || (r.IsEdns0() != nil) != q.EDNS {
			t.Fatalf("reply %v does not answer %v", r, m)
		}
	})
}
