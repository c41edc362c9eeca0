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

func (f *cacheFakeUpstream) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
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

func cacheAsk(tb testing.TB, c upstream.Exchanger, m *dns.Msg) *dns.Msg {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.Exchange(ctx, m)
	if err != nil {
		tb.Fatalf("Exchange %s: %v", m.Question[0].Name, err)
	}
	if r.Id != m.Id {
		tb.Fatalf("reply ID %d, want the query's %d", r.Id, m.Id)
	}
	if len(r.Question) != 1 || r.Question[0] != m.Question[0] {
		tb.Fatalf("reply question %v, want %v", r.Question, m.Question)
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
	cacheWantTTL(t, cacheAsk(t, c, cacheQ("web.example.", dns.TypeA)), 300)
	clk.Advance(100*time.Second + 500*time.Millisecond)
	r := cacheAsk(t, c, cacheQ("web.example.", dns.TypeA))
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
		name     string
		upstream func(q *dns.Msg) (*dns.Msg, error)
		rcode    int
		wantErr  error
	}{
		{"truncated", cacheAnswerRcode(dns.RcodeSuccess, true), dns.RcodeSuccess, nil},
		{"SERVFAIL", cacheAnswerRcode(dns.RcodeServerFailure, false), dns.RcodeServerFailure, nil},
		{"REFUSED", cacheAnswerRcode(dns.RcodeRefused, false), dns.RcodeRefused, nil},
		{"error", cacheAnswerErr(upstream.ErrAllFailed), 0, upstream.ErrAllFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Disable serve-stale so the bad reply itself reaches the client.
			c, f, clk := cacheSetup(t, upstream.CacheConfig{StaleWindow: -1, PrefetchHits: -1})

			// Not cached: every query goes upstream.
			f.set(tt.upstream)
			for range 2 {
				r, err := c.Exchange(context.Background(), cacheQ("bad.example.", dns.TypeA))
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				if err == nil && r.Rcode != tt.rcode {
					t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
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
			c.Exchange(context.Background(), cacheQ("good.example.", dns.TypeA)) //nolint:errcheck // checked above
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
	if o := r.IsEdns0(); o == nil || !o.Do() {
		t.Fatalf("reply %v, want an OPT with DO", r)
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
				r, err := c.Exchange(context.Background(), m)
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
			_, err := c.Exchange(context.Background(), cacheQ("slow.example.", dns.TypeA))
			first <- err
		}()
		cacheSettled(t, "the upstream query is out", func() bool { return f.calls.Load() == 1 })

		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if _, err := c.Exchange(ctx, cacheQ("slow.example.", dns.TypeA)); !errors.Is(err, context.DeadlineExceeded) {
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
			_, err := c.Exchange(ctx, cacheQ("lead.example.", dns.TypeA))
			leader <- err
		}()
		cacheSettled(t, "the upstream query is out", func() bool { return f.calls.Load() == 1 })
		follower := make(chan error, 1)
		go func() {
			_, err := c.Exchange(context.Background(), cacheQ("lead.example.", dns.TypeA))
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
		for _, ctx := range []context.Context{context.Background(), upstream.WithTCP(context.Background())} {
			wg.Go(func() { c.Exchange(ctx, cacheQ("t.example.", dns.TypeA)) }) //nolint:errcheck // counts only
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
			r, err := c.Exchange(context.Background(), q)
			cacheWantCalls(t, f, 2) // refresh first, always
			if tt.wantStale {
				if err != nil {
					t.Fatalf("want a stale answer, got error %v", err)
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
	r, err := c.Exchange(ctx, q)
	if err != nil {
		t.Fatalf("want the stale answer when the client's time runs out, got %v", err)
	}
	cacheWantTTL(t, r, 30)

	// Canceled is not a deadline: the client is gone, no answer needed.
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := c.Exchange(ctx, q); !errors.Is(err, context.Canceled) {
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

	if n := c.Resize(1); n != 1 || c.Len() != 1 {
		t.Fatalf("Resize evicted %d, Len %d; want 1 and 1", n, c.Len())
	}
}

func TestCachePassThrough(t *testing.T) {
	c, f, _ := cacheSetup(t, upstream.CacheConfig{})
	for _, m := range []*dns.Msg{
		cacheQ("zone.example.", dns.TypeAXFR),
		cacheQ("any.example.", dns.TypeANY),
		func() *dns.Msg { m := cacheQ("n.example.", dns.TypeSOA); m.Opcode = dns.OpcodeNotify; return m }(),
	} {
		for range 2 {
			if _, err := c.Exchange(context.Background(), m); err != nil {
				t.Fatal(err)
			}
		}
	}
	cacheWantCalls(t, f, 6)
	if c.Len() != 0 {
		t.Fatalf("Len %d, want nothing cached", c.Len())
	}
}

func TestNewCacheRejectsBadConfig(t *testing.T) {
	f := &cacheFakeUpstream{}
	for _, cfg := range []upstream.CacheConfig{
		{Size: -1},
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

// cacheWireQuery packs a query with the given ID and optional EDNS.
func cacheWireQuery(tb testing.TB, name string, qtype uint16, id uint16, edns, do bool) []byte {
	tb.Helper()
	m := cacheQ(name, qtype)
	m.Id = id
	if edns {
		m.SetEdns0(1232, do)
	}
	b, err := m.Pack()
	if err != nil {
		tb.Fatalf("pack query: %v", err)
	}
	return b
}

func TestCacheAppendHit(t *testing.T) {
	c, f, clk := cacheSetup(t, upstream.CacheConfig{})

	// Cold: no hit, nothing appended.
	dst := []byte("prefix")
	req := cacheWireQuery(t, "Wire.Example.", dns.TypeA, 7, false, false)
	if out, ok := c.AppendHit(dst, req, false); ok || string(out) != "prefix" {
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
			out, ok := c.AppendHit(dst, req, false)
			if ok != tt.hit {
				t.Fatalf("AppendHit ok %v, want %v", ok, tt.hit)
			}
			if !ok {
				return
			}
			if string(out[:6]) != "prefix" {
				t.Fatalf("dst prefix overwritten: %q", out[:6])
			}
			r := new(dns.Msg)
			if err := r.Unpack(out[6:]); err != nil {
				t.Fatalf("unpack reply: %v", err)
			}
			if r.Id != 4242 || !r.Response || !r.RecursionDesired || r.Question[0].Name != "WiRe.ExAmPlE." {
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

	// Expired: left to the Exchange path.
	clk.Advance(300 * time.Second)
	if _, ok := c.AppendHit(nil, req, false); ok {
		t.Fatal("AppendHit served an expired entry")
	}
}

func TestCacheAppendHitSizeLimit(t *testing.T) {
	c, f, _ := cacheSetup(t, upstream.CacheConfig{})
	f.set(func(q *dns.Msg) (*dns.Msg, error) {
		r := new(dns.Msg)
		r.SetReply(q)
		for i := range 60 { // about 960 bytes: over 512
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
		want      bool
	}{
		{"UDP without EDNS", false, false, false},
		{"UDP with EDNS 1232", true, false, true},
		{"TCP", false, true, true},
	} {
		req := cacheWireQuery(t, "big.example.", dns.TypeA, 1, tt.edns, false)
		if _, ok := c.AppendHit(nil, req, tt.tcp); ok != tt.want {
			t.Errorf("%s: AppendHit ok %v, want %v", tt.name, ok, tt.want)
		}
	}
}

func TestCacheAppendHitRejectsOddQueries(t *testing.T) {
	c, _, _ := cacheSetup(t, upstream.CacheConfig{})
	cacheAsk(t, c, cacheQ("odd.example.", dns.TypeA))
	good := cacheWireQuery(t, "odd.example.", dns.TypeA, 1, true, false)
	if _, ok := c.AppendHit(nil, good, false); !ok {
		t.Fatal("plain query missed")
	}
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for name, req := range map[string][]byte{
		"empty":          nil,
		"short":          good[:14],
		"response bit":   mutate(func(b []byte) []byte { b[2] |= 0x80; return b }),
		"opcode notify":  mutate(func(b []byte) []byte { b[2] |= 4 << 3; return b }),
		"two questions":  mutate(func(b []byte) []byte { b[5] = 2; return b }),
		"answer count":   mutate(func(b []byte) []byte { b[7] = 1; return b }),
		"truncated OPT":  good[:len(good)-3],
		"trailing bytes": append(append([]byte(nil), good...), 0),
		"EDNS version 1": mutate(func(b []byte) []byte { b[len(b)-5] = 1; return b }),
		"label too long": mutate(func(b []byte) []byte { b[12] = 64; return b }),
		"pointer":        mutate(func(b []byte) []byte { b[12] = 0xC0; return b }),
	} {
		if _, ok := c.AppendHit(nil, req, false); ok {
			t.Errorf("%s: AppendHit answered", name)
		}
	}
}

// cacheLoopbackExchanger sends queries to a real DNS server over loopback.
type cacheLoopbackExchanger struct {
	addr   string
	client *dns.Client
}

func (l *cacheLoopbackExchanger) Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	r, _, err := l.client.ExchangeContext(ctx, m, l.addr)
	if err != nil {
		return nil, fmt.Errorf("exchange with %s: %w", l.addr, err)
	}
	return r, nil
}

// cacheLoopbackServer starts a miekg/dns server on 127.0.0.1:0 that answers
// A queries and counts them.
func cacheLoopbackServer(tb testing.TB) (addr string, count *atomic.Int64) {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	count = new(atomic.Int64)
	answer := cacheAnswerA(300)
	started := make(chan struct{})
	srv := &dns.Server{
		PacketConn:        pc,
		NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
			count.Add(1)
			r, _ := answer(q)
			w.WriteMsg(r) //nolint:errcheck // the client notices
		}),
	}
	go srv.ActivateAndServe() //nolint:errcheck // stopped in Cleanup
	<-started
	tb.Cleanup(func() { srv.Shutdown() }) //nolint:errcheck // best effort
	return pc.LocalAddr().String(), count
}

func TestCacheOverLoopback(t *testing.T) {
	addr, count := cacheLoopbackServer(t)
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
	out, ok := c.AppendHit(nil, req, false)
	if !ok {
		t.Fatal("wire hit missed")
	}
	r := new(dns.Msg)
	if err := r.Unpack(out); err != nil || r.Id != 99 || r.Question[0].Name != "lOOp.example." {
		t.Fatalf("wire reply %v, err %v", r, err)
	}
	if got := count.Load(); got != 1 {
		t.Fatalf("server saw %d queries, want 1", got)
	}
}

// FuzzCacheAppendHit feeds arbitrary packets to the wire hit path: it must
// never panic, and a hit must be a well-formed reply to that packet.
func FuzzCacheAppendHit(f *testing.F) {
	c, _, _ := cacheSetup(f, upstream.CacheConfig{PrefetchHits: -1})
	for _, n := range []string{"fuzz.example.", "a.b.c.example."} {
		cacheAsk(f, c, cacheQ(n, dns.TypeA))
		m := cacheQ(n, dns.TypeA)
		m.SetEdns0(1232, false)
		cacheAsk(f, c, m)
		f.Add(cacheWireQuery(f, strings.ToUpper(n), dns.TypeA, 1, false, false), false)
		f.Add(cacheWireQuery(f, n, dns.TypeA, 2, true, false), true)
	}
	f.Fuzz(func(t *testing.T, req []byte, tcp bool) {
		out, ok := c.AppendHit(nil, req, tcp)
		if !ok {
			if len(out) != 0 {
				t.Fatalf("miss appended %d bytes", len(out))
			}
			return
		}
		r := new(dns.Msg)
		if err := r.Unpack(out); err != nil {
			t.Fatalf("hit is not a valid message: %v", err)
		}
		q := new(dns.Msg)
		if err := q.Unpack(req); err != nil {
			t.Fatalf("answered a query miekg cannot parse: %v", err)
		}
		if r.Id != q.Id || !r.Response || len(r.Question) != 1 || r.Question[0] != q.Question[0] {
			t.Fatalf("reply %v does not answer %v", r, q)
		}
	})
}
