package dnsserver

import (
	"bytes"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sidedns/sidedns/resolver"
)

func realResolver() *resolver.Resolver {
	r := resolver.New(resolver.Options{})
	r.Publish(resolver.Topology{Containers: []resolver.Container{{
		ID: "0123456789ab0123456789ab0123456789ab0123456789ab0123456789abcdef", Name: "web",
		Endpoints: []resolver.Endpoint{{NetworkName: "app", IPv4: netip.MustParseAddr("172.18.0.2")}},
	}}})
	return r
}

// queryCounts gathers sidedns_queries_total as "type/rcode/source" -> count.
func queryCounts(t *testing.T, s *Server) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(s)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "sidedns_queries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var key []string
			for _, l := range m.GetLabel() {
				key = append(key, l.GetValue())
			}
			out[key[1]+"/"+key[0]+"/"+key[2]] = m.GetCounter().GetValue() // labels come sorted: rcode, source, type
		}
	}
	return out
}

// Local names and cache hits are answered and counted by source, over UDP
// and TCP alike.
func TestFastPathAndQueryMetrics(t *testing.T) {
	up := answerA(1)
	s, addr := startServer(t, Config{Local: realResolver(), Upstream: cached(t, up, 0)})

	for _, network := range []string{"udp", "udp", "tcp"} {
		r := mustQuery(t, addr, network, "WEB.", 0)
		if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "172.18.0.2" || !r.Authoritative {
			t.Fatalf("%s local answer: %v", network, r)
		}
		if r.Question[0].Name != "WEB." {
			t.Fatalf("question case lost: %q", r.Question[0].Name)
		}
	}
	for range 3 {
		if r := mustQuery(t, addr, "udp", "Example.TEST.", 1232); len(r.Answer) != 1 || r.Question[0].Name != "Example.TEST." {
			t.Fatalf("forwarded answer: %v", r)
		}
	}
	if n := up.calls.Load(); n != 1 {
		t.Fatalf("upstream asked %d times, want 1 (then cache hits)", n)
	}
	got := queryCounts(t, s)
	want := map[string]float64{
		"local/NOERROR/A":    3,
		"upstream/NOERROR/A": 1,
		"cache/NOERROR/A":    2,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("queries_total{%s} = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	if s.Stats.Queries.Load() != 6 {
		t.Errorf("Stats.Queries = %d, want 6", s.Stats.Queries.Load())
	}
}

func TestMetricsDescribeMatchesCollect(t *testing.T) {
	s, addr := startServer(t, Config{Local: realResolver(), Upstream: through(t, answerA(1)), Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}})
	mustQuery(t, addr, "udp", "web.", 0) // refused: not on the allow list
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	for _, n := range []string{"sidedns_queries_total", "sidedns_query_duration_seconds", "sidedns_queries_refused_total"} {
		if !slices.Contains(names, n) {
			t.Errorf("metric %s missing from %v", n, names)
		}
	}
	if got := queryCounts(t, s)["server/REFUSED/A"]; got != 1 {
		t.Errorf("refused query counted %v times under source=server", got)
	}
}

// A question name over 255 octets once crashed the cache's wire path; now it
// gets FORMERR and the server keeps answering.
func TestOverlongNameIsDropped(t *testing.T) {
	core, logs := observer.New(zap.ErrorLevel)
	s, addr := startServer(t, Config{Local: realResolver(), Upstream: cached(t, answerA(1), 0), Logger: zap.New(core)})
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(overlongQuery()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the FORMERR count", func() bool { return s.Stats.FormErr.Load() == 1 })
	mustQuery(t, addr, "udp", "web.", 0)
	if logs.Len() > 0 {
		t.Fatalf("the server logged an error (a recovered panic?): %s", logs.All()[0].Message)
	}
}

// Sources outside the allow list are rate-limited too: REFUSED is a reply,
// and a spoofed flood must not be reflected at full rate.
func TestRefusedIsRateLimited(t *testing.T) {
	now := time.Unix(1e9, 0)
	s, addr := startServer(t, Config{
		Upstream:  through(t, answerA(1)),
		Allow:     []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
		RateLimit: RateLimit{QPS: 1, Burst: 2},
		Now:       func() time.Time { return now }, // frozen: no refill
	})
	for i := range 2 {
		if r := mustQuery(t, addr, "udp", "web.", 0); r.Rcode != dns.RcodeRefused {
			t.Fatalf("query %d: rcode %s, want REFUSED", i, dns.RcodeToString[r.Rcode])
		}
	}
	c := &dns.Client{Net: "udp", Timeout: 300 * time.Millisecond}
	if r, _, err := c.Exchange(new(dns.Msg).SetQuestion("web.", dns.TypeA), addr); err == nil {
		t.Fatalf("refused source past its rate got a reply: %v", r)
	}
	if s.Stats.Refused.Load() != 2 || s.Stats.RateLimited.Load() != 1 {
		t.Fatalf("refused %d, rate-limited %d; want 2 and 1", s.Stats.Refused.Load(), s.Stats.RateLimited.Load())
	}
}

// FuzzAnswerPaths feeds arbitrary packets through the rules with the real
// table and a warm cache, as UDP and as TCP: no panic, no error logged,
// every reply unpacks, fits its limit and answers the query's ID, and the
// two transports give the same bytes whenever UDP did not truncate.
func FuzzAnswerPaths(f *testing.F) {
	cache := cached(f, answerA(3), 0)
	core, logs := observer.New(zap.ErrorLevel)
	s, err := New(Config{Listen: []string{"127.0.0.1:0"}, Local: realResolver(), Upstream: cache, Logger: zap.New(core)})
	if err != nil {
		f.Fatal(err)
	}
	for _, m := range []*dns.Msg{
		new(dns.Msg).SetQuestion("web.", dns.TypeA),
		new(dns.Msg).SetQuestion("WEB.app.", dns.TypeAAAA),
		new(dns.Msg).SetQuestion("web.docker.", dns.TypeSRV),
		new(dns.Msg).SetQuestion("nope.docker.", dns.TypeA),
		new(dns.Msg).SetQuestion("2.0.18.172.in-addr.arpa.", dns.TypePTR),
		new(dns.Msg).SetQuestion("example.test.", dns.TypeA),
	} {
		b, _ := m.Pack()
		f.Add(b)
		m.SetEdns0(1232, true)
		b, _ = m.Pack()
		f.Add(b)
	}
	f.Add(overlongQuery())
	for _, tt := range ruleCases(f) {
		f.Add(tt.pkt)
	}
	loop := netip.MustParseAddr("127.0.0.1")
	// Warm the cache so the hit path is reachable.
	warm := &request{src: loop}
	b, _ := new(dns.Msg).SetQuestion("example.test.", dns.TypeA).Pack()
	if _, next := s.respond(nil, b, warm); next == stepForward {
		s.forward(nil, warm)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var replies [2][]byte
		for i, tcp := range []bool{false, true} {
			r := &request{src: loop, tcp: tcp}
			out, next := s.respond(nil, pkt, r)
			switch next {
			case stepDrop:
				return
			case stepForward:
				out = s.forward(out, r)
			}
			if logs.Len() > 0 {
				t.Fatalf("logged an error: %s", logs.TakeAll()[0].Message)
			}
			var m dns.Msg
			if err := m.Unpack(out); err != nil {
				t.Fatalf("tcp %v: reply does not unpack: %v\n%x", tcp, err, out)
			}
			if m.Id != r.q.ID || !m.Response {
				t.Fatalf("reply %v does not answer ID %d", m.MsgHdr, r.q.ID)
			}
			if !tcp && len(out) > int(r.q.UDPSize) {
				t.Fatalf("udp reply of %d bytes, limit %d", len(out), r.q.UDPSize)
			}
			replies[i] = out
		}
		// Answers rotate between calls: compare the header and question only
		// for answers with several records.
		if replies[0][2]&0x02 == 0 && !bytes.Equal(replies[0][:4], replies[1][:4]) {
			t.Fatalf("udp and tcp headers differ:\n%x\n%x", replies[0], replies[1])
		}
	})
}
