package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sidedns/sidedns/ops/opstest"
	"github.com/sidedns/sidedns/servicemap"
)

// TestServiceMap runs a compose-like set of three services on the live
// engine: web asks for api and db, api asks for db and for a name the fake
// upstream serves, db asks for a name that exists nowhere. After 30 s of
// lookups /api/v1/graph holds exactly those edges with the counts sent, and
// /api/v1/problems names the failing lookup and who made it. The page's map
// shows the three services and their edges.
func TestServiceMap(t *testing.T) {
	requireDocker(t)
	sfx := randSuffix()
	prefix := "sidedns-test-" + sfx
	project := "smap" + sfx
	n := createNetwork(t, prefix+"-map")
	gw := n.Gateway.String()
	up := startFakeUpstream(t)
	sd := startSidedns(t, up, "--listen", gw+":53", "--allow", "127.0.0.0/8", "--allow", n.Subnet.String())

	run := func(service string) Container {
		return runContainer(t, ContainerOpts{
			Name: prefix + "-" + service + "-1", Network: n.Name, Aliases: []string{service}, DNS: []string{gw},
			Labels: map[string]string{"com.docker.compose.project": project, "com.docker.compose.service": service},
		})
	}
	web, api, db := run("web"), run("api"), run("db")
	waitVisible(t, sd, n.Name, web, api, db)

	external := strings.TrimSuffix(upstreamName, ".")
	type lookup struct {
		from  Container
		name  string
		rcode string
	}
	round := []lookup{
		{web, "api", "NOERROR"}, {web, "db", "NOERROR"},
		{api, "db", "NOERROR"}, {api, external, "NOERROR"},
		{db, "paymnts", "NXDOMAIN"},
	}
	sent := map[string]uint64{} // "container name" -> lookups
	start := time.Now()
	for time.Since(start) < 30*time.Second {
		for _, l := range round {
			r, err := digIn(t, l.from.Name, gw+":53", l.name, "A")
			if err != nil {
				t.Fatalf("%s asks %s: %v", l.from.Name, l.name, err)
			}
			if r.Rcode != l.rcode {
				t.Fatalf("%s asks %s: %s, want %s\n%s", l.from.Name, l.name, r.Rcode, l.rcode, r)
			}
			sent[l.from.Name+" "+l.name]++
		}
	}
	rounds := sent[web.Name+" api"]
	t.Logf("%d rounds of %d lookups in %v", rounds, len(round), time.Since(start).Round(time.Second))

	var g servicemap.Graph
	if err := json.Unmarshal([]byte(httpGet(t, "http://"+sd.HTTPAddr+"/api/v1/graph")), &g); err != nil {
		t.Fatal(err)
	}
	svc := func(s string) string { return "service:" + project + "/" + s }
	want := map[string]servicemap.Counts{
		svc("web") + " -> " + svc("api"):        {Queries: rounds},
		svc("web") + " -> " + svc("db"):         {Queries: rounds},
		svc("api") + " -> " + svc("db"):         {Queries: rounds},
		svc("api") + " -> external:" + external: {Queries: rounds},
		svc("db") + " -> external:paymnts":      {Queries: rounds, NXDomain: rounds},
	}
	got := map[string]servicemap.Counts{}
	for _, e := range g.Edges {
		if strings.HasPrefix(e.From, "host:") {
			continue // the harness asks from the host to see the containers
		}
		c := e.Counts
		c.Cached = 0 // how many came from the cache is the cache's business
		got[e.From+" -> "+e.To] = c
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("edges\n got %v\nwant %v", got, want)
	}
	for _, e := range g.Edges {
		if e.To == "external:"+external && e.Cached == 0 {
			t.Errorf("api -> %s: no lookup was a cache hit: %+v", external, e)
		}
	}

	var p servicemap.Problems
	if err := json.Unmarshal([]byte(httpGet(t, "http://"+sd.HTTPAddr+"/api/v1/problems")), &p); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(p.Failing, func(f servicemap.FailingName) bool {
		return f.Name == "paymnts" && f.From.ID == svc("db") && f.NXDomain == rounds
	}) {
		t.Errorf("problems do not name paymnts asked by db %d times: %+v", rounds, p.Failing)
	}

	metrics := httpGet(t, "http://"+sd.HTTPAddr+"/metrics")
	for _, m := range []string{"sidedns_edges ", "sidedns_edge_evictions_total 0"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}

	// The page's map shows the three services and their edges.
	if opstest.BrowserPath() == "" {
		t.Log("MAP VIEW NOT CHECKED: no chromium")
		return
	}
	browser := opstest.NewBrowser(t)
	ctx, cancel := context.WithTimeout(browser, 45*time.Second)
	defer cancel()
	if err := opstest.Open(ctx, "http://"+sd.HTTPAddr+"/"); err != nil {
		t.Fatal(err)
	}
	edges := []string{}
	for k := range want {
		from, to, _ := strings.Cut(k, " -> ")
		edges = append(edges, fmt.Sprintf(`document.querySelector('#map path.edge[data-from=%s][data-to=%s]')`, jsString(from), jsString(to)))
	}
	cond := fmt.Sprintf(`(() => { const b = document.getElementById("view-map");
		if (b.hidden) return false; b.click();
		const nodes = [...document.querySelectorAll("#map [data-node]")].map((n) => n.dataset.node);
		return [%s, %s, %s].every((n) => nodes.includes(n)) && [%s].every((e) => e !== null); })()`,
		jsString(svc("web")), jsString(svc("api")), jsString(svc("db")), strings.Join(edges, ", "))
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		failureShot(t, browser)
		t.Fatalf("the map does not show the three services and their edges: %v", err)
	}
	opstest.Screenshot(t, ctx, "e2e-service-map")
}
