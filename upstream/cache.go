package upstream

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/dnswire"
	"go.uber.org/zap"
)

// Defaults of CacheConfig, exported for the flags that set them.
const (
	DefaultCacheSize   = 100_000
	DefaultMaxTTL      = 24 * time.Hour
	DefaultStaleWindow = 24 * time.Hour // RFC 8767 suggests 1-3 days
	// DefaultForwardBudget bounds a whole forward, every upstream try, and
	// a cache refresh: glibc's resolver gives up after 5 s, so a later
	// answer helps nobody.
	DefaultForwardBudget = 5 * time.Second
)

const (
	cacheDefaultNegativeMaxTTL = 30 * time.Minute // RFC 2308 suggests 1-3 h; 30 min keeps new names visible sooner.
	cacheDefaultPrefetchHits   = 2
	// cacheStaleTTL is the TTL of a stale answer (RFC 8767 recommends 30 s).
	cacheStaleTTL = 30
	// cacheMaxKey is the longest key: a 255-byte wire name, type, class and flags.
	cacheMaxKey = 255 + 5
)

// CacheConfig tunes a Cache. The zero value gives the defaults.
type CacheConfig struct {
	// Size bounds the cache in entries; 0 means DefaultCacheSize. Negative
	// stores nothing (--cache-size 0): every query goes upstream, identical
	// ones still share one exchange, and replies pass through unchanged.
	Size int
	// MinTTL and MaxTTL clamp the TTL of stored answers; MaxTTL 0 means 24 h.
	MinTTL, MaxTTL time.Duration
	// NegativeMaxTTL caps NXDOMAIN and NODATA entries; 0 means 30 min.
	NegativeMaxTTL time.Duration
	// StaleWindow is how long after expiry an entry may still be served
	// (RFC 8767) when the refresh fails; 0 means 24 h, negative disables.
	StaleWindow time.Duration
	// PrefetchHits is how many hits make an entry popular enough to be
	// refreshed in the background near expiry; 0 means 2, negative disables.
	PrefetchHits int
	// RefreshTimeout bounds one upstream query made on behalf of the cache
	// (a shared miss or a prefetch); 0 means 5 s.
	RefreshTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger gets debug lines about uncacheable replies and failed
	// refreshes; nil means no logs.
	Logger *zap.Logger
}

// CacheStats is a snapshot of a cache's counters.
type CacheStats struct {
	Hits       uint64 // answered from a fresh entry
	Misses     uint64 // went upstream (including coalesced and stale-eligible ones)
	Evictions  uint64 // entries pushed out by the size bound
	Stale      uint64 // expired entries served because the refresh failed
	Prefetches uint64 // background refreshes started
	Coalesced  uint64 // misses that joined another query's upstream exchange
}

// Cache answers queries from an LRU of upstream replies and sends misses to
// next. It deals in reply bodies: header, question and records, with no OPT.
// The client's ID, flags, question case, truncation and OPT are
// dnswire.Finish's, which the server runs on every reply.
//
// Keys are (lower-cased name, type, class, DO, CD), hashed with maphash and
// checked against the stored question. Entries are immutable: each keeps the
// upstream reply packed (ID 0, no OPT) with the offsets of its TTL fields,
// the time it was stored and its TTL. The remaining TTL is written into the
// client's copy on read, into every record (the smallest TTL of the reply,
// as CoreDNS does). A forwarded miss is unpacked once (by the forwarder,
// which checks that it answers the query) and packed once; nothing is
// unpacked after that, on hits or misses.
//
// Identical misses share one upstream exchange; each waiter gets its own
// copy and may give up on its own ctx. A popular entry (PrefetchHits hits)
// read in the last tenth of its TTL is refreshed in the background, one
// refresh per entry at a time.
//
// Stored: NOERROR with answers, and NXDOMAIN/NODATA that carry an SOA
// (RFC 2308: TTL min(SOA TTL, SOA MINIMUM)). Never stored, but passed on as
// the upstream sent them: truncated replies, SERVFAIL and other rcodes,
// negatives without an SOA (we cannot know how long the upstream meant them
// to last, so CoreDNS's choice is ours), and meta types such as ANY.
//
// Serve-stale (RFC 8767): an expired entry is refreshed first; when that
// refresh fails with an error other than ErrOverloaded (our own bound, not a
// sign that the upstreams are down) or returns SERVFAIL, the expired entry is
// served with TTL 30 s, up to StaleWindow after its expiry. For the next 30 s
// that entry is served stale at once, without another refresh. A client whose
// deadline passes while the refresh is still running also gets the stale
// entry rather than an error.
type Cache struct {
	next  Exchanger
	cfg   CacheConfig
	now   func() time.Time
	log   *zap.Logger
	seed  maphash.Seed
	lru   *lru.Cache[uint64, *cacheEntry]
	minT  uint32
	maxT  uint32
	negT  uint32
	stale time.Duration
	store bool // false with a negative Size: nothing is kept

	mu      sync.Mutex
	flights map[string]*cacheCall
	closed  bool           // under mu; no new prefetches
	bg      sync.WaitGroup // prefetches and upstream exchanges; Add under mu while !closed

	hits, misses, evictions, staleServed, prefetches, coalesced atomic.Uint64
}

// NewCache returns a cache in front of next.
func NewCache(next Exchanger, cfg CacheConfig) (*Cache, error) {
	if next == nil {
		return nil, errors.New("create cache: next exchanger is nil")
	}
	if cfg.Size == 0 {
		cfg.Size = DefaultCacheSize
	}
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = DefaultMaxTTL
	}
	if cfg.NegativeMaxTTL == 0 {
		cfg.NegativeMaxTTL = cacheDefaultNegativeMaxTTL
	}
	if cfg.MinTTL < 0 || cfg.MaxTTL < 0 || cfg.NegativeMaxTTL < 0 || cfg.MinTTL > cfg.MaxTTL {
		return nil, fmt.Errorf("create cache: bad TTL bounds min %v max %v negative max %v",
			cfg.MinTTL, cfg.MaxTTL, cfg.NegativeMaxTTL)
	}
	if cfg.StaleWindow == 0 {
		cfg.StaleWindow = DefaultStaleWindow
	}
	if cfg.PrefetchHits == 0 {
		cfg.PrefetchHits = cacheDefaultPrefetchHits
	}
	if cfg.RefreshTimeout <= 0 {
		cfg.RefreshTimeout = DefaultForwardBudget
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	c := &Cache{
		next:    next,
		cfg:     cfg,
		now:     cfg.Now,
		log:     cfg.Logger,
		seed:    maphash.MakeSeed(),
		minT:    cacheSeconds(cfg.MinTTL),
		maxT:    cacheSeconds(cfg.MaxTTL),
		negT:    cacheSeconds(min(cfg.NegativeMaxTTL, cfg.MaxTTL)),
		stale:   cfg.StaleWindow,
		store:   cfg.Size > 0,
		flights: make(map[string]*cacheCall),
	}
	// Without storing, the LRU stays empty; one slot keeps a single code path.
	l, err := lru.NewWithEvict(max(cfg.Size, 1), func(uint64, *cacheEntry) { c.evictions.Add(1) })
	if err != nil {
		return nil, fmt.Errorf("create cache: %w", err)
	}
	c.lru = l
	return c, nil
}

func cacheSeconds(d time.Duration) uint32 {
	s := d / time.Second
	if s > 1<<31-1 { // RFC 2181: TTLs are 31-bit.
		s = 1<<31 - 1
	}
	return uint32(s)
}

// Len is the number of entries, fresh or expired.
func (c *Cache) Len() int { return c.lru.Len() }

// Close stops new prefetches and waits for running ones and for upstream
// exchanges in flight (each bounded by RefreshTimeout), so nothing logs or
// queries upstream after it returns. Resolve keeps working.
func (c *Cache) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.bg.Wait()
	return nil
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() CacheStats {
	return CacheStats{
		Hits:       c.hits.Load(),
		Misses:     c.misses.Load(),
		Evictions:  c.evictions.Load(),
		Stale:      c.staleServed.Load(),
		Prefetches: c.prefetches.Load(),
		Coalesced:  c.coalesced.Load(),
	}
}

// cacheEntry is never modified after it is stored, except for its atomics.
type cacheEntry struct {
	// wire is the packed reply with ID 0 and no OPT. Readers patch the
	// TTLs into their copy. Only wire bytes are kept: a *dns.Msg beside
	// them would double the memory.
	wire    []byte
	nameLen int       // wire length of the qname, at offset 12 of wire
	flags   byte      // key flags (DO, CD)
	ttlOffs []uint16  // offsets of every TTL field in wire
	stored  time.Time // when the reply arrived
	ttl     uint32    // seconds, clamped; every record is served with ttl - age

	hits       atomic.Uint32
	refreshing atomic.Bool
	// staleUntil (clock nanoseconds) follows a failed refresh: until then
	// the entry is served stale without asking upstream again (RFC 8767's
	// failure recheck timer), so an outage does not make every client wait.
	staleUntil atomic.Int64
}

// remaining is the TTL left at now; ok is false once the entry expired.
func (e *cacheEntry) remaining(now time.Time) (ttl uint32, ok bool) {
	age := now.Sub(e.stored)
	if age < 0 {
		age = 0
	}
	secs := uint64(age / time.Second)
	if secs >= uint64(e.ttl) {
		return 0, false
	}
	return e.ttl - uint32(secs), true
}

// staleUsable reports whether an expired entry is still within the window.
func (e *cacheEntry) staleUsable(now time.Time, window time.Duration) bool {
	if window < 0 {
		return false
	}
	return now.Sub(e.stored)-time.Duration(e.ttl)*time.Second < window
}

// Key flag bits.
const (
	cacheFlagDO = 1 << iota
	cacheFlagCD
)

// cacheKeyOf writes the key of q's question into buf and returns it.
func cacheKeyOf(q *dnswire.Query, buf *[cacheMaxKey]byte) []byte {
	n := copy(buf[:], q.Raw)
	var flags byte
	if q.CD {
		flags |= cacheFlagCD
	}
	if q.DO {
		flags |= cacheFlagDO
	}
	return cacheFinishKey(buf, n, q.Type, q.Class, flags)
}

// cacheFinishKey lower-cases the wire name in buf[:n] and appends type,
// class and flags. Length octets are at most 63, below 'A', so lower-casing
// every byte touches only label text.
func cacheFinishKey(buf *[cacheMaxKey]byte, n int, qtype, qclass uint16, flags byte) []byte {
	for i := range n {
		if b := buf[i]; 'A' <= b && b <= 'Z' {
			buf[i] = b + 'a' - 'A'
		}
	}
	binary.BigEndian.PutUint16(buf[n:], qtype)
	binary.BigEndian.PutUint16(buf[n+2:], qclass)
	buf[n+4] = flags
	return buf[:n+5]
}

// cacheableType reports whether answers of type t may be stored; the
// others are passed through.
func cacheableType(t uint16) bool {
	switch t {
	case dns.TypeAXFR, dns.TypeIXFR, dns.TypeOPT, dns.TypeANY, dns.TypeMAILA, dns.TypeMAILB:
		return false
	}
	return true
}

// lookup returns the entry for key, fresh or not.
func (c *Cache) lookup(key []byte) (uint64, *cacheEntry) {
	h := maphash.Bytes(c.seed, key)
	e, ok := c.lru.Get(h)
	if !ok || !e.matches(key) {
		return h, nil
	}
	return h, e
}

// matches reports whether e is the entry for key (hashes can collide). The
// question in wire has the key's layout: name, type, class.
func (e *cacheEntry) matches(key []byte) bool {
	n := e.nameLen
	return len(key) == n+5 && key[n+4] == e.flags &&
		cacheEqualFold(e.wire[12:12+n], key[:n]) && bytes.Equal(e.wire[12+n:16+n], key[n:n+4])
}

// keyInto rebuilds e's key in buf.
func (e *cacheEntry) keyInto(buf *[cacheMaxKey]byte) []byte {
	n := copy(buf[:], e.wire[12:12+e.nameLen])
	t := e.wire[12+n:]
	return cacheFinishKey(buf, n, binary.BigEndian.Uint16(t), binary.BigEndian.Uint16(t[2:]), e.flags)
}

// AppendHit appends the reply body for q to dst when a fresh entry exists
// (header, question, records with their remaining TTL; no OPT) and returns
// true. Otherwise dst comes back unchanged with false, and the caller takes
// Resolve, which counts the miss. It does not allocate (only the rare
// prefetch it may start does).
func (c *Cache) AppendHit(dst []byte, q *dnswire.Query) ([]byte, bool) {
	if !q.HasQuestion {
		return dst, false
	}
	var buf [cacheMaxKey]byte
	_, e := c.lookup(cacheKeyOf(q, &buf))
	if e == nil {
		return dst, false
	}
	ttl, fresh := e.remaining(c.now())
	if !fresh {
		return dst, false
	}
	c.hits.Add(1)
	c.maybePrefetch(e, ttl)
	return e.appendTo(dst, ttl), true
}

// Resolve answers q from the cache or from next and appends the reply body
// (header, question, records; no OPT) to dst, saying where it came from. tcp
// says the client came over TCP, so a miss goes upstream over TCP. On error
// dst comes back unchanged.
func (c *Cache) Resolve(ctx context.Context, dst []byte, q *dnswire.Query, tcp bool) ([]byte, Origin, error) {
	if !q.HasQuestion {
		return dst, OriginUpstream, errors.New("resolve: query has no question")
	}
	var buf [cacheMaxKey]byte
	key := cacheKeyOf(q, &buf)
	h, e := c.lookup(key)
	now := c.now()
	if e != nil {
		if ttl, fresh := e.remaining(now); fresh {
			c.hits.Add(1)
			c.maybePrefetch(e, ttl)
			return e.appendTo(dst, ttl), OriginCache, nil
		}
		if !e.staleUsable(now, c.stale) {
			e = nil
		} else if now.UnixNano() < e.staleUntil.Load() {
			c.staleServed.Add(1)
			return e.appendTo(dst, cacheStaleTTL), OriginStale, nil
		}
	}
	c.misses.Add(1)

	call := c.join(ctx, h, key, tcp, func() (*dns.Msg, error) {
		name, _, err := dns.UnpackDomainName(q.Raw, 0)
		if err != nil {
			return nil, fmt.Errorf("read question name: %w", err)
		}
		return upstreamQuery(name, q.Type, q.Class, q.DO, q.CD), nil
	})
	select {
	case <-call.done:
	case <-ctx.Done():
		// Out of time with nothing from upstream: that is a failure too, as
		// the forwarder reports it (RFC 8767's client response timer).
		if e != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && e.staleUsable(c.now(), c.stale) {
			c.staleServed.Add(1)
			return e.appendTo(dst, cacheStaleTTL), OriginStale, nil
		}
		return dst, OriginUpstream, fmt.Errorf("wait for upstream: %w", ctx.Err())
	}
	return c.answer(dst, call, e)
}

// answer appends the reply a finished upstream exchange gave, serving stale
// when the exchange failed and stale is usable.
func (c *Cache) answer(dst []byte, call *cacheCall, stale *cacheEntry) ([]byte, Origin, error) {
	if call.ent != nil {
		ttl, fresh := call.ent.remaining(c.now())
		if !fresh {
			ttl = 1 // the clock moved past a TTL while we waited; still the newest answer.
		}
		return call.ent.appendTo(dst, ttl), OriginUpstream, nil
	}
	if stale != nil && cacheFailed(call.rcode, call.err) && stale.staleUsable(c.now(), c.stale) {
		c.staleServed.Add(1)
		return stale.appendTo(dst, cacheStaleTTL), OriginStale, nil
	}
	if call.err != nil {
		return dst, OriginUpstream, call.err
	}
	return append(dst, call.body...), OriginUpstream, nil
}

// cacheFailed reports whether an upstream result means "the upstreams are
// failing", which is when serving stale is allowed.
func cacheFailed(rcode int, err error) bool {
	if err != nil {
		return !errors.Is(err, ErrOverloaded)
	}
	return rcode == dns.RcodeServerFailure
}

// appendTo appends the entry's reply to dst with every TTL set to ttl.
func (e *cacheEntry) appendTo(dst []byte, ttl uint32) []byte {
	start := len(dst)
	dst = append(dst, e.wire...)
	for _, off := range e.ttlOffs {
		binary.BigEndian.PutUint32(dst[start+int(off):], ttl)
	}
	return dst
}

// cacheCall is one upstream exchange shared by every identical miss. Its
// fields are read-only once done is closed.
type cacheCall struct {
	done  chan struct{}
	ent   *cacheEntry // the reply, when it was stored
	body  []byte      // the reply packed (ID 0, no OPT), when it was not stored
	rcode int
	err   error
}

// join returns the in-flight exchange for key, starting one when there is
// none. TCP and UDP clients do not share: a UDP exchange may end truncated.
// query builds the upstream query; it runs before join returns, so it may
// read the caller's packet. The exchange runs on its own goroutine with a
// context that keeps ctx's values but not its cancellation, so one client
// giving up does not fail the others.
func (c *Cache) join(ctx context.Context, h uint64, key []byte, tcp bool, query func() (*dns.Msg, error)) *cacheCall {
	var fbuf [cacheMaxKey + 1]byte
	fk := append(fbuf[:0], key...)
	if tcp {
		fk = append(fk, 't')
	}
	c.mu.Lock()
	if call, ok := c.flights[string(fk)]; ok {
		c.mu.Unlock()
		c.coalesced.Add(1)
		return call
	}
	call := &cacheCall{done: make(chan struct{})}
	sk := string(fk)
	c.flights[sk] = call
	tracked := !c.closed
	if tracked {
		c.bg.Add(1)
	}
	c.mu.Unlock()

	q, qerr := query()
	ekey := bytes.Clone(key)
	go func() {
		if tracked {
			defer c.bg.Done()
		}
		if qerr != nil {
			call.err = qerr
		} else {
			c.fetch(ctx, call, q, ekey, tcp)
		}
		if call.ent != nil {
			c.lru.Add(h, call.ent)
		} else if cacheFailed(call.rcode, call.err) {
			// Start the failure recheck timer on the entry we could not
			// refresh, whoever is (or is not) still waiting.
			if e, ok := c.lru.Peek(h); ok && e.matches(ekey) {
				e.staleUntil.Store(c.now().Add(cacheStaleTTL * time.Second).UnixNano())
			}
		}
		// Store first, then leave the flight map: a query that finds no
		// flight finds the new entry.
		c.mu.Lock()
		delete(c.flights, sk)
		c.mu.Unlock()
		close(call.done)
	}()
	return call
}

// fetch asks next for q and packs the reply once, into call.ent when it
// may be stored and into call.body otherwise.
func (c *Cache) fetch(ctx context.Context, call *cacheCall, q *dns.Msg, key []byte, tcp bool) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.RefreshTimeout)
	defer cancel()
	qq := q.Question[0]
	m, err := c.next.Exchange(uctx, q, tcp)
	if err == nil && m == nil {
		err = errors.New("upstream returned no reply")
	}
	if err != nil {
		c.log.Debug("upstream exchange failed", zap.String("name", qq.Name), zap.Uint16("type", qq.Qtype), zap.Error(err))
		call.err = err
		return
	}
	call.rcode = m.Rcode
	// The upstream's ID and OPT are not the client's: Finish adds those.
	m.Id = 0
	stripOPT(m)
	if len(m.Question) == 0 {
		// An error reply without a question: give it ours, so that the
		// client's reply has one.
		m.Question = q.Question
	}
	m.Compress = true
	wire, err := m.Pack()
	if err != nil {
		call.err = fmt.Errorf("pack reply for %s: %w", qq.Name, err)
		return
	}
	if c.store && cacheableType(qq.Qtype) {
		call.ent = c.newEntry(m, wire, key, qq)
	}
	if call.ent == nil {
		call.body = wire
	}
}

// newEntry builds the entry for m, the upstream reply packed as wire, or
// returns nil when it must not be stored.
func (c *Cache) newEntry(m *dns.Msg, wire, key []byte, q dns.Question) *cacheEntry {
	notCached := func(why string) *cacheEntry {
		c.log.Debug("reply not cached", zap.String("name", q.Name), zap.Uint16("type", q.Qtype), zap.String("reason", why))
		return nil
	}
	switch {
	case m.Truncated:
		return notCached("truncated")
	case m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError:
		return notCached("rcode " + dns.RcodeToString[m.Rcode])
	}

	// Every record is served with one TTL, so it is the smallest of them.
	ttl := ^uint32(0)
	for _, s := range [...][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range s {
			ttl = min(ttl, rr.Header().Ttl)
		}
	}
	if m.Rcode == dns.RcodeNameError || len(m.Answer) == 0 {
		// RFC 2308 section 5: the negative TTL is min(SOA TTL, SOA MINIMUM).
		var soa *dns.SOA
		for _, rr := range m.Ns {
			if s, ok := rr.(*dns.SOA); ok {
				soa = s
				break
			}
		}
		if soa == nil {
			return notCached("negative without SOA")
		}
		ttl = cacheClamp(min(ttl, soa.Minttl), c.minT, c.negT)
	} else {
		ttl = cacheClamp(ttl, c.minT, c.maxT)
	}
	if ttl == 0 {
		return nil
	}

	// The walk checks the layout readers rely on; matches checks that the
	// reply's question is the key's (hashes and upstreams can be wrong).
	e := &cacheEntry{wire: wire, nameLen: len(key) - 5, flags: key[len(key)-1]}
	offs, ok := cacheTTLOffsets(wire)
	if !ok || len(wire) < 16+e.nameLen || !e.matches(key) {
		return notCached("question mismatch or unexpected wire layout")
	}
	e.ttlOffs = offs
	e.stored = c.now()
	e.ttl = ttl
	return e
}

func cacheClamp(v, lo, hi uint32) uint32 { return max(lo, min(v, hi)) }

// cacheEqualFold compares a wire name to a lower-cased one.
func cacheEqualFold(a, lower []byte) bool {
	if len(a) != len(lower) {
		return false
	}
	for i, b := range a {
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if b != lower[i] {
			return false
		}
	}
	return true
}

// cacheTTLOffsets walks a packed message and returns the offset of every
// record's TTL field.
func cacheTTLOffsets(w []byte) ([]uint16, bool) {
	if len(w) < 12 || len(w) > 0xffff {
		return nil, false
	}
	qd := int(binary.BigEndian.Uint16(w[4:]))
	rrs := int(binary.BigEndian.Uint16(w[6:])) + int(binary.BigEndian.Uint16(w[8:])) + int(binary.BigEndian.Uint16(w[10:]))
	off := 12
	for range qd {
		n, ok := dnswire.SkipName(w, off)
		if !ok || n+4 > len(w) {
			return nil, false
		}
		off = n + 4
	}
	offs := make([]uint16, 0, rrs)
	for range rrs {
		n, ok := dnswire.SkipName(w, off)
		if !ok || n+10 > len(w) {
			return nil, false
		}
		offs = append(offs, uint16(n+4))
		rdlen := int(binary.BigEndian.Uint16(w[n+8:]))
		off = n + 10 + rdlen
		if off > len(w) {
			return nil, false
		}
	}
	return offs, off == len(w)
}

// maybePrefetch starts a background refresh of a popular entry in the last
// tenth of its TTL (the last second for short TTLs), one at a time.
func (c *Cache) maybePrefetch(e *cacheEntry, ttl uint32) {
	if c.cfg.PrefetchHits < 0 {
		return
	}
	if int64(e.hits.Add(1)) < int64(c.cfg.PrefetchHits) {
		return
	}
	if ttl > max(e.ttl/10, 1) {
		return
	}
	if !e.refreshing.CompareAndSwap(false, true) {
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.bg.Add(1)
	c.mu.Unlock()
	c.prefetches.Add(1)
	go func() {
		defer c.bg.Done()
		c.prefetch(e)
	}()
}

func (c *Cache) prefetch(e *cacheEntry) {
	var buf [cacheMaxKey]byte
	key := e.keyInto(&buf)
	h := maphash.Bytes(c.seed, key)
	t := e.wire[12+e.nameLen:]
	qtype, qclass := binary.BigEndian.Uint16(t), binary.BigEndian.Uint16(t[2:])
	// newEntry's walk checked the stored name, so this does not fail.
	name, _, err := dns.UnpackDomainName(e.wire, 12)
	// Not the client's context: the client already has its answer.
	call := c.join(context.Background(), h, key, false, func() (*dns.Msg, error) {
		if err != nil {
			return nil, fmt.Errorf("read stored question name: %w", err)
		}
		return upstreamQuery(name, qtype, qclass, e.flags&cacheFlagDO != 0, e.flags&cacheFlagCD != 0), nil
	})
	<-call.done // join bounds the exchange with RefreshTimeout.
	if call.ent == nil {
		c.log.Debug("prefetch did not refresh", zap.String("name", name), zap.Uint16("type", qtype), zap.Error(call.err))
		e.refreshing.Store(false) // let a later hit try again; the entry still serves.
	}
}
