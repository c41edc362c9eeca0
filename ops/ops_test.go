package ops_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/sidedns/sidedns/ops"
	"github.com/sidedns/sidedns/resolver"
)

const (
	webID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	dbID  = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
)

func fixtureTopology() resolver.Topology {
	return resolver.Topology{
		Networks: []resolver.Network{{
			ID:      "net1",
			Name:    "shop_default",
			Subnets: []netip.Prefix{netip.MustParsePrefix("172.20.0.0/16"), netip.MustParsePrefix("fd00:20::/64")},
		}, {
			ID:       "net2",
			Name:     "backend",
			Internal: true,
			Subnets:  []netip.Prefix{netip.MustParsePrefix("172.21.0.0/16")},
		}},
		Containers: []resolver.Container{{
			ID:       webID,
			Name:     "shop-web-1",
			Hostname: "0123456789ab", // Docker's default hostname is the short ID
			Project:  "shop",
			Service:  "web",
			Health:   resolver.HealthHealthy,
			State:    resolver.StateRunning,
			Names:    []string{"www"},
			Ports:    []resolver.Port{{Port: 80, Proto: "tcp"}, {Name: "http", Port: 8080, Proto: "tcp"}},
			Endpoints: []resolver.Endpoint{{
				NetworkID:   "net1",
				NetworkName: "shop_default",
				Aliases:     []string{"shop-web-1", "web", "WEB"},
				IPv4:        netip.MustParseAddr("172.20.0.2"),
				IPv6:        netip.MustParseAddr("fd00:20::2"),
			}, {
				NetworkID:   "net2",
				NetworkName: "backend",
				Aliases:     []string{"frontend"},
				IPv4:        netip.MustParseAddr("172.21.0.2"),
			}},
		}, {
			ID:       dbID,
			Name:     "db",
			Hostname: "database",
			Health:   resolver.HealthStarting,
			State:    resolver.StatePaused,
			Tags:     []string{"canary"},
			Drained:  true,
			Endpoints: []resolver.Endpoint{{
				NetworkID:   "net2",
				NetworkName: "backend",
				IPv4:        netip.MustParseAddr("172.21.0.3"),
			}},
		}},
	}
}

// startServer runs a real ops server on 127.0.0.1:0 and returns its base URL.
func startServer(t testing.TB, cfg ops.Config) (*ops.Server, string) {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(t)
	}
	s := ops.New(cfg)
	if err := s.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s, "http://" + s.Addr()
}

func get(t testing.TB, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func TestHealthz(t *testing.T) {
	_, base := startServer(t, ops.Config{Ready: func() bool { return false }})
	code, _, body := get(t, base+"/healthz")
	if code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Fatalf("healthz = %d %q, want 200 ok (alive even when not ready)", code, body)
	}
}

func TestReadyzFollowsReady(t *testing.T) {
	var ready atomic.Bool
	_, base := startServer(t, ops.Config{Ready: ready.Load})
	for _, step := range []struct {
		ready bool
		want  int
	}{
		{false, http.StatusServiceUnavailable},
		{true, http.StatusOK},
		{true, http.StatusOK},
	} {
		ready.Store(step.ready)
		if code, _, body := get(t, base+"/readyz"); code != step.want {
			t.Fatalf("readyz with Ready()=%v = %d %q, want %d", step.ready, code, body, step.want)
		}
	}
}

func TestRecordsJSON(t *testing.T) {
	_, base := startServer(t, ops.Config{Records: newTable(fixtureTopology()).Records})
	code, hdr, body := get(t, base+"/api/v1/records")
	if code != http.StatusOK {
		t.Fatalf("records = %d", code)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	// Decode generically: this is the shape clients see, field names included.
	var got struct {
		Networks []struct {
			ID       string   `json:"id"`
			Name     string   `json:"name"`
			Internal bool     `json:"internal"`
			Subnets  []string `json:"subnets"`
		} `json:"networks"`
		Containers []map[string]json.RawMessage `json:"containers"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	if len(got.Networks) != 2 || got.Networks[0].Name != "shop_default" ||
		strings.Join(got.Networks[0].Subnets, ",") != "172.20.0.0/16,fd00:20::/64" || !got.Networks[1].Internal {
		t.Errorf("networks = %+v", got.Networks)
	}
	if len(got.Containers) != 2 {
		t.Fatalf("containers = %d, want 2", len(got.Containers))
	}
	web := got.Containers[0]
	for _, key := range []string{"id", "short_id", "name", "hostname", "names", "project", "service", "state", "health", "tags", "weight", "drained", "ports", "addresses"} {
		if _, ok := web[key]; !ok {
			t.Errorf("container JSON lacks %q: %s", key, body)
		}
	}
	var recs ops.Records
	if err := json.Unmarshal([]byte(body), &recs); err != nil {
		t.Fatalf("decode records: %v", err)
	}
	c := recs.Containers[0]
	tests := []struct {
		field, got, want string
	}{
		{"short_id", c.ShortID, "0123456789ab"},
		{"project/service", c.Project + "/" + c.Service, "shop/web"},
		{"state", c.State, "running"},
		{"health", c.Health, "healthy"},
		// Name, aliases (WEB is a case-duplicate of web), short ID (= hostname), extra names.
		// As the resolver answers them: lower-cased (WEB is web), by network then name.
		{"names", strings.Join(c.Names, ","), "0123456789ab,shop-web-1,web,www,frontend"},
		{"addresses", fmt.Sprint(len(c.Addresses)), "2"},
		{"weight", fmt.Sprint(c.Weight, c.Drained, len(c.Tags)), "100 false 0"},
		{"drained", fmt.Sprint(recs.Containers[1].Weight, recs.Containers[1].Drained, recs.Containers[1].Tags), "0 true [canary]"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.field, tt.got, tt.want)
		}
	}
	if len(c.Addresses) == 2 {
		a, b := c.Addresses[0], c.Addresses[1]
		if a.Network != "shop_default" || a.IPv4 != "172.20.0.2" || a.IPv6 != "fd00:20::2" ||
			strings.Join(a.Names, ",") != "0123456789ab,shop-web-1,web,www" {
			t.Errorf("address 0 = %+v", a)
		}
		if b.Network != "backend" || b.IPv4 != "172.21.0.2" || b.IPv6 != "" ||
			strings.Join(b.Names, ",") != "0123456789ab,frontend,shop-web-1,www" {
			t.Errorf("address 1 = %+v", b)
		}
	}
	// The names the resolver answers, with what the host gets for them.
	listed := map[string]string{}
	for _, n := range recs.Names {
		listed[n.Network+" "+n.Name] = fmt.Sprint(n.Zone, n.Addresses, len(n.Containers))
	}
	for key, want := range map[string]string{
		"shop_default web":             "false [172.20.0.2 fd00:20::2] 1",
		"backend frontend":             "false [172.21.0.2] 1",
		"backend database":             "false [] 1", // paused: listed, not answered
		"shop_default web.shop.docker": "true [172.20.0.2 fd00:20::2] 1",
	} {
		if listed[key] != want {
			t.Errorf("names[%s] = %q, want %q", key, listed[key], want)
		}
	}
	if !strings.Contains(body, `"state":"paused"`) || !strings.Contains(body, `"health":"starting"`) {
		t.Errorf("db container state/health missing: %s", body)
	}
}

func TestRecordsEmptyTopology(t *testing.T) {
	_, base := startServer(t, ops.Config{}) // nil Records
	_, _, body := get(t, base+"/api/v1/records")
	if strings.TrimSpace(body) != `{"networks":[],"containers":[],"names":[]}` {
		t.Fatalf("empty records = %s, want empty lists (never null)", body)
	}
}

func TestMetrics(t *testing.T) {
	reg := ops.NewRegistry()
	var n atomic.Int64
	n.Store(42)
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "sidedns", Name: "test_events_total", Help: "Test counter.",
	}, func() float64 { return float64(n.Load()) }))
	_, base := startServer(t, ops.Config{Registry: reg})
	code, _, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("metrics = %d", code)
	}
	for _, want := range []string{
		"sidedns_test_events_total 42",
		"go_goroutines ",
		"go_gc_duration_seconds",
		"process_start_time_seconds",
		"go_build_info",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestPageAndAssets(t *testing.T) {
	_, base := startServer(t, ops.Config{})
	for _, tt := range []struct{ path, ctype, contains string }{
		{"/", "text/html", `<script src="app.js"`},
		{"/app.js", "text/javascript", "EventSource"},
		{"/style.css", "text/css", ".health-healthy"},
	} {
		code, hdr, body := get(t, base+tt.path)
		if code != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), tt.ctype) || !strings.Contains(body, tt.contains) {
			t.Errorf("GET %s = %d %q, body has %q: %v", tt.path, code, hdr.Get("Content-Type"), tt.contains, strings.Contains(body, tt.contains))
		}
	}
	_, hdr, _ := get(t, base+"/")
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("page CSP = %q", csp)
	}
	if code, _, _ := get(t, base+"/nope"); code != http.StatusNotFound {
		t.Errorf("unknown path = %d, want 404", code)
	}
	// The app must never put server data into innerHTML.
	_, _, js := get(t, base+"/app.js")
	for _, sink := range []string{".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write"} {
		if strings.Contains(js, sink) {
			t.Errorf("app.js uses %s", sink)
		}
	}
}

func TestStartBindError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := ops.New(ops.Config{Addr: ln.Addr().String()})
	defer s.Shutdown(context.Background())
	err = s.Start()
	if err == nil {
		t.Fatal("Start on a busy port succeeded")
	}
	if !strings.Contains(err.Error(), ln.Addr().String()) || !strings.Contains(err.Error(), "--http") {
		t.Errorf("error %q should name the address and suggest --http", err)
	}
}

func TestEventRingKeepsNewest(t *testing.T) {
	s := ops.New(ops.Config{})
	defer s.Shutdown(context.Background())
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range 60 {
		s.Notify(ops.Event{Time: base.Add(time.Duration(i) * time.Second), Kind: ops.KindContainer, Action: "start", Name: fmt.Sprintf("c%d", i)})
	}
	ev := s.Events()
	if len(ev) != 50 || ev[0].Name != "c59" || ev[49].Name != "c10" {
		t.Fatalf("events: len %d, first %q, last %q; want 50, c59, c10", len(ev), ev[0].Name, ev[len(ev)-1].Name)
	}
}

// sseReader reads "update" events from an SSE stream.
type sseReader struct {
	t    testing.TB
	body io.ReadCloser
	r    *bufio.Reader
	ch   chan sseFrame
}

type sseFrame struct {
	event, data string
	err         error
}

func openSSE(t testing.TB, url string) *sseReader {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("open SSE: %v", err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("SSE Content-Type = %q", ct)
	}
	s := &sseReader{t: t, body: resp.Body, r: bufio.NewReader(resp.Body), ch: make(chan sseFrame, 16)}
	t.Cleanup(func() { resp.Body.Close() })
	go s.loop()
	return s
}

func (s *sseReader) loop() {
	var f sseFrame
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			s.ch <- sseFrame{err: err}
			close(s.ch)
			return
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if f.event != "" || f.data != "" {
				s.ch <- f
			}
			f = sseFrame{}
		case strings.HasPrefix(line, "event: "):
			f.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			f.data += strings.TrimPrefix(line, "data: ")
		}
	}
}

// next returns the next update, failing the test after timeout.
func (s *sseReader) next(timeout time.Duration) (ops.Update, bool) {
	s.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case f, ok := <-s.ch:
			if !ok || f.err != nil {
				s.t.Fatalf("SSE stream ended: %v", f.err)
			}
			if f.event != "update" {
				continue
			}
			var u ops.Update
			if err := json.Unmarshal([]byte(f.data), &u); err != nil {
				s.t.Fatalf("decode update %q: %v", f.data, err)
			}
			return u, true
		case <-deadline:
			return ops.Update{}, false
		}
	}
}

// newTable is a real resolver with t published, for the server to list.
func newTable(t resolver.Topology) *resolver.Resolver {
	r := resolver.New(resolver.Options{})
	r.Publish(t)
	return r
}

func TestSSEPushesUpdateAfterNotify(t *testing.T) {
	topo := newTable(resolver.Topology{})
	s, base := startServer(t, ops.Config{
		Records: topo.Records,
		Extra:   func() map[string]any { return map[string]any{"cache": map[string]any{"size": 7}} },
	})
	sse := openSSE(t, base+"/api/v1/events")
	first, ok := sse.next(5 * time.Second)
	if !ok {
		t.Fatal("no initial update within 5s")
	}
	if len(first.Containers) != 0 || !first.Ready {
		t.Fatalf("initial update = %+v, want empty and ready", first)
	}
	if first.Extra["cache"] == nil {
		t.Errorf("initial update lacks extra state: %+v", first.Extra)
	}

	topo.Publish(fixtureTopology())
	s.Notify(ops.Event{Kind: ops.KindContainer, Action: "start", Name: "shop-web-1"})
	u, ok := sse.next(5 * time.Second)
	if !ok {
		t.Fatal("no update within 5s of Notify")
	}
	if len(u.Containers) != 2 || u.Containers[0].Name != "shop-web-1" {
		t.Errorf("update containers = %+v", u.Containers)
	}
	if len(u.Events) != 1 || u.Events[0].Name != "shop-web-1" || u.Events[0].Action != "start" || u.Events[0].Time.IsZero() {
		t.Errorf("update events = %+v", u.Events)
	}
}

func TestSSECoalescesBursts(t *testing.T) {
	topo := newTable(resolver.Topology{})
	// An hour between pushes: after the first push every further Notify
	// must wait, so a burst can only produce one more push, later.
	s, base := startServer(t, ops.Config{Records: topo.Records, PushInterval: time.Hour, RefreshInterval: time.Hour})
	sse := openSSE(t, base+"/api/v1/events")
	if _, ok := sse.next(5 * time.Second); !ok {
		t.Fatal("no initial update")
	}
	for i := range 100 {
		cs := make([]resolver.Container, i+1)
		for j := range cs {
			cs[j] = resolver.Container{ID: fmt.Sprintf("c%d", j), Name: fmt.Sprintf("c%d", j)}
		}
		topo.Publish(resolver.Topology{Containers: cs})
		s.Notify(ops.Event{Kind: ops.KindContainer, Action: "start", Name: fmt.Sprintf("c%d", i)})
	}
	u, ok := sse.next(5 * time.Second)
	if !ok {
		t.Fatal("no update after a burst of 100 Notify calls")
	}
	if len(u.Events) == 0 {
		t.Errorf("update carries no events")
	}
	if extra, ok := sse.next(300 * time.Millisecond); ok {
		t.Errorf("burst produced a second push within the push interval (%d containers)", len(extra.Containers))
	}
}

func TestShutdownEndsSSEStreams(t *testing.T) {
	s := ops.New(ops.Config{Addr: "127.0.0.1:0"})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	sse := openSSE(t, "http://"+s.Addr()+"/api/v1/events")
	if _, ok := sse.next(5 * time.Second); !ok {
		t.Fatal("no initial update")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with an open SSE client: %v", err)
	}
	if err := s.Start(); err == nil {
		t.Error("Start after Shutdown succeeded")
	}
}
