package servicemap

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/dnswire"
	"github.com/sidedns/sidedns/resolver"
)

// clock is an injected clock that tests move by hand.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 11, 30, 10, 0, 30, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func ep(network, ip string, aliases ...string) resolver.Endpoint {
	return resolver.Endpoint{NetworkID: "id-" + network, NetworkName: network, IPv4: netip.MustParseAddr(ip), Aliases: aliases}
}

// shop is a compose project of three services and a loose container.
func shop() resolver.Topology {
	return resolver.Topology{
		Networks: []resolver.Network{{ID: "id-shop", Name: "shop_default", Subnets: []netip.Prefix{netip.MustParsePrefix("172.30.0.0/16")}}},
		Containers: []resolver.Container{
			{ID: "w1", Name: "shop-web-1", Project: "shop", Service: "web", Endpoints: []resolver.Endpoint{ep("shop_default", "172.30.0.2", "web")}},
			{ID: "a1", Name: "shop-api-1", Project: "shop", Service: "api", Health: resolver.HealthHealthy, Endpoints: []resolver.Endpoint{ep("shop_default", "172.30.0.3", "api")}},
			{ID: "a2", Name: "shop-api-2", Project: "shop", Service: "api", Health: resolver.HealthUnhealthy, Endpoints: []resolver.Endpoint{ep("shop_default", "172.30.0.4", "api")}},
			{ID: "d1", Name: "shop-db-1", Project: "shop", Service: "db", Health: resolver.HealthUnhealthy, Endpoints: []resolver.Endpoint{ep("shop_default", "172.30.0.5", "db")}},
			{ID: "t1", Name: "tools", Endpoints: []resolver.Endpoint{ep("shop_default", "172.30.0.9")}},
		},
	}
}

var (
	web   = netip.MustParseAddr("172.30.0.2")
	api   = netip.MustParseAddr("172.30.0.3")
	tools = netip.MustParseAddr("172.30.0.9")
	host  = netip.MustParseAddr("127.0.0.1")
)

func newMap(t testing.TB) (*Map, *clock) {
	t.Helper()
	r := resolver.New(resolver.Options{})
	r.Publish(shop())
	c := newClock()
	return New(r, c.now), c
}

func query(t testing.TB, name string) *dnswire.Query {
	t.Helper()
	msg := new(dns.Msg)
	msg.SetQuestion(dns.Fqdn(name), dns.TypeA)
	pkt, err := msg.Pack()
	if err != nil {
		t.Fatal(err)
	}
	var q dnswire.Query
	if err := dnswire.Parse(pkt, &q); err != nil {
		t.Fatal(err)
	}
	return &q
}

type lookup struct {
	src     netip.Addr
	name    string
	rcode   int
	answers int
	cached  bool
	times   int
}

func (m *Map) send(t testing.TB, at time.Time, ls ...lookup) {
	for _, l := range ls {
		q := query(t, l.name)
		for range max(l.times, 1) {
			via := "local"
			if l.cached {
				via = "cache"
			}
			m.Record(at, l.src, q, l.rcode, l.answers, via, 0)
		}
	}
}

func edgeMap(g Graph) map[string]Counts {
	out := map[string]Counts{}
	for _, e := range g.Edges {
		out[e.From+" -> "+e.To] = e.Counts
	}
	return out
}

func TestGraphEdges(t *testing.T) {
	tests := []struct {
		name    string
		lookups []lookup
		want    map[string]Counts
	}{
		{"a service asks another by its compose name", []lookup{{src: web, name: "api", answers: 1, times: 3}},
			map[string]Counts{"service:shop/web -> service:shop/api": {Queries: 3}}},
		{"names of one service make one edge", []lookup{
			{src: web, name: "api", answers: 1},
			{src: web, name: "api.shop.docker", answers: 2, cached: false},
			{src: web, name: "shop-api-1", answers: 1}},
			map[string]Counts{"service:shop/web -> service:shop/api": {Queries: 3}}},
		{"external names are cut to the registrable domain", []lookup{
			{src: api, name: "api.github.com", answers: 1, cached: true},
			{src: api, name: "codeload.github.com", answers: 1},
			{src: api, name: "www.example.co.uk", answers: 1}},
			map[string]Counts{
				"service:shop/api -> external:github.com":    {Queries: 2, Cached: 1},
				"service:shop/api -> external:example.co.uk": {Queries: 1},
			}},
		{"failures are counted by kind", []lookup{
			{src: web, name: "paymnts", rcode: dns.RcodeNameError, times: 4},
			{src: web, name: "db", answers: 0},
			{src: web, name: "db", rcode: dns.RcodeServerFailure}},
			map[string]Counts{
				"service:shop/web -> external:paymnts": {Queries: 4, NXDomain: 4},
				"service:shop/web -> service:shop/db":  {Queries: 2, NoData: 1, ServFail: 1},
			}},
		{"a container outside compose and the host", []lookup{
			{src: tools, name: "db", answers: 1},
			{src: host, name: "nosuch.docker", rcode: dns.RcodeNameError}},
			map[string]Counts{
				"container:tools -> service:shop/db":   {Queries: 1},
				"host:127.0.0.1 -> name:nosuch.docker": {Queries: 1, NXDomain: 1},
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, c := newMap(t)
			m.send(t, c.now(), tc.lookups...)
			got := edgeMap(m.Graph(time.Time{}))
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("edges\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestGraphNodesAndShares(t *testing.T) {
	m, c := newMap(t)
	m.send(t, c.now(),
		lookup{src: web, name: "api", answers: 1, cached: false, times: 3},
		lookup{src: web, name: "api", answers: 1, cached: true},
		lookup{src: api, name: "db", rcode: dns.RcodeServerFailure, times: 3},
		lookup{src: api, name: "db", answers: 1},
	)
	g := m.Graph(time.Time{})
	health := map[string]string{}
	for _, n := range g.Nodes {
		health[n.ID] = n.Health
	}
	want := map[string]string{"service:shop/web": "healthy", "service:shop/api": "degraded", "service:shop/db": "unhealthy"}
	if fmt.Sprint(health) != fmt.Sprint(want) {
		t.Errorf("node health %v, want %v", health, want)
	}
	for _, e := range g.Edges {
		switch e.To {
		case "service:shop/api":
			if e.CacheHitShare != 0.25 || e.Failing {
				t.Errorf("web -> api: cache share %v failing %v, want 0.25 false", e.CacheHitShare, e.Failing)
			}
		case "service:shop/db":
			if !e.Failing {
				t.Errorf("api -> db: 3 of 4 failed but not failing")
			}
		}
	}
}

// remote is a record another host (or the records file) adds to the
// table, as cmd/sidedns's layers do: answered only under the zone.
func remote(origin, name, project, service, ip string) resolver.Container {
	return resolver.Container{ID: origin + "/" + name, Name: name, Project: project, Service: service, Origin: origin,
		Endpoints: []resolver.Endpoint{{NetworkName: origin, IPv4: netip.MustParseAddr(ip)}}}
}

// Another host's service is a node of that host, apart from a local
// service of the same name; records-file entries are nodes of their own.
func TestGraphRemoteOwners(t *testing.T) {
	topo := shop()
	topo.Containers = append(topo.Containers,
		remote(resolver.OriginRecordsFile, "ledger", "", "", "10.8.0.1"),
		remote(resolver.OriginRecordsFile, "pay-1", "pay", "gateway", "10.8.0.2"),
		remote("10.0.0.2", "b-api-1", "shop", "api", "10.9.0.5"),
		remote("10.0.0.2", "b-cart-1", "shop", "cart", "10.9.0.6"),
		remote("10.0.0.3", "c-db", "", "", "10.9.0.7"),
	)
	r := resolver.New(resolver.Options{})
	r.Publish(topo)
	c := newClock()
	m := New(r, c.now)
	m.send(t, c.now(),
		lookup{src: web, name: "api", answers: 1, times: 2},
		lookup{src: web, name: "api.shop.docker", answers: 3}, // local replicas answer first
		lookup{src: web, name: "b-api-1.docker", answers: 1, times: 3},
		lookup{src: web, name: "cart.shop.docker", answers: 1, times: 4},
		lookup{src: api, name: "c-db.docker", answers: 1},
		lookup{src: api, name: "ledger.docker", answers: 1, times: 2},
		lookup{src: api, name: "gateway.pay.docker", answers: 1},
	)
	g := m.Graph(time.Time{})
	want := map[string]Counts{
		"service:shop/web -> service:shop/api":          {Queries: 3},
		"service:shop/web -> remote:10.0.0.2/shop/api":  {Queries: 3},
		"service:shop/web -> remote:10.0.0.2/shop/cart": {Queries: 4},
		"service:shop/api -> remote:10.0.0.3/c-db":      {Queries: 1},
		"service:shop/api -> file:ledger":               {Queries: 2},
		"service:shop/api -> file:pay/gateway":          {Queries: 1},
	}
	if got := edgeMap(g); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("edges\n got %v\nwant %v", got, want)
	}
	wantNodes := map[string]Node{
		"service:shop/web":          {ID: "service:shop/web", Kind: KindService, Name: "web", Project: "shop", Health: "healthy"},
		"service:shop/api":          {ID: "service:shop/api", Kind: KindService, Name: "api", Project: "shop", Health: "degraded"},
		"remote:10.0.0.2/shop/api":  {ID: "remote:10.0.0.2/shop/api", Kind: KindRemote, Name: "api", Project: "shop", Host: "10.0.0.2"},
		"remote:10.0.0.2/shop/cart": {ID: "remote:10.0.0.2/shop/cart", Kind: KindRemote, Name: "cart", Project: "shop", Host: "10.0.0.2"},
		"remote:10.0.0.3/c-db":      {ID: "remote:10.0.0.3/c-db", Kind: KindRemote, Name: "c-db", Host: "10.0.0.3"},
		"file:ledger":               {ID: "file:ledger", Kind: KindFile, Name: "ledger"},
		"file:pay/gateway":          {ID: "file:pay/gateway", Kind: KindFile, Name: "gateway", Project: "pay"},
	}
	if len(g.Nodes) != len(wantNodes) {
		t.Errorf("%d nodes, want %d: %+v", len(g.Nodes), len(wantNodes), g.Nodes)
	}
	for _, n := range g.Nodes {
		if n != wantNodes[n.ID] {
			t.Errorf("node %+v, want %+v", n, wantNodes[n.ID])
		}
	}
}

func TestWindow(t *testing.T) {
	tests := []struct {
		name  string
		ages  []time.Duration // how long ago each lookup was
		since string
		want  uint64
	}{
		{"all within the window", []time.Duration{0, time.Minute, 10 * time.Minute}, "", 3},
		{"older than 15 minutes is gone", []time.Duration{0, 14 * time.Minute, 16 * time.Minute, time.Hour}, "", 2},
		{"since cuts by minute", []time.Duration{0, 2 * time.Minute, 5 * time.Minute}, "3m", 2},
		{"since beyond the window is the window", []time.Duration{0, 20 * time.Minute}, "1h", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, c := newMap(t)
			end := c.now()
			c.advance(-2 * time.Hour)
			for i := len(tc.ages) - 1; i >= 0; i-- { // oldest first, as the clock runs
				m.send(t, end.Add(-tc.ages[i]), lookup{src: web, name: "api", answers: 1})
			}
			c.ns.Store(end.UnixNano())
			since, ok := m.ParseSince(tc.since)
			if !ok {
				t.Fatalf("since %q did not parse", tc.since)
			}
			var got uint64
			for _, e := range m.Graph(since).Edges {
				got += e.Queries
			}
			if got != tc.want {
				t.Errorf("queries in window = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestBucketReuse(t *testing.T) {
	// The same bucket slot 16 minutes later starts from zero.
	m, c := newMap(t)
	m.send(t, c.now(), lookup{src: web, name: "api", answers: 1, times: 5})
	c.advance(time.Duration(nBuckets) * Bucket)
	m.send(t, c.now(), lookup{src: web, name: "api", answers: 1})
	if got := m.Graph(time.Time{}).Edges[0].Queries; got != 1 {
		t.Errorf("queries = %d after the bucket came round again, want 1", got)
	}
}

func TestEvictsLeastRecentlyUsed(t *testing.T) {
	m, c := newMap(t)
	const extra = 5
	for i := range MaxEdges + extra {
		at := c.now().Add(time.Duration(i) * time.Millisecond)
		if i == MaxEdges-1 { // the first name is used again, late: it stays
			m.send(t, at, lookup{src: web, name: "n0.example.com", answers: 1})
		}
		m.send(t, at, lookup{src: web, name: "n" + strconv.Itoa(i) + ".example.com", answers: 1})
		if i%500 == 0 {
			m.Stats() // let the writer keep up, as Run would
		}
	}
	st := m.Stats()
	if st.Edges != MaxEdges || st.Evictions != extra || st.Dropped != 0 {
		t.Fatalf("stats %+v, want %d edges, %d evictions, 0 dropped", st, MaxEdges, extra)
	}
	names := map[string]bool{}
	for _, e := range m.Graph(time.Time{}).Edges {
		for _, n := range e.Names {
			names[n] = true
		}
	}
	for i, want := range []bool{true, false, false, false, false, false, true, true} {
		if n := "n" + strconv.Itoa(i) + ".example.com"; names[n] != want {
			t.Errorf("%s kept = %v, want %v", n, names[n], want)
		}
	}
}

func TestProblems(t *testing.T) {
	m, c := newMap(t)
	m.send(t, c.now(),
		lookup{src: web, name: "paymnts", rcode: dns.RcodeNameError, times: 7},
		lookup{src: api, name: "paymnts", rcode: dns.RcodeNameError, times: 2}, // not "keeps failing"
		lookup{src: web, name: "db", answers: 1},
	)
	p := m.Problems(time.Time{})
	if len(p.Failing) != 1 || p.Failing[0].Name != "paymnts" || p.Failing[0].From.ID != "service:shop/web" || p.Failing[0].NXDomain != 7 {
		t.Errorf("failing = %+v, want paymnts from web 7 times", p.Failing)
	}
	var unhealthy []string
	for _, n := range p.Unhealthy {
		unhealthy = append(unhealthy, n.ID)
	}
	if fmt.Sprint(unhealthy) != "[service:shop/db]" {
		t.Errorf("unhealthy = %v, want [service:shop/db]", unhealthy)
	}
	if p.Unhealthy[0].Always {
		t.Errorf("db unhealthy all through the window when the map has only just seen it")
	}
	c.advance(Window + time.Minute)
	if p := m.Problems(time.Time{}); len(p.Unhealthy) != 1 || !p.Unhealthy[0].Always || !p.Unhealthy[0].Since.Equal(c.now().Add(-Window-time.Minute)) {
		t.Errorf("after %v: unhealthy %+v, want db, all through the window", Window+time.Minute, p.Unhealthy)
	}
	if len(p.FailOpen) == 0 || p.FailOpen[0].Name != "db" {
		t.Errorf("fail open = %+v, want db first", p.FailOpen)
	}
}

func TestRecordAllocatesNothing(t *testing.T) {
	m, c := newMap(t)
	q := query(t, "api")
	at := c.now()
	m.Record(at, web, q, dns.RcodeSuccess, 1, "local", 0)
	m.Stats()
	if n := testing.AllocsPerRun(1000, func() { m.Record(at, web, q, dns.RcodeSuccess, 1, "local", 0) }); n != 0 {
		t.Errorf("Record allocates %v times per call, want 0", n)
	}
	// A first sighting allocates nothing on the query path either: it is
	// queued by value.
	fresh := query(t, "fresh.example.com")
	if n := testing.AllocsPerRun(1, func() { m.Record(at, api, fresh, dns.RcodeSuccess, 1, "local", 0) }); n != 0 {
		t.Errorf("a first sighting allocates %v times, want 0", n)
	}
}

func TestConcurrentRecording(t *testing.T) {
	m, c := newMap(t)
	m.Record(c.now(), web, query(t, "api"), dns.RcodeSuccess, 1, "local", 0)
	m.Stats() // inserted, so that no count of it waits in the queue
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	const workers, each = 4, 2000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := query(t, "api")
			for i := range each {
				m.Record(c.now(), web, q, dns.RcodeSuccess, 1, "local", 0)
				if i%200 == 0 {
					m.Record(c.now(), api, query(t, "w"+strconv.Itoa(w)+"-"+strconv.Itoa(i)+".example.com"), dns.RcodeSuccess, 1, "local", 0)
				}
			}
		}()
	}
	for range 10 {
		m.Graph(time.Time{})
	}
	wg.Wait()
	cancel()
	<-done
	var webAPI uint64
	for _, e := range m.Graph(time.Time{}).Edges {
		if e.From == "service:shop/web" {
			webAPI += e.Queries
		}
	}
	if webAPI != workers*each+1 {
		t.Errorf("web -> api counted %d, want %d", webAPI, workers*each+1)
	}
}

func BenchmarkRecord(b *testing.B) {
	m, c := newMap(b)
	q := query(b, "api")
	at := c.now()
	m.Record(at, web, q, dns.RcodeSuccess, 1, "local", 0)
	m.Stats()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Record(at, web, q, dns.RcodeSuccess, 1, "local", 0)
		}
	})
}

// A container that looks names up before sidedns has seen it start is
// named once the table knows it.
func TestRenamesWhenTheTableChanges(t *testing.T) {
	r := resolver.New(resolver.Options{})
	topo := shop()
	late := topo.Containers[0] // web
	topo.Containers = topo.Containers[1:]
	r.Publish(topo)
	c := newClock()
	m := New(r, c.now)
	m.send(t, c.now(), lookup{src: web, name: "api", answers: 1})
	if got := edgeMap(m.Graph(time.Time{})); fmt.Sprint(got) != fmt.Sprint(map[string]Counts{"host:172.30.0.2 -> service:shop/api": {Queries: 1}}) {
		t.Fatalf("before web is known: %v", got)
	}
	topo.Containers = append(topo.Containers, late)
	r.Publish(topo)
	if got := edgeMap(m.Graph(time.Time{})); fmt.Sprint(got) != fmt.Sprint(map[string]Counts{"service:shop/web -> service:shop/api": {Queries: 1}}) {
		t.Fatalf("after web is known: %v", got)
	}
}

// A flood of unique names is admitted up to newPairsPerSecond a second; the
// rest are counted as dropped, and the next second admits new pairs again.
func TestNewPairBudget(t *testing.T) {
	m, c := newMap(t)
	for i := range newPairsPerSecond + 10 {
		m.Record(c.now(), web, query(t, "flood"+strconv.Itoa(i)+".example.com"), dns.RcodeSuccess, 1, "upstream", 0)
		if i%500 == 0 {
			m.Stats() // let the writer keep up, as Run would
		}
	}
	if st := m.Stats(); st.Edges != newPairsPerSecond || st.Dropped != 10 {
		t.Fatalf("stats %+v, want %d edges and 10 dropped", st, newPairsPerSecond)
	}
	c.advance(time.Second)
	m.Record(c.now(), web, query(t, "later.example.com"), dns.RcodeSuccess, 1, "upstream", 0)
	if st := m.Stats(); st.Edges != newPairsPerSecond+1 {
		t.Fatalf("stats %+v, want a new pair admitted in the next second", st)
	}
}

// BenchmarkRecordSpread records lookups of 1,000 names in turn, as the
// bench's local scenario asks them, so that each one finds its pair out of
// the CPU's nearest caches rather than the one hot pair of BenchmarkRecord.
func BenchmarkRecordSpread(b *testing.B) {
	m, c := newMap(b)
	at := c.now()
	qs := make([]*dnswire.Query, 1000)
	for i := range qs {
		qs[i] = query(b, fmt.Sprintf("name-%04d.example", i))
		m.Record(at, web, qs[i], dns.RcodeSuccess, 1, "local", 0)
		if i%500 == 499 { // the budget of new pairs is per second
			at = at.Add(time.Second)
		}
	}
	m.Stats() // inserts the first sightings
	if n := m.Stats().Edges; n < 1000 {
		b.Fatalf("%d edges, want 1000", n)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		m.Record(at, web, qs[i%len(qs)], dns.RcodeSuccess, 1, "local", 0)
	}
}
