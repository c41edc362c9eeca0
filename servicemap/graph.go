package servicemap

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/publicsuffix"

	"github.com/sidedns/sidedns/resolver"
)

// Node kinds.
const (
	KindService   = "service"   // a compose service on this host
	KindContainer = "container" // a container outside compose on this host
	KindRemote    = "remote"    // a service or record another cluster host publishes
	KindFile      = "file"      // a service or record of this host's --records-file
	KindHost      = "host"      // a querier the table does not know: the host itself
	KindName      = "name"      // one of our names with no container behind it
	KindExternal  = "external"  // a forwarded name, by registrable domain
)

// Node is one end of an edge.
type Node struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
	// Name is the service for a node with a Project, else the container
	// or record name.
	Name    string `json:"name"`
	Project string `json:"project,omitempty"`
	// Host is the other host's --advertise-addr, for KindRemote.
	Host string `json:"host,omitempty"`
	// Health of a local service or container: healthy, degraded (some
	// replicas are not), unhealthy (none is), or stopped; empty for the
	// other kinds.
	Health string `json:"health,omitempty"`
}

// ownerNode names the node of an answer owner or a querier. Where the
// owner lives is part of the ID: this host's shop/api, the records file's
// and 10.0.0.2's are three nodes.
func ownerNode(o resolver.Owner) Node {
	n := Node{Kind: KindContainer, Name: o.Container}
	local := o.Container
	if o.Service != "" {
		n = Node{Kind: KindService, Name: o.Service, Project: o.Project}
		local = o.Project + "/" + o.Service
	}
	switch o.Host {
	case "":
		n.ID = n.Kind + ":" + local
	case resolver.OriginRecordsFile:
		n.Kind, n.ID = KindFile, KindFile+":"+local
	default:
		n.Kind, n.Host, n.ID = KindRemote, o.Host, KindRemote+":"+o.Host+"/"+local
	}
	return n
}

// nameEnds names both ends of a lookup of name from src.
func (m *Map) nameEnds(src netip.Addr, name string) (from, to Node) {
	if o, ok := m.table.QuerierOf(src); ok {
		from = ownerNode(o)
	} else {
		from = Node{ID: "host:" + src.String(), Kind: KindHost, Name: src.String()}
	}
	if o, ok := m.table.NameOwner(src, name); ok {
		if o == (resolver.Owner{}) {
			return from, Node{ID: "name:" + name, Kind: KindName, Name: name}
		}
		return from, ownerNode(o)
	}
	return from, Node{ID: "external:" + registrable(name), Kind: KindExternal, Name: registrable(name)}
}

// registrable cuts a forwarded name to the part a registrant owns
// (api.github.com: github.com); a name with no public suffix, a typo
// like "paymnts", stays whole.
func registrable(name string) string {
	if d, err := publicsuffix.EffectiveTLDPlusOne(name); err == nil {
		return d
	}
	return name
}

// Counts are the lookups of an edge over a span of time.
type Counts struct {
	Queries  uint64 `json:"queries"`
	NXDomain uint64 `json:"nxdomain"`
	ServFail uint64 `json:"servfail"`
	NoData   uint64 `json:"nodata"`
	Cached   uint64 `json:"cached"`
}

func (c *Counts) add(o Counts) {
	c.Queries += o.Queries
	c.NXDomain += o.NXDomain
	c.ServFail += o.ServFail
	c.NoData += o.NoData
	c.Cached += o.Cached
}

// Failed is the lookups that got no address: NXDOMAIN, SERVFAIL or NODATA.
func (c Counts) Failed() uint64 { return c.NXDomain + c.ServFail + c.NoData }

// Edge is the lookups from one node to another in the window.
type Edge struct {
	From string `json:"from"`
	To   string `json:"to"`
	Counts
	// CacheHitShare is Cached / Queries; Rate is queries per second over
	// the window; Failing says most lookups failed.
	CacheHitShare float64 `json:"cacheHitShare"`
	Rate          float64 `json:"rate"`
	Failing       bool    `json:"failing"`
	// Names are the names asked along the edge, sorted.
	Names []string `json:"names"`
}

// Graph is the map over a window.
type Graph struct {
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
	Bucket string    `json:"bucket"`
	Nodes  []Node    `json:"nodes"`
	Edges  []Edge    `json:"edges"`
	// Series are the whole server's lookups by Step, for the charts.
	Series []Point `json:"series"`
}

// span is the minutes a read covers, first and last included.
type span struct{ first, last int64 }

// window returns the minutes from since (clamped to the window) to now.
func (m *Map) window(since time.Time) (span, time.Time, time.Time) {
	now := m.now()
	last := now.UnixNano() / int64(Bucket)
	first := last - int64(nBuckets-2)
	if !since.IsZero() {
		first = max(first, since.UnixNano()/int64(Bucket))
	}
	first = min(first, last)
	return span{first, last}, time.Unix(0, first*int64(Bucket)).UTC(), now.UTC()
}

// countsOf sums the buckets of p within sp.
func (m *Map) countsOf(p *pair, sp span) Counts {
	var c Counts
	for i := range m.counts {
		b := &m.counts[i][p.slot]
		if mn := b.minute.Load(); mn < sp.first || mn > sp.last {
			continue
		}
		c.Queries += uint64(b.n[cQueries].Load())
		c.NXDomain += uint64(b.n[cNXDomain].Load())
		c.ServFail += uint64(b.n[cServFail].Load())
		c.NoData += uint64(b.n[cNoData].Load())
		c.Cached += uint64(b.n[cCached].Load())
	}
	return c
}

// each calls fn for every pair with lookups in sp, after draining the
// queue so that every lookup recorded so far is seen, and naming the pairs
// again when the table changed.
func (m *Map) each(sp span, fn func(p *pair, c Counts)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.drainLocked()
	if g := m.table.Generation(); g != m.gen {
		m.gen = g
		for i := range m.slots {
			if p := m.slots[i].Load(); p != nil {
				p.from, p.to = m.nameEnds(p.src, p.name)
			}
		}
	}
	for i := range m.slots {
		if p := m.slots[i].Load(); p != nil {
			if c := m.countsOf(p, sp); c.Queries > 0 {
				fn(p, c)
			}
		}
	}
}

// Graph returns the nodes and edges with lookups between since (zero: the
// whole window) and now.
func (m *Map) Graph(since time.Time) Graph {
	sp, from, to := m.window(since)
	g := Graph{From: from, To: to, Bucket: Bucket.String(), Nodes: []Node{}, Edges: []Edge{}, Series: m.Series(since)}
	health := m.health()
	nodes := map[string]Node{}
	type key struct{ from, to string }
	edges := map[key]*Edge{}
	m.each(sp, func(p *pair, c Counts) {
		for _, n := range [2]Node{p.from, p.to} {
			if _, ok := nodes[n.ID]; !ok {
				n.Health = health[n.ID]
				nodes[n.ID] = n
			}
		}
		k := key{p.from.ID, p.to.ID}
		e := edges[k]
		if e == nil {
			e = &Edge{From: k.from, To: k.to}
			edges[k] = e
		}
		e.add(c)
		if !slices.Contains(e.Names, p.name) {
			e.Names = append(e.Names, p.name)
		}
	})
	secs := to.Sub(from).Seconds()
	for _, e := range edges {
		e.CacheHitShare = float64(e.Cached) / float64(e.Queries)
		if secs > 0 {
			e.Rate = float64(e.Queries) / secs
		}
		e.Failing = 2*e.Failed() > e.Queries
		slices.Sort(e.Names)
		g.Edges = append(g.Edges, *e)
	}
	for _, n := range nodes {
		g.Nodes = append(g.Nodes, n)
	}
	slices.SortFunc(g.Nodes, func(a, b Node) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortFunc(g.Edges, func(a, b Edge) int {
		return cmp.Or(cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To))
	})
	return g
}

// observeHealthLocked notes which services and containers have no healthy
// replica now, and since when. Called with mu held.
func (m *Map) observeHealthLocked() map[string]string {
	health := m.health()
	now := m.now()
	for id, h := range health {
		if _, ok := m.unhealthy[id]; !ok && h == "unhealthy" {
			m.unhealthy[id] = now
		}
	}
	for id := range m.unhealthy {
		if health[id] != "unhealthy" {
			delete(m.unhealthy, id)
		}
	}
	return health
}

// health is the health of every local service and container node in the
// table. Records from elsewhere have none the map can see: another host
// publishes only its healthy replicas, and the records file has no checks.
func (m *Map) health() map[string]string {
	topo := m.table.Topology()
	type tally struct{ up, down, running int }
	t := map[string]*tally{}
	for i := range topo.Containers {
		c := &topo.Containers[i]
		if c.Origin != "" {
			continue
		}
		ids := []string{ownerNode(resolver.Owner{Container: c.Name}).ID}
		if c.Service != "" {
			ids = append(ids, ownerNode(resolver.Owner{Service: c.Service, Project: c.Project}).ID)
		}
		for _, id := range ids {
			n := t[id]
			if n == nil {
				n = &tally{}
				t[id] = n
			}
			switch {
			case c.State != resolver.StateRunning:
			case c.Health == resolver.HealthUnhealthy || c.Health == resolver.HealthStarting:
				n.running++
				n.down++
			default:
				n.running++
				n.up++
			}
		}
	}
	out := make(map[string]string, len(t))
	for id, n := range t {
		switch {
		case n.running == 0:
			out[id] = "stopped"
		case n.down == 0:
			out[id] = "healthy"
		case n.up == 0:
			out[id] = "unhealthy"
		default:
			out[id] = "degraded"
		}
	}
	return out
}

// Problems are what the map shows going wrong.
type Problems struct {
	// Failing are names that keep getting NXDOMAIN, with who asks.
	Failing []FailingName `json:"failing"`
	// Unhealthy are services and containers none of whose replicas is healthy.
	Unhealthy []UnhealthyNode `json:"unhealthy"`
	// FailOpen are names answered with unhealthy containers because no
	// healthy one was left.
	FailOpen []FailOpenName `json:"failOpen"`
}

// UnhealthyNode is a service or container with no healthy replica: since
// when the map has seen it so, and whether that was all through the window.
type UnhealthyNode struct {
	Node
	Since  time.Time `json:"since"`
	Always bool      `json:"always"`
}

// FailingName is a name one querier keeps getting NXDOMAIN for.
type FailingName struct {
	Name     string `json:"name"`
	From     Node   `json:"from"`
	NXDomain uint64 `json:"nxdomain"`
	Queries  uint64 `json:"queries"`
}

// FailOpenName is a name of ours that fell open.
type FailOpenName struct {
	Name    string `json:"name"`
	Network string `json:"network"`
}

// failingMin is how many NXDOMAIN answers in the window make a name one
// that "keeps failing" rather than a single miss (a search-list probe).
const failingMin = 3

// Problems returns the problems between since (zero: the whole window) and now.
func (m *Map) Problems(since time.Time) Problems {
	sp, _, _ := m.window(since)
	p := Problems{Failing: []FailingName{}, Unhealthy: []UnhealthyNode{}, FailOpen: []FailOpenName{}}
	type key struct{ name, from string }
	failing := map[key]*FailingName{}
	m.each(sp, func(pr *pair, c Counts) {
		if c.NXDomain == 0 {
			return
		}
		k := key{pr.name, pr.from.ID}
		f := failing[k]
		if f == nil {
			f = &FailingName{Name: pr.name, From: pr.from}
			failing[k] = f
		}
		f.NXDomain += c.NXDomain
		f.Queries += c.Queries
	})
	for _, f := range failing {
		if f.NXDomain >= failingMin && 2*f.NXDomain > f.Queries {
			p.Failing = append(p.Failing, *f)
		}
	}
	slices.SortFunc(p.Failing, func(a, b FailingName) int {
		return cmp.Or(cmp.Compare(b.NXDomain, a.NXDomain), cmp.Compare(a.Name, b.Name), cmp.Compare(a.From.ID, b.From.ID))
	})

	topo, recs := m.table.Records()
	m.mu.Lock()
	health := m.observeHealthLocked()
	seenSince := maps.Clone(m.unhealthy)
	m.mu.Unlock()
	seen := map[string]bool{}
	for i := range topo.Containers {
		c := &topo.Containers[i]
		if c.Origin != "" {
			continue // no health: see health
		}
		n := ownerNode(resolver.Owner{Service: c.Service, Project: c.Project, Container: c.Name})
		if t, ok := seenSince[n.ID]; ok && !seen[n.ID] && health[n.ID] == "unhealthy" {
			n.Health = "unhealthy"
			p.Unhealthy = append(p.Unhealthy, UnhealthyNode{Node: n, Since: t.UTC(), Always: !t.After(m.now().Add(-Window))})
		}
		seen[n.ID] = true
	}
	slices.SortFunc(p.Unhealthy, func(a, b UnhealthyNode) int { return cmp.Compare(a.ID, b.ID) })
	for _, r := range recs {
		if r.FailOpen {
			p.FailOpen = append(p.FailOpen, FailOpenName{Name: r.Name, Network: r.Network})
		}
	}
	return p
}

// ParseSince reads the since parameter: a duration back from now ("5m"),
// an RFC 3339 time, or empty for the whole window.
func (m *Map) ParseSince(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, true
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return m.now().Add(-d), true
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, true
	}
	return time.Time{}, false
}
