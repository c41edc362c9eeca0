package ops_test

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/dnswire"
	"github.com/sidedns/sidedns/ops"
	"github.com/sidedns/sidedns/resolver"
	"github.com/sidedns/sidedns/servicemap"
)

var webAddr = netip.MustParseAddr("172.20.0.2")

func parse(t testing.TB, pkt []byte) *dnswire.Query {
	t.Helper()
	var q dnswire.Query
	if err := dnswire.Parse(pkt, &q); err != nil {
		t.Fatal(err)
	}
	return &q
}

// lookups records n lookups of name from src into m, as the DNS server would.
func lookups(t testing.TB, m *servicemap.Map, at time.Time, src, name string, rcode, n int) {
	t.Helper()
	pkt, err := new(dns.Msg).SetQuestion(dns.Fqdn(name), dns.TypeA).Pack()
	if err != nil {
		t.Fatal(err)
	}
	q := parse(t, pkt)
	answers := 1
	if rcode != dns.RcodeSuccess {
		answers = 0
	}
	for range n {
		m.Record(at, netip.MustParseAddr(src), q, rcode, answers, "local", 0)
	}
}

func newServiceMap(t testing.TB) (*servicemap.Map, *resolver.Resolver) {
	res := resolver.New(resolver.Options{})
	res.Publish(fixtureTopology())
	return servicemap.New(res, time.Now), res
}

func TestGraphAndProblemsAPI(t *testing.T) {
	m, _ := newServiceMap(t)
	now := time.Now()
	lookups(t, m, now, "172.20.0.2", "db", dns.RcodeSuccess, 4)
	lookups(t, m, now, "172.20.0.2", "paymnts", dns.RcodeNameError, 5)
	lookups(t, m, now.Add(-10*time.Minute), "172.20.0.2", "api.github.com", dns.RcodeSuccess, 2)
	_, base := startServer(t, ops.Config{ServiceMap: m})

	tests := []struct {
		query string
		want  map[string]uint64 // "from -> to": queries
	}{
		{"", map[string]uint64{
			"service:shop/web -> container:db":        4,
			"service:shop/web -> external:paymnts":    5,
			"service:shop/web -> external:github.com": 2,
		}},
		{"?since=5m", map[string]uint64{
			"service:shop/web -> container:db":     4,
			"service:shop/web -> external:paymnts": 5,
		}},
	}
	for _, tc := range tests {
		code, h, body := get(t, base+"/api/v1/graph"+tc.query)
		if code != http.StatusOK || h.Get("Content-Type") != "application/json" {
			t.Fatalf("graph%s: %d %s", tc.query, code, h.Get("Content-Type"))
		}
		var g servicemap.Graph
		if err := json.Unmarshal([]byte(body), &g); err != nil {
			t.Fatalf("graph%s: %v\n%s", tc.query, err, body)
		}
		got := map[string]uint64{}
		for _, e := range g.Edges {
			got[e.From+" -> "+e.To] = e.Queries
		}
		if len(got) != len(tc.want) {
			t.Errorf("graph%s edges %v, want %v", tc.query, got, tc.want)
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("graph%s %s: %d queries, want %d", tc.query, k, got[k], v)
			}
		}
		if len(g.Series) == 0 {
			t.Errorf("graph%s has no chart series", tc.query)
		}
	}

	code, _, body := get(t, base+"/api/v1/problems")
	var p servicemap.Problems
	if err := json.Unmarshal([]byte(body), &p); code != http.StatusOK || err != nil {
		t.Fatalf("problems: %d %v\n%s", code, err, body)
	}
	if len(p.Failing) != 1 || p.Failing[0].Name != "paymnts" || p.Failing[0].From.Name != "web" || p.Failing[0].NXDomain != 5 {
		t.Errorf("failing %+v, want paymnts asked by web, 5 NXDOMAIN", p.Failing)
	}

	if code, _, _ := get(t, base+"/api/v1/graph?since=yesterday"); code != http.StatusBadRequest {
		t.Errorf("since=yesterday: %d, want 400", code)
	}
}

func TestGraphOffIsNotFound(t *testing.T) {
	_, base := startServer(t, ops.Config{})
	for _, path := range []string{"/api/v1/graph", "/api/v1/problems"} {
		if code, _, _ := get(t, base+path); code != http.StatusNotFound {
			t.Errorf("%s without a map: %d, want 404", path, code)
		}
	}
}
