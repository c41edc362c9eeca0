package ops_test

import (
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidedns/sidedns/ops"
)

func TestFuncCollectorReadsAtomicsAtScrape(t *testing.T) {
	var q1, q2 atomic.Uint64
	desc := prometheus.NewDesc("sidedns_upstream_queries_total", "Queries sent to each upstream.", []string{"upstream"}, nil)
	reg := prometheus.NewRegistry()
	reg.MustRegister(ops.NewFuncCollector([]*prometheus.Desc{desc}, func(ch chan<- prometheus.Metric) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(q1.Load()), "127.0.0.1:53")
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(q2.Load()), "127.0.0.2:53")
	}))
	q1.Add(3)
	q2.Add(5)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "sidedns_upstream_queries_total" || mf.GetType().String() != "COUNTER" {
			t.Errorf("family %s of type %s", mf.GetName(), mf.GetType())
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if got["127.0.0.1:53"] != 3 || got["127.0.0.2:53"] != 5 || len(got) != 2 {
		t.Errorf("scraped %v, want 127.0.0.1:53=3 127.0.0.2:53=5", got)
	}
}
