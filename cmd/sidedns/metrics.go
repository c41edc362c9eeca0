package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidedns/sidedns/ops"
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("sidedns_"+name, help, labels, nil)
}

var (
	descTableNames      = desc("table_names", "Names in the container table, counted per network.")
	descTableContainers = desc("table_containers", "Containers in the table, in any state.")
	descFailOpen        = desc("health_failopen_total", "Answers that fell back to unhealthy containers because no healthy one was left.")
	descPublishes       = desc("table_publishes_total", "New tables swapped in.")

	descCacheEntries    = desc("cache_entries", "Entries in the upstream answer cache.")
	descCacheHits       = desc("cache_hits_total", "Cache lookups answered from a fresh entry.")
	descCacheMisses     = desc("cache_misses_total", "Cache lookups that went upstream.")
	descCacheEvictions  = desc("cache_evictions_total", "Entries pushed out by the size bound.")
	descCacheStale      = desc("cache_stale_served_total", "Expired entries served because every upstream failed (RFC 8767).")
	descCachePrefetches = desc("cache_prefetches_total", "Background refreshes of popular entries near expiry.")
	descCacheCoalesced  = desc("cache_coalesced_total", "Misses that joined an identical query already in flight.")

	descUpQueries  = desc("upstream_queries_total", "Queries sent to each upstream (tries).", "upstream")
	descUpFailures = desc("upstream_failures_total", "Tries that timed out, failed on the network, or got SERVFAIL/REFUSED.", "upstream")
	descUpAnswers  = desc("upstream_answers_total", "Replies received from each upstream.", "upstream")
	descUpLatency  = desc("upstream_latency_seconds_total", "Sum of reply times over upstream_answers_total; the ratio is the mean latency.", "upstream")
	descUpUp       = desc("upstream_up", "1 while the upstream is considered healthy, 0 while it is probed.", "upstream")
	descUpInflight = desc("upstream_inflight", "Upstream queries outstanding.")

	descDockerConnected = desc("docker_connected", "1 while the Docker event stream is up.")
	descDockerReady     = desc("docker_synced", "1 once the first full Docker sync is done.")
	descDockerEvents    = desc("docker_events_total", "Table-relevant Docker events received.")
	descDockerResyncs   = desc("docker_resyncs_total", "Full list-and-inspect passes.")
	descDockerErrors    = desc("docker_errors_total", "Failed Docker sessions: unreachable daemon, broken stream, failed calls.")
)

// registerMetrics exports every component's counters. They stay atomics in
// their packages and become Prometheus metrics only when scraped.
func (a *app) registerMetrics(reg *prometheus.Registry) {
	reg.MustRegister(a.srv)
	counter := func(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}

	reg.MustRegister(ops.NewFuncCollector(
		[]*prometheus.Desc{descTableNames, descTableContainers, descFailOpen, descPublishes},
		func(ch chan<- prometheus.Metric) {
			names, containers := a.res.Size()
			gauge(ch, descTableNames, float64(names))
			gauge(ch, descTableContainers, float64(containers))
			counter(ch, descFailOpen, a.res.Stats.FailOpen.Load())
			counter(ch, descPublishes, a.res.Stats.Publishes.Load())
		}))

	reg.MustRegister(ops.NewFuncCollector(
		[]*prometheus.Desc{descUpQueries, descUpFailures, descUpAnswers, descUpLatency, descUpUp, descUpInflight},
		func(ch chan<- prometheus.Metric) {
			for _, st := range a.fwd.ServerStats() {
				name := st.Spec.String()
				counter(ch, descUpQueries, st.Queries, name)
				counter(ch, descUpFailures, st.Failures, name)
				counter(ch, descUpAnswers, st.Answers, name)
				ch <- prometheus.MustNewConstMetric(descUpLatency, prometheus.CounterValue, st.LatencySum.Seconds(), name)
				gauge(ch, descUpUp, b2f(st.Up), name)
			}
			gauge(ch, descUpInflight, float64(a.fwd.Inflight()))
		}))

	reg.MustRegister(ops.NewFuncCollector(
		[]*prometheus.Desc{descCacheEntries, descCacheHits, descCacheMisses, descCacheEvictions, descCacheStale, descCachePrefetches, descCacheCoalesced},
		func(ch chan<- prometheus.Metric) {
			st := a.cache.Stats()
			gauge(ch, descCacheEntries, float64(a.cache.Len()))
			counter(ch, descCacheHits, st.Hits)
			counter(ch, descCacheMisses, st.Misses)
			counter(ch, descCacheEvictions, st.Evictions)
			counter(ch, descCacheStale, st.Stale)
			counter(ch, descCachePrefetches, st.Prefetches)
			counter(ch, descCacheCoalesced, st.Coalesced)
		}))

	reg.MustRegister(ops.NewFuncCollector(
		[]*prometheus.Desc{descDockerConnected, descDockerReady, descDockerEvents, descDockerResyncs, descDockerErrors},
		func(ch chan<- prometheus.Metric) {
			w := a.watcher
			if w == nil {
				gauge(ch, descDockerConnected, 0)
				gauge(ch, descDockerReady, 0)
				return
			}
			gauge(ch, descDockerConnected, b2f(w.Connected()))
			gauge(ch, descDockerReady, b2f(w.Ready()))
			counter(ch, descDockerEvents, w.Stats.Events.Load())
			counter(ch, descDockerResyncs, w.Stats.Resyncs.Load())
			counter(ch, descDockerErrors, w.Stats.Errors.Load())
		}))
}

// pageState is the cache, upstream and Docker state shown on the live page.
func (a *app) pageState() map[string]any {
	out := map[string]any{}
	st := a.cache.Stats()
	out["cache"] = map[string]any{"entries": a.cache.Len(), "hits": st.Hits, "misses": st.Misses,
		"evictions": st.Evictions, "stale": st.Stale, "prefetches": st.Prefetches}
	var ups []map[string]any
	for _, st := range a.fwd.ServerStats() {
		u := map[string]any{"address": st.Spec.String(), "healthy": st.Up, "queries": st.Queries, "failures": st.Failures}
		if st.Answers > 0 {
			u["latency ms"] = float64(st.LatencySum.Microseconds()) / 1000 / float64(st.Answers)
		}
		ups = append(ups, u)
	}
	out["upstreams"] = ups
	if a.watcher != nil {
		out["docker"] = map[string]any{"connected": a.watcher.Connected(), "resyncs": a.watcher.Stats.Resyncs.Load(),
			"events": a.watcher.Stats.Events.Load()}
	} else {
		out["docker"] = map[string]any{"connected": false}
	}
	a.clusterPage(out)
	return out
}
