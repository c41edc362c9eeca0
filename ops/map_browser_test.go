package ops_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/ops"
	"github.com/sidedns/sidedns/ops/opstest"
)

// waitJS waits until the JavaScript expression is true in the page.
func waitJS(ctx context.Context, expr string) error {
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr,
		chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(timeout))); err != nil {
		return fmt.Errorf("wait for %s: %w", expr, err)
	}
	return nil
}

// TestMapView opens the map in headless Chromium: the services and their
// edges are drawn, a new edge appears without a reload within 2 s, a click
// on a node lists its edges both ways, the charts draw points, and the
// failing name is listed with who asks for it.
func TestMapView(t *testing.T) {
	m, res := newServiceMap(t)
	now := time.Now()
	lookups(t, m, now, "172.20.0.2", "db", dns.RcodeSuccess, 4)
	lookups(t, m, now, "172.20.0.2", "paymnts", dns.RcodeNameError, 5)
	pkt, _ := new(dns.Msg).SetQuestion("api.github.com.", dns.TypeA).Pack()
	q := parse(t, pkt)
	for i := range 20 {
		m.Record(now.Add(-time.Duration(i)*10*time.Second), webAddr, q, dns.RcodeSuccess, 1, "upstream", time.Duration(1+i%5)*time.Millisecond)
	}
	_, base := startServer(t, ops.Config{Records: res.Records, ServiceMap: m})

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
	must(waitJS(ctx, `!document.getElementById("view-map").hidden`))
	if _, err := opstest.Eval[bool](ctx, `document.getElementById("view-map").click(), window.sidednsMarker = true`); err != nil {
		t.Fatal(err)
	}
	nodes := `[...document.querySelectorAll("#map [data-node]")].map((n) => n.dataset.node)`
	edge := func(from, to string) string {
		return fmt.Sprintf(`document.querySelector('#map path.edge[data-from="%s"][data-to="%s"]')`, from, to)
	}
	must(waitJS(ctx, nodes+`.join(" ") === "container:db external:github.com external:paymnts service:shop/web"`))
	must(waitJS(ctx, edge("service:shop/web", "container:db")+` !== null`))
	must(waitJS(ctx, edge("service:shop/web", "external:paymnts")+`.classList.contains("failing")`))
	if failing, err := opstest.Eval[bool](ctx, edge("service:shop/web", "container:db")+`.classList.contains("failing")`); err != nil || failing {
		t.Errorf("web -> db drawn as failing (%v)", err)
	}
	if shown, err := opstest.Eval[bool](ctx, `document.getElementById("mapview").offsetHeight > 0 && document.querySelector("main").offsetHeight === 0`); err != nil || !shown {
		t.Errorf("the map view is not the one shown (%v)", err)
	}

	// A new edge: db asks for web's name on their shared network.
	start := time.Now()
	lookups(t, m, time.Now(), "172.21.0.3", "frontend", dns.RcodeSuccess, 1)
	soon, cancelSoon := context.WithTimeout(ctx, 2*time.Second)
	err := waitJS(soon, edge("container:db", "service:shop/web")+` !== null`)
	cancelSoon()
	if err != nil {
		t.Fatalf("a new edge did not appear within 2 s: %v", err)
	}
	t.Logf("new edge drawn %v after its first lookup", time.Since(start).Round(time.Millisecond))

	if _, err := opstest.Eval[bool](ctx, `document.querySelector('[data-node="service:shop/web"]').dispatchEvent(new MouseEvent("click", {bubbles: true}))`); err != nil {
		t.Fatal(err)
	}
	must(waitJS(ctx, `document.querySelectorAll('#node-edges [data-dir="out"]').length === 3`))
	must(waitJS(ctx, `document.querySelectorAll('#node-edges [data-dir="in"]').length === 1`))
	must(opstest.WaitText(ctx, "#node-edges", "5 NXDOMAIN"))
	must(opstest.WaitText(ctx, "#problems", "paymnts keeps failing: 5 NXDOMAIN, asked by web"))
	must(waitJS(ctx, `[...document.querySelectorAll("#chart-qps circle.pt")].some((c) => Number(c.dataset.v) > 0)`))
	must(waitJS(ctx, `[...document.querySelectorAll("#chart-latency circle.pt")].filter((c) => Number(c.dataset.v) > 0).length >= 10`))
	must(waitJS(ctx, `document.querySelectorAll("#chart-ratio circle.pt").length > 0`))
	if kept, err := opstest.Eval[bool](ctx, `window.sidednsMarker === true`); err != nil || !kept {
		t.Errorf("the page reloaded (%v)", err)
	}
	opstest.Screenshot(t, ctx, "ops-map")
}
