package main

import (
	"context"
	"time"

	"github.com/sidedns/sidedns/dnsserver"
	"github.com/sidedns/sidedns/servicemap"
)

// recorder makes the lookup map when the ops surface is on to show it and
// --service-map is not off; its writer runs from startHTTP.
func (a *app) recorder(cfg config) dnsserver.Recorder {
	if cfg.HTTP == "" || cfg.NoServiceMap {
		return nil
	}
	a.smap = servicemap.New(a.res, time.Now)
	return a.smap
}

// runServiceMap inserts new edges in the background; the returned func
// stops it and waits.
func (a *app) runServiceMap() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.smap.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}
