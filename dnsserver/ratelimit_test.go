package dnsserver

import (
	"net/netip"
	"testing"
	"time"
)

func TestLimiterRefills(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := newLimiter(RateLimit{QPS: 10, Burst: 3}, func() time.Time { return now })
	a := netip.MustParseAddr("172.18.0.2")
	b := netip.MustParseAddr("172.18.0.3")
	steps := []struct {
		advance time.Duration
		src     netip.Addr
		want    bool
	}{
		{0, a, true}, {0, a, true}, {0, a, true},
		{0, a, false},                     // burst spent
		{0, b, true},                      // other sources have their own bucket
		{100 * time.Millisecond, a, true}, // one token back at 10 qps
		{0, a, false},
		{time.Hour, a, true}, // refill is capped at the burst
		{0, a, true}, {0, a, true}, {0, a, false},
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		if got := l.allow(s.src); got != s.want {
			t.Fatalf("step %d: allow(%s) = %v, want %v", i, s.src, got, s.want)
		}
	}
}

func TestLimiterBoundsSources(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := newLimiter(RateLimit{QPS: 1, Burst: 1}, func() time.Time { return now })
	for i := range 3 * limiterShards * maxSourcesPerShard {
		l.allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	for i := range l.shards {
		if n := len(l.shards[i].buckets); n > maxSourcesPerShard {
			t.Errorf("shard %d holds %d sources, bound is %d", i, n, maxSourcesPerShard)
		}
	}
}
