package main

import "github.com/sidedns/sidedns/ops"

// startHTTP serves the ops surface on --http: /metrics, /healthz, /readyz,
// /api/v1/records and the live page.
func (a *app) startHTTP(cfg config) error {
	if cfg.HTTP == "" {
		return nil
	}
	reg := ops.NewRegistry()
	a.registerMetrics(reg)
	a.registerClusterMetrics(reg)
	a.ops = ops.New(ops.Config{
		Addr:     cfg.HTTP,
		Records:  a.res.Records,
		Ready:    func() bool { return a.watcher != nil && a.watcher.Ready() },
		Registry: reg,
		Logger:   a.log.Named("http"),
		Extra:    a.pageState,
		Cluster:  a.clusterStatus,
	})
	if err := a.ops.Start(); err != nil {
		return err // it names the address and suggests --http
	}
	a.stopHTTP = a.ops.Shutdown
	return nil
}
