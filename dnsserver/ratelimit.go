package dnsserver

import (
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/sidedns/sidedns/dnswire"
)

// DefaultRateLimitQPS is the per-source limit sidedns starts with. A busy
// container that resolves 1,000 new connections a second without a cache
// sends A and AAAA for each, and a search list can double that: about 4,000
// q/s. 10,000 leaves room above that, and is still a tenth of what one
// 2-core host answers (~100k local-name QPS), so one source cannot take it
// all. The burst is twice the rate, which absorbs a restart storm.
const DefaultRateLimitQPS = 10000

// DefaultSlip is the slip sidedns starts with, BIND RRL's default: every
// second UDP query over the limit gets an empty TC=1 reply.
const DefaultSlip = 2

// limiterShards spreads sources over independent locks so that cores do not
// contend on one mutex.
const limiterShards = 16

// maxSourcesPerShard bounds memory when many sources (or spoofed ones) query.
const maxSourcesPerShard = 4096

// verdict is what the limiter says about one query.
type verdict uint8

const (
	verdictAllow verdict = iota // answer it
	verdictSlip                 // UDP over the limit: empty reply with TC=1, so an honest client retries over TCP
	verdictDrop                 // over the limit: UDP drops it, TCP answers REFUSED
)

// limiter is a per-source token bucket.
type limiter struct {
	rate   float64 // tokens per second
	burst  float64
	slip   uint32
	now    func() time.Time
	shards [limiterShards]limiterShard
}

// limiterShard holds the buckets of some sources. The table evicts the least
// recently seen source, never all of them: a flood of spoofed sources then
// cannot reset the bucket of the source that really floods, which keeps
// querying and so stays recent.
type limiterShard struct {
	mu      sync.Mutex
	buckets *simplelru.LRU[netip.Addr, *bucket]
}

type bucket struct {
	tokens float64
	last   time.Time
	over   uint32 // UDP queries over the limit, for the slip ratio
}

func newLimiter(rl RateLimit, now func() time.Time) *limiter {
	burst := float64(rl.Burst)
	if burst == 0 {
		burst = 2 * rl.QPS
	}
	if burst < 1 {
		burst = 1
	}
	l := &limiter{rate: rl.QPS, burst: burst, slip: uint32(rl.Slip), now: now}
	for i := range l.shards {
		// NewLRU fails only for a size below 1.
		l.shards[i].buckets, _ = simplelru.NewLRU[netip.Addr, *bucket](maxSourcesPerShard, nil)
	}
	return l
}

// check takes one token from src's bucket. Over the limit, every slip-th UDP
// query from src (the first one included) gets verdictSlip and the others
// verdictDrop; TCP gets verdictDrop, since a TCP client is not spoofed and
// its REFUSED reaches the real sender.
func (l *limiter) check(src netip.Addr, tcp bool) verdict {
	now := l.now()
	sh := &l.shards[shardOf(src)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b, ok := sh.buckets.Get(src)
	if !ok {
		if sh.buckets.Len() >= maxSourcesPerShard {
			_, b, _ = sh.buckets.RemoveOldest() // reuse its bucket
		} else {
			b = new(bucket)
		}
		*b = bucket{tokens: l.burst, last: now}
		sh.buckets.Add(src, b)
	} else if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(l.burst, b.tokens+el*l.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return verdictAllow
	}
	if tcp || l.slip == 0 {
		return verdictDrop
	}
	n := b.over
	b.over++
	if n%l.slip == 0 {
		return verdictSlip
	}
	return verdictDrop
}

func shardOf(a netip.Addr) int {
	b := a.As16()
	return int(b[15]^b[14]^b[13]^b[11]) % limiterShards
}

// checkRate applies the rate limit to a UDP query from src and counts the
// ones over it.
func (s *Server) checkRate(src netip.Addr) verdict {
	if s.limiter == nil {
		return verdictAllow
	}
	v := s.limiter.check(src, false)
	if v != verdictAllow {
		s.Stats.RateLimited.Add(1)
	}
	return v
}

// slipReply makes the reply to a UDP query that was slipped: empty, with
// TC=1, RA, RD and CD set as for any reply, the question echoed, and an OPT
// when the query had one. A packet that is not a plain query is dropped.
func (s *Server) slipReply(dst, pkt []byte, q *dnswire.Query) ([]byte, bool) {
	if dnswire.Parse(pkt, q) != nil {
		return nil, false
	}
	s.Stats.Slipped.Add(1)
	return dnswire.AppendTruncated(dst, q), true
}
