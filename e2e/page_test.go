package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sidedns/sidedns/ops/opstest"
)

// TestLivePage opens the live page in headless Chromium, then starts a
// container on the live engine and checks, without a reload, that it shows
// up with its address and health, that its start event is listed, and that
// it leaves the page when stopped (DESIGN section 4).
func TestLivePage(t *testing.T) {
	requireDocker(t)
	browser := opstest.NewBrowser(t) // skips (or fails) without Chromium, before sidedns starts
	sfx := randSuffix()
	prefix := "sidedns-test-" + sfx
	n := createNetwork(t, prefix+"-page")
	gw := n.Gateway.String()
	up := startFakeUpstream(t)
	sd := startSidedns(t, up, "--listen", gw+":53", "--allow", "127.0.0.0/8", "--allow", n.Subnet.String())

	ctx, cancel := context.WithTimeout(browser, 45*time.Second)
	defer cancel()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Error(err)
			failureShot(t, browser)
			t.FailNow()
		}
	}
	base := "http://" + sd.HTTPAddr
	must(opstest.Open(ctx, base+"/"))
	must(opstest.WaitText(ctx, "#conn", "live"))
	must(opstest.WaitText(ctx, "#ready", "ready"))
	// A reload (or a navigation) would drop this marker.
	if _, err := opstest.Eval[string](ctx, `window.sidednsMarker = "kept"`); err != nil {
		t.Fatal(err)
	}

	name := prefix + "-web"
	rowSel := fmt.Sprintf(`[data-network=%s] [data-container=%s]`, jsString(n.Name), jsString(name))
	row := func() pageRow {
		// innerText only: what a person sees.
		r, err := opstest.Eval[pageRow](ctx, fmt.Sprintf(`(() => {
			const r = document.querySelector(%s);
			if (!r) return {present: false};
			return {present: true,
				ips: [...r.querySelectorAll("code.ip")].map((e) => e.innerText.trim()),
				health: (r.querySelector(".health") || {innerText: ""}).innerText.trim(),
				text: r.innerText};
		})()`, jsString(rowSel)))
		if err != nil {
			t.Fatalf("read row: %v", err)
		}
		return r
	}
	if r := row(); r.Present {
		t.Fatalf("container %s on the page before it started: %+v", name, r)
	}

	// A healthcheck that fails until "probe mark healthy", so the page must
	// show the container left out first and then follow the health event.
	c := runContainer(t, ContainerOpts{Name: name, Network: n.Name, DNS: []string{gw},
		HealthCmd: "/probe health", HealthInterval: 500 * time.Millisecond, HealthRetries: 3})
	ip := c.IPs[n.Name].String()
	t.Logf("started %s with %s on %s", name, ip, n.Name)

	last := waitPageRow(t, browser, row, "listed while its healthcheck has not passed", func(r pageRow) bool {
		return r.Present && slices.Contains(r.IPs, ip) && (r.Health == "starting" || r.Health == "unhealthy") &&
			strings.Contains(r.Text, "left out of answers")
	})
	t.Logf("before the healthcheck passed: health %q, addresses %v", last.Health, last.IPs)

	mustDocker(t, "exec", name, "/probe", "mark", "healthy")
	last = waitPageRow(t, browser, row, "healthy with its address", func(r pageRow) bool {
		return r.Present && slices.Contains(r.IPs, ip) && r.Health == "healthy" && !strings.Contains(r.Text, "left out of answers")
	})
	t.Logf("healthy: addresses %v", last.IPs)

	startEv := fmt.Sprintf(`[...document.querySelectorAll("#events li")].some((li) =>
		(li.querySelector(".kind") || {}).innerText === "container" &&
		(li.querySelector(".action") || {}).innerText === "start" &&
		(li.querySelector(".ev-name") || {}).innerText === %s)`, jsString(name))
	must(waitPageJS(ctx, "start event of "+name+" in #events", startEv))
	must(waitPageJS(ctx, "healthy event of "+name+" in #events", fmt.Sprintf(
		`[...document.querySelectorAll("#events li")].some((li) => li.innerText.includes("health_status: healthy") && li.innerText.includes(%s))`,
		jsString(name))))
	opstest.Screenshot(t, ctx, "e2e-live-page-with-container")

	mustDocker(t, "stop", "-t", "2", name)
	waitPageRow(t, browser, row, "gone after docker stop", func(r pageRow) bool { return !r.Present })
	must(opstest.WaitNoText(ctx, "#networks", name))
	must(opstest.WaitNoText(ctx, "#networks", ip))
	must(waitPageJS(ctx, "die event of "+name+" in #events", fmt.Sprintf(
		`[...document.querySelectorAll("#events li")].some((li) =>
			(li.querySelector(".action") || {}).innerText === "die" &&
			(li.querySelector(".ev-name") || {}).innerText === %s)`, jsString(name))))
	// The start event stays in the history after the container left.
	must(waitPageJS(ctx, "start event still listed", startEv))
	if m, err := opstest.Eval[string](ctx, `String(window.sidednsMarker)`); err != nil || m != "kept" {
		t.Errorf("page reloaded: marker = %q (err %v)", m, err)
	}
	opstest.Screenshot(t, ctx, "e2e-live-page-after-stop")
}

// pageRow is what the page shows for one container on one network.
type pageRow struct {
	Present bool     `json:"present"`
	IPs     []string `json:"ips"`
	Health  string   `json:"health"`
	Text    string   `json:"text"`
}

// waitPageRow polls the row until ok holds; on timeout it fails with what
// the page showed last and a screenshot.
func waitPageRow(t testing.TB, browser context.Context, row func() pageRow, what string, ok func(pageRow) bool) pageRow {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := row()
		if ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Errorf("container not %s on the page after 15s; last seen: %+v", what, r)
			failureShot(t, browser)
			t.FailNow()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// failureShot saves what the page showed when a check failed. It uses its own
// deadline, since the failed check may have used up the test's.
func failureShot(t testing.TB, browser context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(browser, 5*time.Second)
	defer cancel()
	opstest.Screenshot(t, ctx, "e2e-live-page-failure")
}

// waitPageJS polls a boolean JavaScript expression until it is true.
func waitPageJS(ctx context.Context, what, expr string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		v, err := opstest.Eval[bool](ctx, expr)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if v {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %s: not true after 15s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// jsString quotes s as a JavaScript (and CSS) string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
