package dnsserver

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/dnswire"
)

// frozen returns a clock that moves only when the test moves *now.
func frozen(now *time.Time) func() time.Time { return func() time.Time { return *now } }

func TestLimiterRefills(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := newLimiter(RateLimit{QPS: 10, Burst: 3}, frozen(&now))
	a := netip.MustParseAddr("172.18.0.2")
	b := netip.MustParseAddr("172.18.0.3")
	steps := []struct {
		advance time.Duration
		src     netip.Addr
		want    bool
	}{
		{0, a, true}, {0, a, true}, {0, a, true},
		{0, a, false},                     // burst spent
		{0, b, true},                      // other sources have their own bucket
		{100 * time.Millisecond, a, true}, // one token back at 10 qps
		{0, a, false},
		{time.Hour, a, true}, // refill is capped at the burst
		{0, a, true}, {0, a, true}, {0, a, false},
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		if got := l.check(s.src, false) == verdictAllow; got != s.want {
			t.Fatalf("step %d: %s allowed = %v, want %v", i, s.src, got, s.want)
		}
	}
}

// Past the limit, every Slip-th UDP query from a source, starting with the
// first, is slipped and the others dropped; TCP is never slipped.
func TestLimiterSlip(t *testing.T) {
	const over = 12 // queries past the limit
	for _, tt := range []struct {
		slip      int
		wantSlips int
		wantFirst verdict
	}{
		{slip: 0, wantSlips: 0, wantFirst: verdictDrop},
		{slip: 1, wantSlips: 12, wantFirst: verdictSlip},
		{slip: 2, wantSlips: 6, wantFirst: verdictSlip},
		{slip: 3, wantSlips: 4, wantFirst: verdictSlip},
		{slip: 5, wantSlips: 3, wantFirst: verdictSlip}, // 1st, 6th, 11th
	} {
		now := time.Unix(1e9, 0)
		l := newLimiter(RateLimit{QPS: 1, Burst: 1, Slip: tt.slip}, frozen(&now))
		src := netip.MustParseAddr("172.18.0.2")
		if v := l.check(src, false); v != verdictAllow {
			t.Fatalf("slip %d: first query: verdict %d, want allow", tt.slip, v)
		}
		slips := 0
		for i := range over {
			if v := l.check(src, true); v != verdictDrop {
				t.Fatalf("slip %d: TCP query over the limit: verdict %d, want drop", tt.slip, v)
			}
			v := l.check(src, false)
			if i == 0 && v != tt.wantFirst {
				t.Errorf("slip %d: first query over the limit: verdict %d, want %d", tt.slip, v, tt.wantFirst)
			}
			switch v {
			case verdictSlip:
				slips++
			case verdictAllow:
				t.Fatalf("slip %d: query %d over the limit was allowed", tt.slip, i)
			}
		}
		if slips != tt.wantSlips {
			t.Errorf("slip %d: %d of %d UDP queries over the limit slipped, want %d", tt.slip, slips, over, tt.wantSlips)
		}
	}
}

func TestLimiterBoundsSources(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := newLimiter(RateLimit{QPS: 1, Burst: 1}, frozen(&now))
	for i := range 3 * limiterShards * maxSourcesPerShard {
		l.check(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), false)
	}
	for i := range l.shards {
		if n := l.shards[i].buckets.Len(); n > maxSourcesPerShard {
			t.Errorf("shard %d holds %d sources, bound is %d", i, n, maxSourcesPerShard)
		}
	}
}

// sameShard returns n distinct IPv4 sources that fall in one limiter shard.
func sameShard(n int) []netip.Addr {
	var out []netip.Addr
	for i := 0; len(out) < n; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if shardOf(a) == 0 {
			out = append(out, a)
		}
	}
	return out
}

// A full shard forgets the source it saw least recently, and only that one.
func TestLimiterEvictsLeastRecentlySeen(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := newLimiter(RateLimit{QPS: 1, Burst: 1}, frozen(&now)) // frozen: no refill
	srcs := sameShard(maxSourcesPerShard + 1)
	full, extra := srcs[:maxSourcesPerShard], srcs[maxSourcesPerShard]
	for _, a := range full {
		l.check(a, false) // spends its only token
	}
	// srcs[0] is seen again, so srcs[1] is now the least recently seen.
	if v := l.check(srcs[0], false); v == verdictAllow {
		t.Fatal("source with a spent bucket was allowed")
	}
	if v := l.check(extra, false); v != verdictAllow {
		t.Fatalf("new source: verdict %d, want allow", v)
	}
	// srcs[0] and srcs[2] kept their spent buckets; srcs[1] was forgotten
	// and starts again with a full one.
	for _, tt := range []struct {
		src     netip.Addr
		allowed bool
	}{{srcs[0], false}, {srcs[2], false}, {srcs[1], true}} {
		if got := l.check(tt.src, false) == verdictAllow; got != tt.allowed {
			t.Errorf("%s allowed = %v, want %v", tt.src, got, tt.allowed)
		}
	}
}

// A flood from spoofed sources fills the table many times over, but the
// source that really floods keeps querying, so it stays recent and keeps its
// spent bucket: it gets no more than its rate.
func TestLimiterFlooderSurvivesSpoofedFlood(t *testing.T) {
	const (
		qps      = 100
		burst    = 200
		seconds  = 2
		floodQPS = 1000 // the real flooder
		spoofed  = 100  // spoofed sources per flooder query: 200,000 in all
	)
	now := time.Unix(1e9, 0)
	l := newLimiter(RateLimit{QPS: qps, Burst: burst}, frozen(&now))
	flooder := netip.MustParseAddr("192.0.2.1")
	allowed, next := 0, 0
	for range seconds * floodQPS {
		now = now.Add(time.Second / floodQPS)
		for range spoofed {
			l.check(netip.AddrFrom4([4]byte{10, byte(next >> 16), byte(next >> 8), byte(next)}), false)
			next++
		}
		if l.check(flooder, false) == verdictAllow {
			allowed++
		}
	}
	if n := l.shards[shardOf(flooder)].buckets.Len(); n != maxSourcesPerShard {
		t.Errorf("flooder's shard holds %d sources, want it full (%d)", n, maxSourcesPerShard)
	}
	if limit := burst + qps*seconds; allowed > limit {
		t.Errorf("flooder got %d queries through in %d s, more than burst+rate = %d: its bucket was reset", allowed, seconds, limit)
	}
	if allowed < burst {
		t.Errorf("flooder got only %d queries through, less than its burst %d", allowed, burst)
	}
}

// One client at 3,000 queries a second for 10 s, on the defaults, loses
// nothing (it once lost 2%, each loss costing it a 5 s retry).
func TestLimiterDefaultsPassOneBusyClient(t *testing.T) {
	const (
		rate    = 3000
		seconds = 10
	)
	start := time.Unix(1e9, 0)
	now := start
	l := newLimiter(RateLimit{QPS: DefaultRateLimitQPS, Slip: DefaultSlip}, frozen(&now))
	src := netip.MustParseAddr("172.18.0.2")
	for i := range rate * seconds {
		now = start.Add(time.Duration(i) * time.Second / rate)
		if v := l.check(src, false); v != verdictAllow {
			t.Fatalf("query %d at %v: verdict %d, want allow", i, now.Sub(start), v)
		}
	}
}

// The same over a real socket: one client sends 3,000 queries at 3,000 a
// second to a server on the defaults, and every one is answered. Like a stub
// resolver's threads, it has a bounded number of queries in flight, so that a
// busy machine that stalls the server cannot overflow the socket buffers (a
// loss the rate limit has no part in).
func TestOneBusyClientLosesNothing(t *testing.T) {
	const (
		total    = 3000
		batch    = 30                    // queries per tick
		tick     = 10 * time.Millisecond // 30 per 10 ms: 3,000 a second
		inFlight = 100
	)
	s, addr := startServer(t, Config{
		Upstream:  through(t, answerA(1)),
		RateLimit: RateLimit{QPS: DefaultRateLimitQPS, Slip: DefaultSlip}, // as cmd/sidedns sets it
	})
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pkts := make([][]byte, total)
	for i := range pkts {
		m := new(dns.Msg).SetQuestion("web.docker.", dns.TypeA)
		m.Id = uint16(i)
		pkts[i], _ = m.Pack()
	}

	window := make(chan struct{}, inFlight)
	done := make(chan struct{})
	sendErr := make(chan error, 1)
	go func() {
		start := time.Now()
		for i := 0; i < total; i += batch {
			time.Sleep(time.Until(start.Add(time.Duration(i/batch) * tick)))
			for _, p := range pkts[i : i+batch] {
				select {
				case window <- struct{}{}:
				case <-done:
					sendErr <- nil
					return
				}
				if _, err := conn.Write(p); err != nil {
					sendErr <- err
					return
				}
			}
		}
		sendErr <- nil
	}()

	answered := make([]bool, total)
	n := 0
	conn.SetReadDeadline(time.Now().Add(total/batch*tick + 10*time.Second))
	buf := make([]byte, 512)
	for n < total {
		k, err := conn.Read(buf)
		if err != nil {
			break // deadline: the missing ones are reported below
		}
		var r dns.Msg
		if err := r.Unpack(buf[:k]); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if r.Rcode != dns.RcodeSuccess || r.Truncated || len(r.Answer) != 1 || answered[r.Id] {
			t.Fatalf("reply %d: %v", r.Id, &r)
		}
		answered[r.Id] = true
		n++
		<-window
	}
	close(done)
	if err := <-sendErr; err != nil {
		t.Fatalf("send: %v", err)
	}
	if rl := s.Stats.RateLimited.Load(); n != total || rl != 0 {
		t.Errorf("%d of %d queries answered; rate-limited %d, slipped %d", n, total, rl, s.Stats.Slipped.Load())
	}
}

// Over UDP, a slipped query gets an empty TC=1 reply that echoes the question
// and EDNS, and the rest are dropped; all are counted.
func TestSlipOverUDP(t *testing.T) {
	now := time.Unix(1e9, 0)
	s, addr := startServer(t, Config{
		Upstream:  through(t, answerA(1)),
		RateLimit: RateLimit{QPS: 1, Burst: 1, Slip: 2},
		Now:       frozen(&now), // frozen: no refill during the test
	})
	mustQuery(t, addr, "udp", "web.docker.", 0) // spends the bucket
	c := &dns.Client{Net: "udp", Timeout: 300 * time.Millisecond}
	for i, tt := range []struct {
		edns, cd bool
		slipped  bool
	}{
		{edns: true, slipped: true},
		{edns: true},
		{cd: true, slipped: true},
		{},
	} {
		m := new(dns.Msg).SetQuestion("Web.Docker.", dns.TypeAAAA)
		m.CheckingDisabled = tt.cd
		if tt.edns {
			m.SetEdns0(4096, true)
		}
		r, _, err := c.Exchange(m, addr)
		if !tt.slipped {
			if err == nil {
				t.Errorf("query %d should have been dropped, got %v", i, r)
			}
			continue
		}
		if err != nil {
			t.Fatalf("query %d should have been slipped: %v", i, err)
		}
		if r.Id != m.Id || !r.Response || !r.Truncated || !r.RecursionAvailable || !r.RecursionDesired ||
			r.CheckingDisabled != tt.cd || r.Authoritative || r.Rcode != dns.RcodeSuccess {
			t.Errorf("query %d: slipped reply header %+v", i, r.MsgHdr)
		}
		if len(r.Question) != 1 || r.Question[0] != m.Question[0] || len(r.Answer)+len(r.Ns) != 0 {
			t.Errorf("query %d: slipped reply %v, want the question only", i, r)
		}
		if opt := r.IsEdns0(); (opt != nil) != tt.edns || (opt != nil && !opt.Do()) {
			t.Errorf("query %d (EDNS %v): reply OPT %v", i, tt.edns, opt)
		}
	}
	if r := mustQuery(t, addr, "tcp", "web.docker.", 0); r.Rcode != dns.RcodeRefused {
		t.Errorf("query past the limit over TCP: rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	if rl, sl := s.Stats.RateLimited.Load(), s.Stats.Slipped.Load(); rl != 5 || sl != 2 {
		t.Errorf("rate-limited %d, slipped %d; want 5 and 2", rl, sl)
	}
}

// A packet over the limit that is not a query gets nothing, even when its
// turn was to be slipped.
func TestSlipDropsNonQueries(t *testing.T) {
	s, err := New(Config{Listen: []string{"127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	resp := new(dns.Msg).SetQuestion("web.docker.", dns.TypeA)
	resp.Response = true
	respPkt, _ := resp.Pack()
	for name, pkt := range map[string][]byte{
		"short":    {0, 1, 0},
		"response": respPkt,
		"overlong": overlongQuery(),
	} {
		if reply, ok := s.slipReply(nil, pkt, new(dnswire.Query)); ok {
			t.Errorf("%s: slipped reply % x", name, reply)
		}
	}
	if n := s.Stats.Slipped.Load(); n != 0 {
		t.Errorf("Stats.Slipped = %d, want 0", n)
	}
}

// FuzzSlipReply: whatever arrives over the limit, a slipped reply is a
// well-formed empty TC=1 answer to a query miekg/dns can read.
func FuzzSlipReply(f *testing.F) {
	s, err := New(Config{Listen: []string{"127.0.0.1:0"}})
	if err != nil {
		f.Fatal(err)
	}
	for _, m := range []*dns.Msg{
		new(dns.Msg).SetQuestion("web.", dns.TypeA),
		new(dns.Msg).SetQuestion("WEB.app.", dns.TypeAAAA),
	} {
		b, _ := m.Pack()
		f.Add(b)
		m.SetEdns0(1232, true)
		b, _ = m.Pack()
		f.Add(b)
	}
	f.Add(overlongQuery())
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var q dnswire.Query
		reply, ok := s.slipReply(nil, pkt, &q)
		if !ok {
			return
		}
		var req, resp dns.Msg
		if err := req.Unpack(pkt); err != nil {
			t.Fatalf("slipped a packet miekg/dns cannot parse: %v", err)
		}
		if err := resp.Unpack(reply); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if resp.Id != req.Id || !resp.Response || !resp.Truncated || len(resp.Question) != 1 ||
			resp.Question[0] != req.Question[0] || len(resp.Answer)+len(resp.Ns) != 0 ||
			(req.IsEdns0() == nil) != (resp.IsEdns0() == nil) {
			t.Fatalf("reply %v does not slip %v", &resp, &req)
		}
	})
}

func BenchmarkLimiterAllow(b *testing.B) {
	l := newLimiter(RateLimit{QPS: 1e12}, time.Now) // never over the limit
	src := netip.MustParseAddr("172.18.0.2")
	l.check(src, false)
	b.ReportAllocs()
	for b.Loop() {
		if l.check(src, false) != verdictAllow {
			b.Fatal("over the limit")
		}
	}
}

// Many known sources on all cores: the shards keep the locks apart.
func BenchmarkLimiterAllowParallel(b *testing.B) {
	l := newLimiter(RateLimit{QPS: 1e12}, time.Now)
	srcs := make([]netip.Addr, 1024)
	for i := range srcs {
		srcs[i] = netip.AddrFrom4([4]byte{172, 18, byte(i >> 8), byte(i)})
		l.check(srcs[i], false)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.check(srcs[i%len(srcs)], false)
			i++
		}
	})
}

// A spoofed flood: every query from a new source, the table full.
func BenchmarkLimiterNewSources(b *testing.B) {
	l := newLimiter(RateLimit{QPS: 1}, time.Now)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l.check(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), false)
		i++
	}
}
