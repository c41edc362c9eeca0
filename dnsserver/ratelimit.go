package dnsserver

import (
	"net/netip"
	"sync"
	"time"
)

// limiterShards spreads sources over independent locks so that cores do not
// contend on one mutex.
const limiterShards = 16

// maxSourcesPerShard bounds memory when many sources (or spoofed ones) query.
const maxSourcesPerShard = 4096

// limiter is a per-source token bucket.
type limiter struct {
	rate   float64 // tokens per second
	burst  float64
	now    func() time.Time
	shards [limiterShards]limiterShard
}

type limiterShard struct {
	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rl RateLimit, now func() time.Time) *limiter {
	burst := float64(rl.Burst)
	if burst == 0 {
		burst = 2 * rl.QPS
	}
	if burst < 1 {
		burst = 1
	}
	l := &limiter{rate: rl.QPS, burst: burst, now: now}
	for i := range l.shards {
		l.shards[i].buckets = make(map[netip.Addr]*bucket)
	}
	return l
}

// allow takes one token from src's bucket and reports whether there was one.
func (l *limiter) allow(src netip.Addr) bool {
	now := l.now()
	sh := &l.shards[shardOf(src)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b := sh.buckets[src]
	if b == nil {
		if len(sh.buckets) >= maxSourcesPerShard {
			l.sweep(sh, now)
		}
		b = &bucket{tokens: l.burst, last: now}
		sh.buckets[src] = b
	} else if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(l.burst, b.tokens+el*l.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep forgets sources whose bucket has refilled (they would start full
// anyway); if none has, it forgets them all rather than grow without bound.
func (l *limiter) sweep(sh *limiterShard, now time.Time) {
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for a, b := range sh.buckets {
		if now.Sub(b.last) >= full {
			delete(sh.buckets, a)
		}
	}
	if len(sh.buckets) >= maxSourcesPerShard {
		clear(sh.buckets)
	}
}

func shardOf(a netip.Addr) int {
	b := a.As16()
	return int(b[15]^b[14]^b[13]^b[11]) % limiterShards
}
