package upstream

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/dnswire"
	"go.uber.org/zap"
)

const (
	cacheDefaultSize           = 100_000
	cacheDefaultMaxTTL         = 24 * time.Hour
	cacheDefaultNegativeMaxTTL = 30 * time.Minute // RFC 2308 suggests 1-3 h; 30 min keeps new names visible sooner.
	cacheDefaultStaleWindow    = 24 * time.Hour
	cacheDefaultPrefetchHits   = 2
	// A refresh outlives one client's patience: it covers failover across
	// a few upstreams at the forwarder's 2 s per try.
	cacheDefaultRefreshTimeout = 5 * time.Second
	// cacheStaleTTL is the TTL of a stale answer (RFC 8767 recommends 30 s).
	cacheStaleTTL = 30
	// cacheEDNSSize is the UDP size we advertise, as the forwarder does (DNS flag day 2020).
	cacheEDNSSize = dnswire.EDNSSize
	// cacheMaxKey is the longest key: a 255-byte wire name, type, class and flags.
	cacheMaxKey = 255 + 5
)

// CacheConfig tunes a Cache. The zero value gives the defaults.
type CacheConfig struct {
	// Size bounds the cache in entries; 0 means 100,000.
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

// Cache is an Exchanger that answers from an LRU of upstream replies and
// sends misses to next.
//
// Keys are (lower-cased name, type, class, DO, CD), hashed with maphash and
// checked against the stored question. Entries are immutable: each keeps the
// upstream reply packed (minus OPT) with the offsets of its TTL fields, the
// time it was stored and its TTL. The remaining TTL is computed on read, and
// every record in a reply carries it (the smallest TTL of the reply, as
// CoreDNS does). A reply keeps the client's ID, RD bit and question case
// (0x20), and has an OPT exactly when the query had one. Two read paths:
// Exchange (*dns.Msg, allocates) and AppendHit (wire bytes, no allocation).
//
// Identical misses share one upstream exchange; each waiter gets its own
// copy and may give up on its own ctx. A popular entry (PrefetchHits hits)
// read in the last tenth of its TTL is refreshed in the background, one
// refresh per entry at a time.
//
// Stored: NOERROR with answers, and NXDOMAIN/NODATA that carry an SOA
// (RFC 2308: TTL min(SOA TTL, SOA MINIMUM)). Never stored: truncated replies,
// SERVFAIL and other rcodes, and negatives without an SOA (we cannot know how
// long the upstream meant them to last, so CoreDNS's choice is ours).
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
		cfg.Size = cacheDefaultSize
	}
	if cfg.Size < 0 {
		return nil, fmt.Errorf("create cache: size %d is negative", cfg.Size)
	}
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = cacheDefaultMaxTTL
	}
	if cfg.NegativeMaxTTL == 0 {
		cfg.NegativeMaxTTL = cacheDefaultNegativeMaxTTL
	}
	if cfg.MinTTL < 0 || cfg.MaxTTL < 0 || cfg.NegativeMaxTTL < 0 || cfg.MinTTL > cfg.MaxTTL {
		return nil, fmt.Errorf("create cache: bad TTL bounds min %v max %v negative max %v",
			cfg.MinTTL, cfg.MaxTTL, cfg.NegativeMaxTTL)
	}
	if cfg.StaleWindow == 0 {
		cfg.StaleWindow = cacheDefaultStaleWindow
	}
	if cfg.PrefetchHits == 0 {
		cfg.PrefetchHits = cacheDefaultPrefetchHits
	}
	if cfg.RefreshTimeout <= 0 {
		cfg.RefreshTimeout = cacheDefaultRefreshTimeout
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
		flights: make(map[string]*cacheCall),
	}
	l, err := lru.NewWithEvict(cfg.Size, func(uint64, *cacheEntry) { c.evictions.Add(1) })
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

// Resize changes the size bound and returns how many entries it evicted.
func (c *Cache) Resize(size int) int { return c.lru.Resize(size) }

// Close stops new prefetches and waits for running ones and for upstream
// exchanges in flight (each bounded by RefreshTimeout), so nothing logs or
// queries upstream after it returns. Exchange keeps working.
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
	// wire is the packed reply with ID 0 and no OPT. Hits patch ID, RD,
	// qname case and TTLs into a copy; the Exchange path unpacks it. Only
	// wire bytes are kept: a *dns.Msg beside them would double the memory.
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

// cacheKeyOf writes the key of a question into buf and returns it. ok is
// false for queries the cache does not handle.
func cacheKeyOf(req *dns.Msg, buf *[cacheMaxKey]byte) (key []byte, do bool, ok bool) {
	if req.Response || req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		return nil, false, false
	}
	q := req.Question[0]
	if !cacheableType(q.Qtype) {
		return nil, false, false
	}
	n, err := dns.PackDomainName(q.Name, buf[:255], 0, nil, false)
	if err != nil || n == 0 {
		return nil, false, false
	}
	var flags byte
	if opt := req.IsEdns0(); opt != nil && opt.Do() {
		flags |= cacheFlagDO
		do = true
	}
	if req.CheckingDisabled {
		flags |= cacheFlagCD
	}
	return cacheFinishKey(buf, n, q.Qtype, q.Qclass, flags), do, true
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

// Exchange answers m from the cache or from next. The reply is the caller's
// to modify.
func (c *Cache) Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	var buf [cacheMaxKey]byte
	key, do, ok := cacheKeyOf(m, &buf)
	if !ok {
		return c.next.Exchange(ctx, m)
	}
	h, e := c.lookup(key)
	now := c.now()
	if e != nil {
		if ttl, fresh := e.remaining(now); fresh {
			if r, err := e.reply(m, ttl); err == nil {
				c.hits.Add(1)
				setOrigin(ctx, OriginCache)
				c.maybePrefetch(e, ttl)
				return r, nil
			}
		}
		if !e.staleUsable(now, c.stale) {
			e = nil
		} else if now.UnixNano() < e.staleUntil.Load() {
			if r, err := e.reply(m, cacheStaleTTL); err == nil {
				c.staleServed.Add(1)
				setOrigin(ctx, OriginStale)
				return r, nil
			}
		}
	}
	c.misses.Add(1)

	call := c.join(ctx, h, key, IsTCP(ctx), func() *dns.Msg {
		return cacheQuery(m.Question[0], do, m.CheckingDisabled)
	})
	select {
	case <-call.done:
	case <-ctx.Done():
		// Out of time with nothing from upstream: that is a failure too, as
		// the forwarder reports it (RFC 8767's client response timer).
		if e != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && e.staleUsable(c.now(), c.stale) {
			if r, err := e.reply(m, cacheStaleTTL); err == nil {
				c.staleServed.Add(1)
				setOrigin(ctx, OriginStale)
				return r, nil
			}
		}
		return nil, fmt.Errorf("wait for upstream: %w", ctx.Err())
	}
	return c.answer(ctx, m, call, e)
}

// answer turns a finished upstream exchange into the reply for req, serving
// stale when the exchange failed and stale is usable.
func (c *Cache) answer(ctx context.Context, req *dns.Msg, call *cacheCall, stale *cacheEntry) (*dns.Msg, error) {
	if call.ent != nil {
		ttl, fresh := call.ent.remaining(c.now())
		if !fresh {
			ttl = 1 // the clock moved past a TTL while we waited; still the newest answer.
		}
		if r, err := call.ent.reply(req, ttl); err == nil {
			return r, nil
		}
	}
	if stale != nil && cacheFailed(call.msg, call.err) && stale.staleUsable(c.now(), c.stale) {
		if r, err := stale.reply(req, cacheStaleTTL); err == nil {
			c.staleServed.Add(1)
			setOrigin(ctx, OriginStale)
			return r, nil
		}
	}
	if call.msg == nil {
		return nil, call.err
	}
	r := call.msg.Copy()
	cachePatchReply(r, req)
	return r, call.err
}

// cacheFailed reports whether an upstream result means "the upstreams are
// failing", which is when serving stale is allowed.
func cacheFailed(m *dns.Msg, err error) bool {
	if err != nil {
		return !errors.Is(err, ErrOverloaded)
	}
	return m == nil || m.Rcode == dns.RcodeServerFailure
}

// reply builds the client's copy of the entry, every record with TTL ttl.
// newEntry checked that wire unpacks, so an error here is not expected;
// callers then treat the entry as absent.
func (e *cacheEntry) reply(req *dns.Msg, ttl uint32) (*dns.Msg, error) {
	// Patch the wire copy as the wire path does, so names compressed
	// against the question come out in the client's case here too.
	w := bytes.Clone(e.wire)
	if len(req.Question) == 1 {
		// Same length as the stored name: the keys matched. On error the
		// stored case stays, which is still a correct answer.
		dns.PackDomainName(req.Question[0].Name, w[:12+e.nameLen], 12, nil, false) //nolint:errcheck // see above
	}
	e.patch(w, req.Id, req.RecursionDesired, ttl)
	r := new(dns.Msg)
	if err := r.Unpack(w); err != nil {
		return nil, fmt.Errorf("unpack cached reply: %w", err)
	}
	if opt := req.IsEdns0(); opt != nil { // stored replies have no OPT
		r.SetEdns0(cacheEDNSSize, opt.Do())
	}
	return r, nil
}

// patch writes the client's ID and RD bit and the remaining TTL into w, a
// copy of e.wire.
func (e *cacheEntry) patch(w []byte, id uint16, rd bool, ttl uint32) {
	binary.BigEndian.PutUint16(w, id)
	w[2] &^= 0x01
	if rd {
		w[2] |= 0x01
	}
	for _, off := range e.ttlOffs {
		binary.BigEndian.PutUint32(w[off:], ttl)
	}
}

// cachePatchReply gives r the client's ID, RD bit and question case, and an
// OPT record exactly when the client sent one (RFC 6891 6.1.1).
func cachePatchReply(r, req *dns.Msg) {
	r.Id = req.Id
	r.RecursionDesired = req.RecursionDesired
	if len(r.Question) == 1 && len(req.Question) == 1 {
		r.Question[0].Name = req.Question[0].Name
	}
	StripOPT(r)
	if opt := req.IsEdns0(); opt != nil {
		r.SetEdns0(cacheEDNSSize, opt.Do())
	}
}

// cacheQuery is the query the cache sends upstream for q: no client ID, no
// client EDNS options, only what the key says.
func cacheQuery(q dns.Question, do, cd bool) *dns.Msg {
	m := new(dns.Msg) // the forwarder gives it a fresh ID per try
	m.RecursionDesired = true
	m.CheckingDisabled = cd
	m.Question = []dns.Question{q}
	m.SetEdns0(cacheEDNSSize, do)
	return m
}

// cacheCall is one upstream exchange shared by every identical miss.
type cacheCall struct {
	done chan struct{}
	ent  *cacheEntry // set when the reply was stored
	msg  *dns.Msg    // the upstream reply, read-only once done is closed
	err  error
}

// join returns the in-flight exchange for key, starting one when there is
// none. TCP and UDP clients do not share: a UDP exchange may end truncated.
// The exchange runs on its own goroutine with a context that keeps ctx's
// values but not its cancellation, so one client giving up does not fail
// the others.
func (c *Cache) join(ctx context.Context, h uint64, key []byte, tcp bool, query func() *dns.Msg) *cacheCall {
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

	q := query()
	ekey := bytes.Clone(key)
	go func() {
		if tracked {
			defer c.bg.Done()
		}
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.RefreshTimeout)
		defer cancel()
		m, err := c.next.Exchange(uctx, q)
		call.msg, call.err = m, err
		if err == nil && m != nil {
			if e := c.newEntry(m, ekey, q.Question[0]); e != nil {
				c.lru.Add(h, e)
				call.ent = e
			}
		} else if err != nil {
			c.log.Debug("upstream exchange failed", zap.String("name", q.Question[0].Name),
				zap.Uint16("type", q.Question[0].Qtype), zap.Error(err))
		}
		if call.ent == nil && cacheFailed(m, err) {
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

// newEntry builds the entry for an upstream reply, or nil when the reply
// must not be stored.
func (c *Cache) newEntry(m *dns.Msg, key []byte, q dns.Question) *cacheEntry {
	why := ""
	switch {
	case m.Truncated:
		why = "truncated"
	case m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError:
		why = "rcode " + dns.RcodeToString[m.Rcode]
	case len(m.Question) != 1 || m.Question[0].Qtype != q.Qtype || m.Question[0].Qclass != q.Qclass ||
		!strings.EqualFold(m.Question[0].Name, q.Name):
		why = "question mismatch"
	}
	if why != "" {
		c.log.Debug("reply not cached", zap.String("name", q.Name), zap.Uint16("type", q.Qtype), zap.String("reason", why))
		return nil
	}

	r := m.Copy()
	r.Id = 0
	r.Compress = true
	StripOPT(r)

	// Every record is served with one TTL, so it is the smallest of them.
	ttl := ^uint32(0)
	for _, s := range [...][]dns.RR{r.Answer, r.Ns, r.Extra} {
		for _, rr := range s {
			ttl = min(ttl, rr.Header().Ttl)
		}
	}
	if m.Rcode == dns.RcodeNameError || len(r.Answer) == 0 {
		// RFC 2308 section 5: the negative TTL is min(SOA TTL, SOA MINIMUM).
		var soa *dns.SOA
		for _, rr := range r.Ns {
			if s, ok := rr.(*dns.SOA); ok {
				soa = s
				break
			}
		}
		if soa == nil {
			c.log.Debug("reply not cached", zap.String("name", q.Name), zap.Uint16("type", q.Qtype),
				zap.String("reason", "negative without SOA"))
			return nil
		}
		ttl = cacheClamp(min(ttl, soa.Minttl), c.minT, c.negT)
	} else {
		ttl = cacheClamp(ttl, c.minT, c.maxT)
	}
	if ttl == 0 {
		return nil
	}

	wire, err := r.Pack()
	if err != nil {
		c.log.Debug("reply not cached", zap.String("name", q.Name), zap.Error(err))
		return nil
	}
	e := &cacheEntry{wire: wire, nameLen: len(key) - 5, flags: key[len(key)-1]}
	offs, ok := cacheTTLOffsets(wire)
	if !ok || len(wire) < 16+e.nameLen || !e.matches(key) {
		c.log.Debug("reply not cached", zap.String("name", q.Name), zap.String("reason", "unexpected wire layout"))
		return nil
	}
	// Hits unpack wire: make sure that works before storing it.
	if err := new(dns.Msg).Unpack(wire); err != nil {
		c.log.Debug("reply not cached", zap.String("name", q.Name), zap.Error(err))
		return nil
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
		n, ok := cacheSkipName(w, off)
		if !ok || n+4 > len(w) {
			return nil, false
		}
		off = n + 4
	}
	offs := make([]uint16, 0, rrs)
	for range rrs {
		n, ok := cacheSkipName(w, off)
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

// cacheSkipName returns the offset just past the name at off.
func cacheSkipName(w []byte, off int) (int, bool) {
	for off < len(w) {
		l := w[off]
		switch {
		case l == 0:
			return off + 1, true
		case l&0xC0 == 0xC0:
			return off + 2, off+2 <= len(w)
		case l&0xC0 != 0:
			return 0, false
		}
		off += 1 + int(l)
	}
	return 0, false
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
	var q dns.Question
	var m dns.Msg
	if err := m.Unpack(e.wire); err != nil || len(m.Question) != 1 {
		e.refreshing.Store(false)
		return
	}
	q = m.Question[0]
	do, cd := e.flags&cacheFlagDO != 0, e.flags&cacheFlagCD != 0
	// Not the client's context: the client already has its answer.
	call := c.join(context.Background(), h, key, false, func() *dns.Msg { return cacheQuery(q, do, cd) })
	<-call.done // join bounds the exchange with RefreshTimeout.
	if call.ent == nil {
		c.log.Debug("prefetch did not refresh", zap.String("name", q.Name), zap.Uint16("type", q.Qtype), zap.Error(call.err))
		e.refreshing.Store(false) // let a later hit try again; the entry still serves.
	}
}

// AppendHit is the allocation-free hit path for the wire server. When the
// cache holds a fresh answer for the packed query req, it appends the packed
// reply to dst (client's ID, RD bit, question case, remaining TTLs, and an
// OPT record when the query had one) and returns true. Otherwise dst comes
// back unchanged with false, and the caller takes the Exchange path, which
// counts the miss. A UDP reply must fit the client's buffer (512 bytes
// without EDNS); one that does not is left to the Exchange path, where the
// server truncates it.
func (c *Cache) AppendHit(dst, req []byte, tcp bool) ([]byte, bool) {
	var q dnswire.Query
	if dnswire.Parse(req, &q) != nil {
		return dst, false
	}
	return c.AppendHitQuery(dst, &q, tcp)
}

// AppendHitQuery is AppendHit for a query the caller has parsed already.
func (c *Cache) AppendHitQuery(dst []byte, q *dnswire.Query, tcp bool) ([]byte, bool) {
	if !cacheableType(q.Type) {
		return dst, false
	}
	var buf [cacheMaxKey]byte
	n := copy(buf[:], q.Raw)
	var flags byte
	if q.CD {
		flags |= cacheFlagCD
	}
	if q.DO {
		flags |= cacheFlagDO
	}
	_, e := c.lookup(cacheFinishKey(&buf, n, q.Type, q.Class, flags))
	if e == nil {
		return dst, false
	}
	ttl, fresh := e.remaining(c.now())
	if !fresh {
		return dst, false
	}
	size, limit := len(e.wire), 512
	if q.EDNS {
		size += dnswire.OPTLen
		limit = max(limit, int(q.UDPSize))
	}
	if tcp {
		limit = 0xffff
	}
	if size > limit {
		return dst, false
	}
	c.hits.Add(1)
	c.maybePrefetch(e, ttl)

	start := len(dst)
	dst = append(dst, e.wire...)
	out := dst[start:]
	copy(out[12:12+e.nameLen], q.Raw)
	e.patch(out, q.ID, q.RD, ttl)
	if q.EDNS {
		dst = dnswire.AppendOPT(dst, cacheEDNSSize, q.DO)
		ar := binary.BigEndian.Uint16(dst[start+10:])
		binary.BigEndian.PutUint16(dst[start+10:], ar+1)
	}
	return dst, true
}
