package ops

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// NewRegistry returns a registry with the Go runtime (go_*), process
// (process_*) and build info collectors registered. sidedns uses its own
// registry rather than the global default so tests can build many servers.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)
	return reg
}

// NewFuncCollector returns a collector whose metrics collect builds at
// scrape time. Use it for labelled values that live in atomics (per-upstream
// queries, failures, health), which prometheus.NewCounterFunc cannot label.
// collect sends prometheus.MustNewConstMetric values for descs, e.g.
//
//	desc := prometheus.NewDesc("sidedns_upstream_queries_total",
//		"Queries sent to each upstream.", []string{"upstream"}, nil)
//	reg.MustRegister(ops.NewFuncCollector([]*prometheus.Desc{desc},
//		func(ch chan<- prometheus.Metric) {
//			for _, st := range fwd.ServerStats() {
//				ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue,
//					float64(st.Queries), st.Spec.String())
//			}
//		}))
func NewFuncCollector(descs []*prometheus.Desc, collect func(ch chan<- prometheus.Metric)) prometheus.Collector {
	return &funcCollector{descs: descs, collect: collect}
}

type funcCollector struct {
	descs   []*prometheus.Desc
	collect func(ch chan<- prometheus.Metric)
}

func (c *funcCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *funcCollector) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }
