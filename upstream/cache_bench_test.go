package upstream_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/upstream"
)

const cacheBenchNames = 1000

// cacheBenchWarm returns a cache holding cacheBenchNames A answers.
func cacheBenchWarm(b *testing.B) (*upstream.Cache, []*dns.Msg) {
	b.Helper()
	c, _, _ := cacheSetup(b, upstream.CacheConfig{})
	qs := make([]*dns.Msg, cacheBenchNames)
	for i := range qs {
		qs[i] = cacheQ(fmt.Sprintf("Host-%d.Bench.Example.", i), dns.TypeA)
		qs[i].SetEdns0(1232, false)
		cacheAsk(b, c, qs[i])
	}
	return c, qs
}

func BenchmarkCacheExchangeHit(b *testing.B) {
	c, qs := cacheBenchWarm(b)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := c.Exchange(ctx, qs[i%len(qs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkCacheAppendHit(b *testing.B) {
	c, qs := cacheBenchWarm(b)
	reqs := make([][]byte, len(qs))
	for i, q := range qs {
		reqs[i] = cacheWireQuery(b, q.Question[0].Name, dns.TypeA, uint16(i), true, false)
	}
	dst := make([]byte, 0, 4096)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		var ok bool
		dst, ok = c.AppendHit(dst[:0], reqs[i%len(reqs)], false)
		if !ok {
			b.Fatal("miss")
		}
		i++
	}
}

func BenchmarkCacheAppendHitParallel(b *testing.B) {
	c, qs := cacheBenchWarm(b)
	reqs := make([][]byte, len(qs))
	for i, q := range qs {
		reqs[i] = cacheWireQuery(b, q.Question[0].Name, dns.TypeA, uint16(i), true, false)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		dst := make([]byte, 0, 4096)
		i := 0
		for pb.Next() {
			var ok bool
			dst, ok = c.AppendHit(dst[:0], reqs[i%len(reqs)], false)
			if !ok {
				b.Error("miss")
				return
			}
			i++
		}
	})
}

// BenchmarkCacheMiss measures the cache's own cost on a miss (the fake
// upstream answers at once): key, flight, entry build and store.
func BenchmarkCacheMiss(b *testing.B) {
	c, _, _ := cacheSetup(b, upstream.CacheConfig{Size: 1024})
	ctx := context.Background()
	qs := make([]*dns.Msg, 4096)
	for i := range qs {
		qs[i] = cacheQ(fmt.Sprintf("miss-%d.bench.example.", i), dns.TypeA)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := c.Exchange(ctx, qs[i%len(qs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkCacheMemory reports the heap held per entry (one A record each),
// against DESIGN 6's budget (unbound: ~650 B per name).
func BenchmarkCacheMemory(b *testing.B) {
	const entries = 100_000
	qs := make([]*dns.Msg, entries)
	for i := range qs {
		qs[i] = cacheQ(fmt.Sprintf("host-%d.mem.example.", i), dns.TypeA)
	}
	ctx := context.Background()
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		c, _, _ := cacheSetup(b, upstream.CacheConfig{Size: entries})
		for _, q := range qs {
			if _, err := c.Exchange(ctx, q); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/entries, "B/entry")
		runtime.KeepAlive(c)
	}
}
