package servicemap

import (
	"math"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestSeries(t *testing.T) {
	m, c := newMap(t)
	q := query(t, "example.com")
	at := c.now().Add(-Step)
	for range 10 {
		m.Record(at, web, q, dns.RcodeSuccess, 1, "local", 0)
	}
	for range 5 {
		m.Record(at, web, q, dns.RcodeSuccess, 1, "cache", 0)
	}
	for _, d := range []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond, time.Millisecond, 100 * time.Millisecond} {
		m.Record(at, web, q, dns.RcodeSuccess, 1, "upstream", d)
	}
	m.Record(at, web, q, dns.RcodeRefused, 0, "server", 0) // not a source the charts show

	pts := m.Series(time.Time{})
	if len(pts) != nSteps-1 {
		t.Fatalf("%d points, want %d over the window", len(pts), nSteps-1)
	}
	p := pts[len(pts)-2]
	secs := Step.Seconds()
	if p.Local != 10/secs || p.Cache != 5/secs || p.Upstream != 5/secs || deref(p.CacheRatio) != 0.5 {
		t.Errorf("point %+v, want 10, 5, 5 lookups in %v and a cache ratio of 0.5", p, Step)
	}
	near := func(got *float64, want float64) bool {
		return got != nil && math.Abs(*got-want)/want <= 0.2
	}
	if !near(p.UpstreamP50, 1) || !near(p.UpstreamP95, 100) {
		t.Errorf("upstream p50 %v ms, p95 %v ms; want about 1 and 100", deref(p.UpstreamP50), deref(p.UpstreamP95))
	}
	if last := pts[len(pts)-1]; last.Local != 0 || last.UpstreamP50 != nil {
		t.Errorf("the current step has no lookups but shows %+v", last)
	}
}

func deref(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}
