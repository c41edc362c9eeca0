// Package servicemap turns the lookups sidedns answers into a map of who
// depends on whom: an edge runs from the container that asked (shown as its
// compose service) to the owner of the answer (a local service or container,
// a service another cluster host publishes, a record of --records-file, or an
// external domain cut to its registrable part), with per-minute counts over a
// rolling window.
//
// Recording runs on the query path, so it takes no lock and allocates
// nothing: a query whose (source, name) pair is already in the table only
// adds to atomic counters. The first lookup of a pair is queued, by value,
// to the writer, which names both ends (off the query path, where it may
// allocate and ask the resolver) and inserts it, evicting the least recently
// used of a sample of pairs when the table is full.
package servicemap

import (
	"context"
	"encoding/binary"
	"hash/maphash"
	"math/bits"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidedns/sidedns/dnswire"
	"github.com/sidedns/sidedns/resolver"
)

const (
	// MaxEdges bounds the table: (source, name) pairs, each a few hundred
	// bytes, so some 5 MB at most.
	MaxEdges = 10000
	// Window is how far back the counts go, in Bucket steps.
	Window = 15 * time.Minute
	Bucket = time.Minute
	// nBuckets is one more than the window holds, so the bucket being
	// reused is never one a reader still sums.
	nBuckets = int(Window/Bucket) + 1
	// maxIndex is the open-addressing index at its largest: a power of
	// two, at least 1.5 times MaxEdges, so probes stay short. It starts at
	// minIndex and doubles as pairs come, so that the few hundred pairs
	// of a host stay in a small index the CPU keeps cached.
	maxIndex = 1 << 14
	minIndex = 1 << 10
	// queueSize bounds first sightings waiting for the writer; past it a
	// new pair is dropped (and counted) rather than blocking a query.
	queueSize = 1024
	// evictSample is how many pairs an eviction compares: the table is
	// full then, so every slot holds one.
	evictSample = 64
)

// Table is the container table as the map needs it: who asked, who owns a
// name, and the health of what is there (resolver.Resolver).
type Table interface {
	QuerierOf(src netip.Addr) (resolver.Owner, bool)
	NameOwner(src netip.Addr, name string) (resolver.Owner, bool)
	Topology() resolver.Topology
	Records() (resolver.Topology, []resolver.Record)
	// Generation changes with every new table: both ends of every pair
	// are named again, since a container often looks names up before
	// sidedns has seen it start.
	Generation() uint64
}

// Counter indexes the counts kept per edge and minute.
const (
	cQueries = iota
	cNXDomain
	cServFail
	cNoData
	cCached
	nCounters
)

// bucket is one pair's counts in one minute, 32 bytes. A lookup writes one
// bucket and reads nothing of its pair: Map.counts keeps one minute's
// buckets of every slot side by side, so the pairs a host keeps asking for
// share a few cache lines instead of costing a miss each.
type bucket struct {
	minute atomic.Int64 // the minute (Unix time / Bucket) the counters hold
	n      [nCounters]atomic.Uint32
	// sec is the second within the minute of the latest lookup counted
	// here: with minute, the pair's last use, for the LRU order.
	sec atomic.Uint32
}

// pair is one (source, name) seen in the window, with both ends named. Its
// counts are Map.counts[minute][slot].
type pair struct {
	h        uint64 // m.hash(src, name), which stands for the pair in the index
	slot     int32
	src      netip.Addr
	name     string
	from, to Node
}

// sighting is a first lookup of a pair, queued by value to the writer.
type sighting struct {
	h     uint64
	src   netip.Addr
	at    int64
	flags [nCounters]bool
	n     uint8
	name  [255]byte
}

// index maps pair hashes to slots by open addressing. An entry's key is
// the pair's hash (see keyOf), empty or tomb, a removed entry that probes
// walk past; the slot sits beside it, so a lookup reads one cache line of
// the index and then only the bucket it counts in.
//
// The 64-bit seeded hash of (source, name) stands for the pair: two pairs
// collide once in 2^64, no client can aim at it (the seed), and the harm
// would be one pair's lookups counted on another. Comparing the source and
// name instead cost a cache miss on every query (bench/run.sh, local
// scenario: 4-8% fewer queries a second with the map on than off).
type index struct {
	entries []entry
	tombs   int // the writer's count, under Map.mu
}

type entry struct {
	key  atomic.Uint64
	slot atomic.Int32 // the pair's slot + 1; 0 with no pair
}

const (
	empty = 0
	tomb  = 1
)

// keyOf is the index key of hash h: h, moved off the two marker values.
func keyOf(h uint64) uint64 {
	if h <= tomb {
		return h + 2
	}
	return h
}

// Map is the lookup table. Record is safe for concurrent use on the query
// path; the rest is for the ops surface.
type Map struct {
	table Table
	seed  maphash.Seed
	now   func() time.Time

	idx    atomic.Pointer[index]
	slots  [MaxEdges]atomic.Pointer[pair]
	counts [nBuckets][]bucket // [minute % nBuckets][slot]
	queue  chan sighting
	series series

	mu   sync.Mutex // the writer and the readers: inserts, evictions, names
	live int        // pairs in slots
	free []int32    // empty slots
	gen  uint64     // the table generation the pairs were named under
	hand int        // where the next eviction looks
	// unhealthy holds, for each service or container with no healthy
	// replica, when the map first saw it so.
	unhealthy map[string]time.Time

	evictions atomic.Uint64
	dropped   atomic.Uint64
	// budgetSec and budgetUsed bound the new pairs admitted per second
	// (newPairsPerSecond), so a flood of unique names costs the query path
	// a counter, not the writer's work for each name.
	budgetSec, budgetUsed atomic.Int64
}

// newPairsPerSecond is how many new (source, name) pairs the map admits in
// one second. A host's services settle on a few hundred pairs; past this
// the names are almost all unique (a scan, a cache-busting client), and
// naming each one would cost about a tenth of the cold-miss throughput
// (bench/run.sh, cold scenario, measured with the map on and off).
const newPairsPerSecond = 2000

// New returns an empty Map that names edges from table; now is the clock
// that readers use for the window.
func New(table Table, now func() time.Time) *Map {
	m := &Map{table: table, seed: maphash.MakeSeed(), now: now, queue: make(chan sighting, queueSize), unhealthy: map[string]time.Time{}}
	m.idx.Store(&index{entries: make([]entry, minIndex)})
	for i := range m.counts {
		m.counts[i] = make([]bucket, MaxEdges)
	}
	m.free = make([]int32, MaxEdges)
	for i := range m.free {
		m.free[i] = int32(MaxEdges - 1 - i)
	}
	return m
}

// Record counts one answered query (dnsserver.Recorder): rcode and the
// number of answer records as the client got them, where the answer came
// from, and how long an upstream took. Queries without a question make no
// edge. It takes no lock, allocates nothing and never blocks.
func (m *Map) Record(at time.Time, src netip.Addr, q *dnswire.Query, rcode, answers int, via string, took time.Duration) {
	m.series.add(at.UnixNano(), via, took)
	name := q.Name()
	if !q.HasQuestion || len(name) == 0 {
		return
	}
	src = src.Unmap()
	flags := countFlags(rcode, answers, via == "cache" || via == "stale")
	h := m.hash(src, name)
	ns := at.UnixNano()
	if slot := m.find(h); slot >= 0 {
		m.counts[bucketOf(ns)][slot].add(ns, flags)
		return
	}
	// The reset races with other readers; a few pairs more or less in the
	// second it turns over do not matter.
	if sec := ns / int64(time.Second); m.budgetSec.Load() != sec {
		m.budgetSec.Store(sec)
		m.budgetUsed.Store(0)
	}
	if m.budgetUsed.Add(1) > newPairsPerSecond {
		m.dropped.Add(1)
		return
	}
	s := sighting{h: h, src: src, at: ns, flags: flags}
	s.n = uint8(copy(s.name[:], name))
	select {
	case m.queue <- s:
	default:
		m.dropped.Add(1)
	}
}

func countFlags(rcode, answers int, cached bool) (f [nCounters]bool) {
	f[cQueries] = true
	f[cNXDomain] = rcode == dns.RcodeNameError
	f[cServFail] = rcode == dns.RcodeServerFailure
	f[cNoData] = rcode == dns.RcodeSuccess && answers == 0
	f[cCached] = cached
	return f
}

// hash keys a pair: the seeded hash of the name, so that no client can
// aim collisions at the index, mixed with the address. (A maphash.Hash
// over both costs twice as much; collisions only cost a longer probe, as
// find compares the pair itself.)
func (m *Map) hash(src netip.Addr, name []byte) uint64 {
	a := src.As16()
	hi, lo := binary.LittleEndian.Uint64(a[:8]), binary.LittleEndian.Uint64(a[8:])
	return maphash.Bytes(m.seed, name) ^ mix64(lo^bits.RotateLeft64(hi, 32))
}

// mix64 is splitmix64's finalizer: every input bit moves every output bit.
func mix64(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// find returns the slot of the pair whose hash is h, or -1.
func (m *Map) find(h uint64) int {
	ix := m.idx.Load()
	mask := uint64(len(ix.entries) - 1)
	k := keyOf(h)
	for i, pos := 0, h&mask; i < len(ix.entries); i, pos = i+1, (pos+1)&mask {
		e := &ix.entries[pos]
		switch e.key.Load() {
		case empty:
			return -1
		case k:
			// The writer may reuse the entry between the two loads; the
			// key read again says the slot is still the one it names.
			if s := e.slot.Load(); s > 0 && e.key.Load() == k {
				return int(s - 1)
			}
		}
	}
	return -1
}

// bucketOf is the index in pair.buckets of the minute that holds ns.
func bucketOf(ns int64) int { return int(ns / int64(Bucket) % int64(nBuckets)) }

// add counts one lookup at ns in b, the bucket of its minute. A bucket from
// an older minute is reset first; a lookup racing the reset at the turn of
// a minute may be lost, which a map of rates can bear better than a lock.
func (b *bucket) add(ns int64, flags [nCounters]bool) {
	min := ns / int64(Bucket)
	if old := b.minute.Load(); old != min && b.minute.CompareAndSwap(old, min) {
		for i := range b.n {
			b.n[i].Store(0)
		}
		b.sec.Store(0)
	}
	// The LRU order needs no finer grain than a second, and a load is
	// cheaper than a store on every query.
	if sec := uint32(ns % int64(Bucket) / int64(time.Second)); b.sec.Load() < sec {
		b.sec.Store(sec)
	}
	for i, f := range flags {
		if f {
			b.n[i].Add(1)
		}
	}
}

// lastUse is the Unix second of the latest lookup of the pair in slot.
func (m *Map) lastUse(slot int) int64 {
	var last int64
	for i := range m.counts {
		b := &m.counts[i][slot]
		if t := b.minute.Load()*int64(Bucket/time.Second) + int64(b.sec.Load()); t > last {
			last = t
		}
	}
	return last
}

// Run inserts first sightings as they come until ctx ends, and looks at
// the health of the table every Step, so that a service that stays
// unhealthy is known as such without anyone reading. Readers drain the
// queue too, so a read sees every lookup recorded before it.
func (m *Map) Run(ctx context.Context) {
	tick := time.NewTicker(Step)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			m.mu.Lock()
			m.observeHealthLocked()
			m.mu.Unlock()
		case s := <-m.queue:
			m.mu.Lock()
			m.insert(&s)
			m.drainLocked()
			m.mu.Unlock()
		}
	}
}

func (m *Map) drainLocked() {
	for {
		select {
		case s := <-m.queue:
			m.insert(&s)
		default:
			return
		}
	}
}

// insert adds a sighting's pair, or counts it when an earlier sighting of
// the same pair got there first. Called with mu held.
func (m *Map) insert(s *sighting) {
	name := s.name[:s.n]
	if slot := m.find(s.h); slot >= 0 {
		m.counts[bucketOf(s.at)][slot].add(s.at, s.flags)
		return
	}
	if m.live == MaxEdges {
		m.evictLocked()
	}
	slot := m.free[len(m.free)-1]
	m.free = m.free[:len(m.free)-1]
	p := &pair{h: s.h, slot: slot, src: s.src, name: string(name)}
	p.from, p.to = m.nameEnds(s.src, p.name)
	for i := range m.counts { // the slot's last pair's counts
		b := &m.counts[i][slot]
		b.minute.Store(0)
		b.sec.Store(0)
		for j := range b.n {
			b.n[j].Store(0)
		}
	}
	m.counts[bucketOf(s.at)][slot].add(s.at, s.flags)
	m.slots[slot].Store(p)
	m.live++

	ix := m.idx.Load()
	mask := uint64(len(ix.entries) - 1)
	for pos := s.h & mask; ; pos = (pos + 1) & mask {
		e := &ix.entries[pos]
		if k := e.key.Load(); k == empty || k == tomb {
			if k == tomb {
				ix.tombs--
			}
			e.slot.Store(slot + 1) // before the key: a reader that sees the key finds the slot
			e.key.Store(keyOf(s.h))
			break
		}
	}
	switch n := len(ix.entries); {
	case 2*m.live > n && n < maxIndex:
		m.rebuildLocked(2 * n)
	case ix.tombs > n/4:
		m.rebuildLocked(n)
	}
}

// evictLocked removes the least recently used of the evictSample pairs at
// the clock hand, and moves the hand past it. Scanning the whole table for
// each new pair would cost the writer 10,000 loads per name when a client
// asks for unique names, which is what floods the table in the first place.
func (m *Map) evictLocked() {
	oldest, at := -1, int64(0)
	for k := range evictSample {
		i := (m.hand + k) % MaxEdges
		if p := m.slots[i].Load(); p != nil {
			if l := m.lastUse(i); oldest < 0 || l < at {
				oldest, at = i, l
			}
		}
	}
	m.hand = (oldest + 1) % MaxEdges
	p := m.slots[oldest].Load()
	ix := m.idx.Load()
	mask := uint64(len(ix.entries) - 1)
	for pos := p.h & mask; ; pos = (pos + 1) & mask {
		e := &ix.entries[pos]
		if e.slot.Load() == int32(oldest+1) {
			e.key.Store(tomb)
			e.slot.Store(0)
			ix.tombs++
			break
		}
		if e.key.Load() == empty { // cannot happen: every pair in slots is in the index
			break
		}
	}
	m.slots[oldest].Store(nil)
	m.free = append(m.free, int32(oldest))
	m.live--
	m.evictions.Add(1)
}

// rebuildLocked replaces the index by a fresh one of size entries, larger
// or without the tombstones; queries that still probe the old one find the
// same pairs.
func (m *Map) rebuildLocked(size int) {
	ix := &index{entries: make([]entry, size)}
	mask := uint64(size - 1)
	for i := range m.slots {
		p := m.slots[i].Load()
		if p == nil {
			continue
		}
		pos := p.h & mask
		for ix.entries[pos].key.Load() != empty {
			pos = (pos + 1) & mask
		}
		ix.entries[pos].slot.Store(int32(i + 1))
		ix.entries[pos].key.Store(keyOf(p.h))
	}
	m.idx.Store(ix)
}

// Stats are the table's own counters, for metrics.
type Stats struct {
	Edges     int    // (source, name) pairs in the table
	Evictions uint64 // pairs evicted to make room
	Dropped   uint64 // first lookups dropped: the writer was behind, or past newPairsPerSecond
}

// Stats returns the table's counters.
func (m *Map) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.drainLocked()
	return Stats{Edges: m.live, Evictions: m.evictions.Load(), Dropped: m.dropped.Load()}
}

var (
	descEdges     = prometheus.NewDesc("sidedns_edges", "Lookup edges (source, name) held by the service map.", nil, nil)
	descEvictions = prometheus.NewDesc("sidedns_edge_evictions_total", "Lookup edges evicted, the least recently used of a sample, to keep the service map bounded.", nil, nil)
	descDropped   = prometheus.NewDesc("sidedns_edge_dropped_total", "First lookups of an edge not recorded: the service map's writer was behind, or more than 2,000 new edges came in one second.", nil, nil)
)

// Describe implements prometheus.Collector.
func (m *Map) Describe(ch chan<- *prometheus.Desc) {
	ch <- descEdges
	ch <- descEvictions
	ch <- descDropped
}

// Collect implements prometheus.Collector. Per-edge counts stay out of
// Prometheus (the API carries them), so the series are few.
func (m *Map) Collect(ch chan<- prometheus.Metric) {
	st := m.Stats()
	ch <- prometheus.MustNewConstMetric(descEdges, prometheus.GaugeValue, float64(st.Edges))
	ch <- prometheus.MustNewConstMetric(descEvictions, prometheus.CounterValue, float64(st.Evictions))
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(st.Dropped))
}
