package main

import (
	"time"

	"go.uber.org/zap"

	"github.com/sidedns/sidedns/resolver"
)

// loopbackCheckInterval is how often watchLoopbackOnly looks; the check reads two flags and the table.
const loopbackCheckInterval = 5 * time.Second

// loopbackOnly warns once when queries have arrived, every one from loopback, while containers sit on
// user-defined networks. Then no container reaches sidedns directly: a loopback --dns is asked from the
// container's own namespace and never arrives, and current engines ask a loopback nameserver of the
// host's resolv.conf from the host's namespace, so sidedns sees the host, not the container, and cannot
// scope the answer.
type loopbackOnly struct {
	sources func() (loopback, other bool)
	table   func() resolver.Topology
	log     *zap.Logger
}

// check logs the warning when the condition holds and reports whether it did.
func (c loopbackOnly) check() bool {
	lo, other := c.sources()
	if !lo || other {
		return false
	}
	var names []string
	for _, ctr := range c.table().Containers {
		for _, ep := range ctr.Endpoints {
			if ep.NetworkName != defaultBridgeNetwork && ep.IPv4.IsValid() {
				names = append(names, ctr.Name)
				break
			}
		}
		if len(names) == 3 {
			break
		}
	}
	if len(names) == 0 {
		return false
	}
	c.log.Warn("every query so far came from loopback while containers are on user-defined networks: "+
		"sidedns cannot see or scope the asking containers (a loopback --dns never reaches it; a loopback "+
		"resolver in the host's resolv.conf is asked from the host); give containers --dns <bridge gateway> "+
		"and listen there",
		zap.Strings("for_example", names))
	return true
}

// defaultBridgeNetwork is the default bridge's network name, where Docker runs no embedded DNS.
const defaultBridgeNetwork = "bridge"

// watch runs check on every tick until it has warned or done closes.
func (c loopbackOnly) watch(tick <-chan time.Time, done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case <-tick:
			if c.check() {
				return
			}
		}
	}
}

// watchLoopbackOnly starts the loopback-only check in the background; stop ends it.
func (a *app) watchLoopbackOnly() {
	c := loopbackOnly{sources: a.srv.Sources, table: func() resolver.Topology { t, _ := a.res.Records(); return t }, log: a.log.Named("deploy")}
	tick := time.NewTicker(loopbackCheckInterval)
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		c.watch(tick.C, done)
	}()
	a.stopLoopbackCheck = func() {
		close(done)
		tick.Stop()
		<-finished
	}
}
