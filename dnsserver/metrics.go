package dnsserver

import (
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// source says where an answer came from, the "source" label of
// sidedns_queries_total.
type source uint8

const (
	srcLocal    source = iota // the container table
	srcCache                  // a fresh cache entry
	srcUpstream               // an upstream's reply
	srcStale                  // an expired cache entry served because upstreams failed
	srcServer                 // a reply the server made itself: REFUSED, FORMERR, SERVFAIL
	nSources
)

var sourceNames = [nSources]string{"local", "cache", "upstream", "stale", "server"}

// countedTypes are the query types counted under their own name; the rest are
// "other", so a client cannot blow up the label set.
var countedTypes = [...]uint16{dns.TypeA, dns.TypeAAAA, dns.TypePTR, dns.TypeSRV, dns.TypeMX,
	dns.TypeTXT, dns.TypeCNAME, dns.TypeNS, dns.TypeSOA, dns.TypeANY, dns.TypeHTTPS, dns.TypeSVCB}

const (
	nTypes  = len(countedTypes) + 1
	nRcodes = 6 + 1 // NOERROR..REFUSED, then "other"
)

func typeIndex(t uint16) int {
	for i, c := range countedTypes {
		if c == t {
			return i
		}
	}
	return nTypes - 1
}

func rcodeIndex(rc int) int { return min(max(rc, 0), nRcodes-1) }

// metrics are the per-query counters; atomics, so the query path takes no
// lock and allocates nothing, turned into Prometheus metrics at scrape time.
type metrics struct {
	queries  [nTypes][nRcodes][nSources]atomic.Uint64
	duration prometheus.Histogram
}

func newMetrics() *metrics {
	return &metrics{duration: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "sidedns_query_duration_seconds",
		Help:    "Time from reading a query to writing its answer.",
		Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5},
	})}
}

func (m *metrics) observe(qtype uint16, rcode int, src source, start time.Time) {
	m.queries[typeIndex(qtype)][rcodeIndex(rcode)][src].Add(1)
	m.duration.Observe(time.Since(start).Seconds())
}

var (
	descQueries     = prometheus.NewDesc("sidedns_queries_total", "Answered queries by type, rcode and where the answer came from.", []string{"type", "rcode", "source"}, nil)
	descRefused     = prometheus.NewDesc("sidedns_queries_refused_total", "Queries from sources outside the allow list, answered REFUSED.", nil, nil)
	descRateLimited = prometheus.NewDesc("sidedns_queries_rate_limited_total", "Queries over the per-source rate limit (UDP slipped or dropped, TCP REFUSED).", nil, nil)
	descSlipped     = prometheus.NewDesc("sidedns_queries_slipped_total", "Rate-limited UDP queries answered with an empty TC=1 reply, so that honest clients retry over TCP.", nil, nil)
	descMalformed   = prometheus.NewDesc("sidedns_packets_malformed_total", "Packets that were not a parsable query, dropped.", nil, nil)
	descOverloaded  = prometheus.NewDesc("sidedns_forward_overloaded_total", "Queries answered REFUSED because too many upstream queries were outstanding.", nil, nil)
)

// Describe implements prometheus.Collector.
func (s *Server) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueries, descRefused, descRateLimited, descSlipped, descMalformed, descOverloaded} {
		ch <- d
	}
	s.metrics.duration.Describe(ch)
}

// Collect implements prometheus.Collector.
func (s *Server) Collect(ch chan<- prometheus.Metric) {
	for t := range nTypes {
		typ := "other"
		if t < len(countedTypes) {
			typ = typeString(countedTypes[t])
		}
		for rc := range nRcodes {
			rcName := "other"
			if rc < nRcodes-1 {
				rcName = dns.RcodeToString[rc]
			}
			for src := range nSources {
				if n := s.metrics.queries[t][rc][src].Load(); n > 0 {
					ch <- prometheus.MustNewConstMetric(descQueries, prometheus.CounterValue, float64(n), typ, rcName, sourceNames[src])
				}
			}
		}
	}
	for d, v := range map[*prometheus.Desc]uint64{
		descRefused:     s.Stats.Refused.Load(),
		descRateLimited: s.Stats.RateLimited.Load(),
		descSlipped:     s.Stats.Slipped.Load(),
		descMalformed:   s.Stats.Malformed.Load(),
		descOverloaded:  s.Stats.Overloaded.Load(),
	} {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	s.metrics.duration.Collect(ch)
}
