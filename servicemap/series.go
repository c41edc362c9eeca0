package servicemap

import (
	"math"
	"sync/atomic"
	"time"
)

const (
	// Step is the resolution of the time charts: 90 points over the window.
	Step   = 10 * time.Second
	nSteps = int(Window/Step) + 1
	// Upstream latency is kept in log-spaced buckets from latencyMin up,
	// four per doubling, which puts a quantile within 19% of the truth.
	latencyMin = 50 * time.Microsecond
	perDouble  = 4
	nLatency   = 18 * perDouble // 50 µs to about 13 s
)

// Sources counted in the charts.
const (
	srcLocal = iota
	srcCache // fresh and stale cache entries
	srcUpstream
	nSrc
)

type step struct {
	at      atomic.Int64 // the step (Unix time / Step) the counters hold
	by      [nSrc]atomic.Uint32
	latency [nLatency]atomic.Uint32
}

// series are the whole server's lookups by Step, for the charts.
type series struct{ steps [nSteps]step }

func (s *series) add(ns int64, via string, took time.Duration) {
	src := -1
	switch via {
	case "local":
		src = srcLocal
	case "cache", "stale":
		src = srcCache
	case "upstream":
		src = srcUpstream
	}
	if src < 0 {
		return
	}
	n := ns / int64(Step)
	st := &s.steps[n%int64(nSteps)]
	if old := st.at.Load(); old != n && st.at.CompareAndSwap(old, n) {
		for i := range st.by {
			st.by[i].Store(0)
		}
		for i := range st.latency {
			st.latency[i].Store(0)
		}
	}
	st.by[src].Add(1)
	if src == srcUpstream {
		st.latency[latencyBucket(took)].Add(1)
	}
}

func latencyBucket(d time.Duration) int {
	if d <= latencyMin {
		return 0
	}
	i := int(math.Log2(float64(d)/float64(latencyMin)) * perDouble)
	return min(i+1, nLatency-1)
}

// latencyUpper is the upper bound of bucket i.
func latencyUpper(i int) time.Duration {
	return time.Duration(float64(latencyMin) * math.Exp2(float64(i)/perDouble))
}

// Point is one step of the charts. Rates are per second; the latencies are
// of upstream answers in the step, in milliseconds, and absent without any.
type Point struct {
	Time        time.Time `json:"t"`
	Local       float64   `json:"local"`
	Cache       float64   `json:"cache"`
	Upstream    float64   `json:"upstream"`
	CacheRatio  *float64  `json:"cacheRatio,omitempty"` // cache answers over cache and upstream answers
	UpstreamP50 *float64  `json:"upstreamP50,omitempty"`
	UpstreamP95 *float64  `json:"upstreamP95,omitempty"`
	// The pointers are absent in a step without cache or upstream answers.
}

// points returns the steps from first to last, empty ones included.
func (s *series) points(first, last int64) []Point {
	out := make([]Point, 0, last-first+1)
	secs := Step.Seconds()
	for n := first; n <= last; n++ {
		p := Point{Time: time.Unix(0, n*int64(Step)).UTC()}
		st := &s.steps[n%int64(nSteps)]
		if st.at.Load() != n {
			out = append(out, p)
			continue
		}
		local, cache, up := st.by[srcLocal].Load(), st.by[srcCache].Load(), st.by[srcUpstream].Load()
		p.Local, p.Cache, p.Upstream = float64(local)/secs, float64(cache)/secs, float64(up)/secs
		if cache+up > 0 {
			r := float64(cache) / float64(cache+up)
			p.CacheRatio = &r
		}
		var hist [nLatency]uint32
		var total uint32
		for i := range hist {
			hist[i] = st.latency[i].Load()
			total += hist[i]
		}
		if total > 0 {
			p50, p95 := quantile(hist[:], total, 0.5), quantile(hist[:], total, 0.95)
			p.UpstreamP50, p.UpstreamP95 = &p50, &p95
		}
		out = append(out, p)
	}
	return out
}

// quantile is the upper bound, in milliseconds, of the bucket that holds
// the q-th answer.
func quantile(hist []uint32, total uint32, q float64) float64 {
	rank := uint32(math.Ceil(q * float64(total)))
	var seen uint32
	for i, n := range hist {
		if seen += n; seen >= rank {
			return float64(latencyUpper(i)) / float64(time.Millisecond)
		}
	}
	return float64(latencyUpper(len(hist)-1)) / float64(time.Millisecond)
}

// Series returns the chart points from since (zero: the whole window) to now.
func (m *Map) Series(since time.Time) []Point {
	now := m.now()
	last := now.UnixNano() / int64(Step)
	first := last - int64(nSteps-2)
	if !since.IsZero() {
		first = min(max(first, since.UnixNano()/int64(Step)), last)
	}
	return m.series.points(first, last)
}
