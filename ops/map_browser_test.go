package ops_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/ops"
	"github.com/sidedns/sidedns/ops/opstest"
	"github.com/sidedns/sidedns/resolver"
	"github.com/sidedns/sidedns/servicemap"
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

	ctx := openMap(t, base)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
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

// TestMapViewRemoteHosts: another host's services are drawn in a column of
// their own labelled with the host, apart from the local service of the
// same name; a records-file entry sits with the local ones; clicking a
// remote node lists its lookups under its host's name.
func TestMapViewRemoteHosts(t *testing.T) {
	topo := fixtureTopology()
	zone := func(origin, name, project, service, ip string) resolver.Container {
		return resolver.Container{ID: origin + "/" + name, Name: name, Project: project, Service: service, Origin: origin,
			Endpoints: []resolver.Endpoint{{NetworkName: origin, IPv4: netip.MustParseAddr(ip)}}}
	}
	topo.Containers = append(topo.Containers,
		resolver.Container{ID: "api1", Name: "shop-api-1", Project: "shop", Service: "api", Endpoints: []resolver.Endpoint{{
			NetworkID: "net1", NetworkName: "shop_default", Aliases: []string{"api"}, IPv4: netip.MustParseAddr("172.20.0.5")}}},
		zone("10.0.0.2", "b-api-1", "shop", "api", "10.9.0.5"),
		zone("10.0.0.2", "b-cart-1", "shop", "cart", "10.9.0.6"),
		zone("10.0.0.3", "c-db", "", "", "10.9.0.7"),
		zone(resolver.OriginRecordsFile, "ledger", "", "", "10.8.0.1"),
	)
	res := resolver.New(resolver.Options{})
	res.Publish(topo)
	m := servicemap.New(res, time.Now)
	now := time.Now()
	lookups(t, m, now, "172.20.0.2", "api", dns.RcodeSuccess, 2)
	lookups(t, m, now, "172.20.0.2", "b-api-1.docker", dns.RcodeSuccess, 3)
	lookups(t, m, now, "172.20.0.2", "cart.shop.docker", dns.RcodeSuccess, 1)
	lookups(t, m, now, "172.20.0.2", "c-db.docker", dns.RcodeSuccess, 1)
	lookups(t, m, now, "172.20.0.2", "ledger.docker", dns.RcodeSuccess, 1)
	_, base := startServer(t, ops.Config{Records: res.Records, ServiceMap: m})

	ctx := openMap(t, base)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	nodes := `[...document.querySelectorAll("#map [data-node]")].map((n) => n.dataset.node)`
	must(waitJS(ctx, nodes+`.join(" ") === "file:ledger remote:10.0.0.2/shop/api remote:10.0.0.2/shop/cart remote:10.0.0.3/c-db service:shop/api service:shop/web"`))
	labels := `[...document.querySelectorAll("#map text.group-label")].map((e) => e.textContent).join(", ")`
	if got, err := opstest.Eval[string](ctx, labels); err != nil || got != "no project, shop, remote host 10.0.0.2, remote host 10.0.0.3" {
		t.Errorf("column labels %q (%v), want the projects, then a column per remote host", got, err)
	}
	// Each node sits inside its column's box, and names itself there.
	for _, tc := range []struct{ node, group, label string }{
		{"remote:10.0.0.2/shop/api", "r:10.0.0.2", "shop/api"},
		{"remote:10.0.0.2/shop/cart", "r:10.0.0.2", "shop/cart"},
		{"remote:10.0.0.3/c-db", "r:10.0.0.3", "c-db"},
		{"service:shop/api", "p:shop", "api"},
		{"file:ledger", "p:", "ledger"},
	} {
		in := fmt.Sprintf(`(() => {
			const c = document.querySelector('#map [data-node="%s"] circle'), r = document.querySelector('#map rect[data-group="%s"]');
			const x = Number(c.getAttribute("cx")), rx = Number(r.getAttribute("x"));
			return x > rx && x < rx + Number(r.getAttribute("width")) ? document.querySelector('#map [data-node="%[1]s"] text').textContent : "outside";
		})()`, tc.node, tc.group)
		if got, err := opstest.Eval[string](ctx, in); err != nil || got != tc.label {
			t.Errorf("%s in column %s: %q (%v), want labelled %q", tc.node, tc.group, got, err, tc.label)
		}
	}

	click := func(id string) {
		t.Helper()
		if _, err := opstest.Eval[bool](ctx, fmt.Sprintf(`document.querySelector('[data-node="%s"]').dispatchEvent(new MouseEvent("click", {bubbles: true}))`, id)); err != nil {
			t.Fatal(err)
		}
	}
	click("remote:10.0.0.2/shop/api")
	must(opstest.WaitText(ctx, "#node-edges h3", "shop/api on 10.0.0.2"))
	must(waitJS(ctx, `document.querySelectorAll('#node-edges [data-dir="in"]').length === 1`))
	must(opstest.WaitText(ctx, `#node-edges [data-dir="in"]`, "web 3 lookups"))
	click("service:shop/web")
	must(waitJS(ctx, `document.querySelectorAll('#node-edges [data-dir="out"]').length === 5`))
	for _, want := range []string{"api 2 lookups", "shop/api on 10.0.0.2 3 lookups", "shop/cart on 10.0.0.2 1 lookups", "c-db on 10.0.0.3 1 lookups", "ledger (records file) 1 lookups"} {
		must(opstest.WaitText(ctx, "#node-edges", want))
	}
	opstest.Screenshot(t, ctx, "ops-map-remote")
}

// openMap opens the page at base in a headless browser and switches it to
// the map view, marking the window so that a test can tell it was never
// reloaded.
func openMap(t *testing.T, base string) context.Context {
	t.Helper()
	browser := opstest.NewBrowser(t)
	ctx, cancel := context.WithTimeout(browser, 60*time.Second)
	t.Cleanup(cancel)
	if err := opstest.Open(ctx, base+"/"); err != nil {
		t.Fatal(err)
	}
	if err := waitJS(ctx, `!document.getElementById("view-map").hidden`); err != nil {
		t.Fatal(err)
	}
	if _, err := opstest.Eval[bool](ctx, `document.getElementById("view-map").click(), window.sidednsMarker = true`); err != nil {
		t.Fatal(err)
	}
	return ctx
}
