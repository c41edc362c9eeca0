package dnsserver

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidedns/sidedns/resolver"
	"github.com/sidedns/sidedns/upstream"
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

// Local names and cache hits take the allocation-free UDP path; both paths
// give the same answers and are counted by source.
func TestFastPathAndQueryMetrics(t *testing.T) {
	up := answerA(1)
	cache, err := upstream.NewCache(up, upstream.CacheConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	s, addr := startServer(t, Config{Local: realResolver(), Upstream: cache})

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
	s, addr := startServer(t, Config{Local: realResolver(), Upstream: answerA(1), Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}})
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
