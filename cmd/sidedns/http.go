package main

import (
	"context"

	"github.com/sidedns/sidedns/ops"
)

// startHTTP serves the ops surface on --http: /metrics, /healthz, /readyz,
// /api/v1/records, the service map (/api/v1/graph, /api/v1/problems) and
// the live page.
func (a *app) startHTTP(cfg config) error {
	if cfg.HTTP == "" {
		return nil
	}
	reg := ops.NewRegistry()
	a.registerMetrics(reg)
	a.registerClusterMetrics(reg)
	ocfg := ops.Config{
		Addr:     cfg.HTTP,
		Records:  a.res.Records,
		Ready:    func() bool { return a.watcher != nil && a.watcher.Ready() },
		Registry: reg,
		Logger:   a.log.Named("http"),
		Extra:    a.pageState,
		Cluster:  a.clusterStatus,
	}
	stopMap := func() {}
	if a.smap != nil { // not with --service-map off
		reg.MustRegister(a.smap)
		ocfg.ServiceMap = a.smap
	}
	a.ops = ops.New(ocfg)
	if err := a.ops.Start(); err != nil {
		return err // it names the address and suggests --http
	}
	if a.smap != nil {
		stopMap = a.runServiceMap()
	}
	a.stopHTTP = func(ctx context.Context) error {
		defer stopMap()
		return a.ops.Shutdown(ctx)
	}
	return nil
}
