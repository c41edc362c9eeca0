package ops_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/sidedns/sidedns/ops"
	"github.com/sidedns/sidedns/ops/opstest"
	"github.com/sidedns/sidedns/resolver"
)

// TestPageUpdatesLive opens the page in headless Chromium and checks that a
// container appears, changes health and disappears without a reload.
func TestPageUpdatesLive(t *testing.T) {
	topo := newTable(fixtureTopology())
	s, base := startServer(t, ops.Config{
		Records: topo.Records,
		Extra: func() map[string]any {
			return map[string]any{
				"cache": map[string]any{"entries": 1234, "hits_total": 56789, "misses_total": 321, "evictions_total": 0},
				"upstreams": []map[string]any{
					{"address": "127.0.0.1:5353", "healthy": true, "queries_total": 400, "failures_total": 2, "latency_ms": 1.7},
					{"address": "127.0.0.1:5354", "healthy": false, "queries_total": 12, "failures_total": 12, "latency_ms": nil},
				},
				"docker": map[string]any{"connected": true, "resyncs_total": 1},
			}
		},
	})
	s.Notify(ops.Event{Kind: ops.KindContainer, Action: "start", Name: "shop-web-1"})
	s.Notify(ops.Event{Kind: ops.KindHealth, Action: "health_status: starting", Name: "db"})

	browser := opstest.NewBrowser(t)
	ctx, cancel := context.WithTimeout(browser, 60*time.Second)
	defer cancel()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(opstest.Open(ctx, base+"/"))
	must(opstest.WaitText(ctx, "#conn", "live"))
	must(opstest.WaitText(ctx, "#networks", "shop-web-1"))
	must(opstest.WaitText(ctx, `[data-container="db"]`, "paused"))
	must(opstest.WaitText(ctx, "#extra", "127.0.0.1:5353"))
	// A reload would drop this marker.
	if _, err := opstest.Eval[string](ctx, `window.sidednsMarker = "kept"`); err != nil {
		t.Fatal(err)
	}

	const newName = "sidedns-test-api"
	const sel = `[data-container="` + newName + `"]`
	added := fixtureTopology()
	added.Containers = append(added.Containers, resolver.Container{
		ID:      "abcabcabcabc" + "0000000000000000000000000000000000000000000000000000",
		Name:    newName,
		Project: "shop",
		Service: "api",
		Health:  resolver.HealthHealthy,
		Names:   []string{"<b>bold</b>"}, // must show as text, never as markup
		Endpoints: []resolver.Endpoint{{
			NetworkID: "net1", NetworkName: "shop_default", Aliases: []string{"api"},
			IPv4: netip.MustParseAddr("172.20.0.9"),
		}},
	})
	topo.Publish(added)
	s.Notify(ops.Event{Kind: ops.KindContainer, Action: "start", Name: newName})

	must(opstest.WaitText(ctx, sel, "172.20.0.9"))
	must(opstest.WaitText(ctx, sel+" .health", "healthy"))
	must(opstest.WaitText(ctx, sel, "<b>bold</b>"))
	must(opstest.WaitText(ctx, "#events", newName))
	if n, err := opstest.Eval[int](ctx, `document.querySelectorAll("#networks b").length`); err != nil || n != 0 {
		t.Errorf("data became markup: %d <b> elements (err %v)", n, err)
	}
	healthyBg, err := opstest.Eval[string](ctx, `getComputedStyle(document.querySelector('`+sel+` .health')).backgroundColor`)
	if err != nil {
		t.Fatal(err)
	}
	opstest.Screenshot(t, ctx, "ops-page")

	// A published topology is the resolver's: change a copy.
	added.Containers = slices.Clone(added.Containers)
	added.Containers[len(added.Containers)-1].Health = resolver.HealthUnhealthy
	topo.Publish(added)
	s.Notify(ops.Event{Kind: ops.KindHealth, Action: "health_status: unhealthy", Name: newName})
	must(opstest.WaitText(ctx, sel+" .health", "unhealthy"))
	must(opstest.WaitText(ctx, sel, "left out of answers"))
	unhealthyBg, err := opstest.Eval[string](ctx, `getComputedStyle(document.querySelector('`+sel+` .health')).backgroundColor`)
	if err != nil {
		t.Fatal(err)
	}
	if unhealthyBg == healthyBg {
		t.Errorf("healthy and unhealthy badges share the colour %s", healthyBg)
	}

	topo.Publish(fixtureTopology())
	s.Notify(ops.Event{Kind: ops.KindContainer, Action: "die", Name: newName})
	must(opstest.WaitNoText(ctx, "#networks", newName))
	must(opstest.WaitText(ctx, "#networks", "shop-web-1"))
	if m, err := opstest.Eval[string](ctx, `String(window.sidednsMarker)`); err != nil || m != "kept" {
		t.Errorf("page reloaded: marker = %q (err %v)", m, err)
	}
	opstest.Screenshot(t, ctx, "ops-page-after-remove")
}
