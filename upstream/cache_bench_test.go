package upstream_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/dnswire"
	"github.com/sidedns/sidedns/upstream"
)

const cacheBenchNames = 1000

// cacheBenchWarm returns a cache holding cacheBenchNames A answers and the
// parsed queries (with EDNS) that hit them.
func cacheBenchWarm(b *testing.B) (*upstream.Cache, []*dnswire.Query) {
	b.Helper()
	c, _, _ := cacheSetup(b, upstream.CacheConfig{})
	qs := make([]*dnswire.Query, cacheBenchNames)
	for i := range qs {
		m := cacheQ(fmt.Sprintf("Host-%d.Bench.Example.", i), dns.TypeA)
		m.SetEdns0(1232, false)
		cacheAsk(b, c, m)
		qs[i] = cacheWireQuery(b, m.Question[0].Name, dns.TypeA, uint16(i), true, false)
	}
	return c, qs
}

// BenchmarkCacheResolveHit is Resolve on a fresh entry, then Finish.
func BenchmarkCacheResolveHit(b *testing.B) {
	c, qs := cacheBenchWarm(b)
	ctx := context.Background()
	dst := make([]byte, 0, 4096)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		q := qs[i%len(qs)]
		out, _, err := c.Resolve(ctx, dst[:0], q, false)
		if err != nil {
			b.Fatal(err)
		}
		if dst, _ = dnswire.Finish(out, 0, q, false, dnswire.Limit(q, false)); len(dst) == 0 {
			b.Fatal("empty reply")
		}
		i++
	}
}

// BenchmarkCacheAppendHit is the server's hit path: AppendHit, then Finish.
func BenchmarkCacheAppendHit(b *testing.B) {
	c, qs := cacheBenchWarm(b)
	dst := make([]byte, 0, 4096)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		q := qs[i%len(qs)]
		out, ok := c.AppendHit(dst[:0], q)
		if !ok {
			b.Fatal("miss")
		}
		dst, _ = dnswire.Finish(out, 0, q, false, dnswire.Limit(q, false))
		i++
	}
}

func BenchmarkCacheAppendHitParallel(b *testing.B) {
	c, qs := cacheBenchWarm(b)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		dst := make([]byte, 0, 4096)
		i := 0
		for pb.Next() {
			q := qs[i%len(qs)]
			out, ok := c.AppendHit(dst[:0], q)
			if !ok {
				b.Error("miss")
				return
			}
			dst, _ = dnswire.Finish(out, 0, q, false, dnswire.Limit(q, false))
			i++
		}
	})
}

// cacheBenchMisses returns n distinct parsed queries.
func cacheBenchMisses(b *testing.B, n int, format string) []*dnswire.Query {
	b.Helper()
	qs := make([]*dnswire.Query, n)
	for i := range qs {
		qs[i] = cacheWireQuery(b, fmt.Sprintf(format, i), dns.TypeA, uint16(i), false, false)
	}
	return qs
}

// BenchmarkCacheMiss measures the cache's own cost on a miss (the fake
// upstream answers at once): key, flight, upstream query, entry build and
// store, reply.
func BenchmarkCacheMiss(b *testing.B) {
	c, _, _ := cacheSetup(b, upstream.CacheConfig{Size: 1024})
	ctx := context.Background()
	qs := cacheBenchMisses(b, 4096, "miss-%d.bench.example.")
	dst := make([]byte, 0, 4096)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		q := qs[i%len(qs)]
		out, _, err := c.Resolve(ctx, dst[:0], q, false)
		if err != nil {
			b.Fatal(err)
		}
		dst, _ = dnswire.Finish(out, 0, q, false, dnswire.Limit(q, false))
		i++
	}
}

// BenchmarkCacheMissForwarded is a miss through a real Forwarder to a
// miekg/dns server on loopback, whose own work (unpack, handler, pack) is
// counted too: every pack and unpack of the forwarded path shows here.
func BenchmarkCacheMissForwarded(b *testing.B) {
	c, _ := cacheOverForwarder(b, upstream.CacheConfig{Size: 1024}, cacheAnswerA(300))
	ctx := context.Background()
	qs := cacheBenchMisses(b, 4096, "fwd-%d.bench.example.")
	dst := make([]byte, 0, 4096)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		q := qs[i%len(qs)]
		out, _, err := c.Resolve(ctx, dst[:0], q, false)
		if err != nil {
			b.Fatal(err)
		}
		dst, _ = dnswire.Finish(out, 0, q, false, dnswire.Limit(q, false))
		i++
	}
}

// BenchmarkCacheMemory reports the heap held per entry (one A record each),
// against DESIGN 6's budget (unbound: ~650 B per name).
func BenchmarkCacheMemory(b *testing.B) {
	const entries = 100_000
	qs := cacheBenchMisses(b, entries, "host-%d.mem.example.")
	ctx := context.Background()
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		c, _, _ := cacheSetup(b, upstream.CacheConfig{Size: entries})
		for _, q := range qs {
			if _, _, err := c.Resolve(ctx, nil, q, false); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/entries, "B/entry")
		runtime.KeepAlive(c)
	}
}
