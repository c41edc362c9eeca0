package dockerfake_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sidedns/sidedns/dockerwatch"
	"github.com/sidedns/sidedns/dockerwatch/dockerfake"
	"github.com/sidedns/sidedns/resolver"
)

// start serves e on a unix socket in a temp dir and returns a real SDK
// client that negotiates its API version, as dockerwatch's does.
func start(tb testing.TB, e *dockerfake.Engine) (*client.Client, string) {
	tb.Helper()
	sock := dockerfake.ServeTemp(tb, e)
	cli, err := client.NewClientWithOpts(client.WithHost("unix://"+sock), client.WithAPIVersionNegotiation())
	if err != nil {
		tb.Fatalf("create client: %v", err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli, sock
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func TestPingVersionNegotiation(t *testing.T) {
	cli, _ := start(t, dockerfake.New(dockerfake.Options{}))
	ctx := ctxT(t)
	ping, err := cli.Ping(ctx)
	if err != nil {
		t.Fatalf("ping: %v", err)
	}
	if ping.APIVersion != "1.41" || ping.OSType != "linux" {
		t.Errorf("ping = %+v, want API 1.41 on linux", ping)
	}
	v, err := cli.ServerVersion(ctx)
	if err != nil {
		t.Fatalf("version: %v", err)
	}
	if v.APIVersion != "1.41" || v.MinAPIVersion != "1.12" {
		t.Errorf("version = %s (min %s), want 1.41 (min 1.12)", v.APIVersion, v.MinAPIVersion)
	}
	if got := cli.ClientVersion(); got != "1.41" {
		t.Errorf("negotiated client version %s, want 1.41", got)
	}
}

func TestNewerClientVersionRejected(t *testing.T) {
	e := dockerfake.New(dockerfake.Options{})
	_, sock := start(t, e)
	cli, err := client.NewClientWithOpts(client.WithHost("unix://"+sock), client.WithVersion("1.51"))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.ContainerList(ctxT(t), container.ListOptions{}); err == nil {
		t.Error("list with API 1.51 against a 1.41 daemon succeeded, want the daemon's version error")
	}
}

func TestListAndInspect(t *testing.T) {
	e := dockerfake.New(dockerfake.Options{Networks: 2})
	cli, _ := start(t, e)
	ctx := ctxT(t)
	ids := e.Populate(10)

	list, err := cli.ContainerList(ctx, container.ListOptions{})
	if err != nil {
		t.Fatalf("list containers: %v", err)
	}
	if len(list) != 10 {
		t.Fatalf("listed %d containers, want 10", len(list))
	}
	filtered, err := cli.ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(filters.Arg("name", "c0003"))})
	if err != nil || len(filtered) != 1 || filtered[0].ID != ids[3] {
		t.Errorf("list name=c0003 = %d containers, %v; want only %s", len(filtered), err, ids[3][:12])
	}

	// Round-robin over net0, net1, addresses in order from .2.
	tests := []struct {
		ref, name, network, ip string
	}{
		{ids[0], "/c0000", "net0", "10.100.0.2"},
		{"c0001", "/c0001", "net1", "10.101.0.2"},
		{"/c0003", "/c0003", "net1", "10.101.0.3"},
		{ids[4][:10], "/c0004", "net0", "10.100.0.4"},
	}
	for _, tt := range tests {
		c, err := cli.ContainerInspect(ctx, tt.ref)
		if err != nil {
			t.Errorf("inspect %s: %v", tt.ref, err)
			continue
		}
		es := c.NetworkSettings.Networks[tt.network]
		if c.Name != tt.name || es == nil || es.IPAddress != tt.ip || !c.State.Running {
			t.Errorf("inspect %s = %s on %v, want %s with %s on %s", tt.ref, c.Name, c.NetworkSettings.Networks, tt.name, tt.ip, tt.network)
		}
	}
	if _, err := cli.ContainerInspect(ctx, "nope"); !cerrdefs.IsNotFound(err) {
		t.Errorf("inspect nope: err = %v, want not found", err)
	}

	nets, err := cli.NetworkList(ctx, network.ListOptions{})
	if err != nil {
		t.Fatalf("list networks: %v", err)
	}
	var names []string
	for _, n := range nets {
		names = append(names, n.Name)
	}
	if want := []string{"bridge", "host", "net0", "net1", "none"}; !slices.Equal(names, want) {
		t.Errorf("networks %v, want %v", names, want)
	}
	n, err := cli.NetworkInspect(ctx, "net0", network.InspectOptions{})
	if err != nil {
		t.Fatalf("inspect net0: %v", err)
	}
	if len(n.Containers) != 5 || len(n.IPAM.Config) != 1 || n.IPAM.Config[0].Subnet != "10.100.0.0/16" {
		t.Errorf("net0 has %d containers and IPAM %+v, want 5 on 10.100.0.0/16", len(n.Containers), n.IPAM.Config)
	}
	if _, err := cli.NetworkInspect(ctx, "nope", network.InspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Errorf("inspect network nope: err = %v, want not found", err)
	}
}

// The fake's bodies go through the real watcher to the names and addresses a
// user would query.
func TestSpecReachesTopology(t *testing.T) {
	e := dockerfake.New(dockerfake.Options{})
	cli, _ := start(t, e)
	e.AddNetwork("app", "10.9.0.0/24")
	id := e.StartContainer(dockerfake.ContainerSpec{
		Name: "web",
		Networks: map[string]dockerfake.Endpoint{
			"app":   {IP: "10.9.0.50", Aliases: []string{"www"}},
			"other": {}, // created on the fly
		},
		Labels:       map[string]string{dockerwatch.LabelComposeProject: "shop", dockerwatch.LabelComposeService: "web"},
		Health:       container.Healthy,
		ExposedPorts: []string{"80/tcp", "53/udp"},
	})

	// The container is there before the watcher starts: its first sync
	// publishes it.
	published := make(chan resolver.Topology, 1)
	core, logs := observer.New(zapcore.WarnLevel)
	w := dockerwatch.New(cli, func(t resolver.Topology) {
		select {
		case published <- t:
		default:
		}
	}, zap.New(core), dockerwatch.Options{})
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	var topo resolver.Topology
	select {
	case topo = <-published:
	case <-time.After(5 * time.Second):
		t.Fatal("the watcher published no topology")
	}
	if logs.Len() > 0 {
		t.Errorf("warnings: %v", logs.All())
	}
	if len(topo.Containers) != 1 {
		t.Fatalf("topology has %d containers, want 1", len(topo.Containers))
	}
	got := topo.Containers[0]
	if got.Name != "web" || got.Project != "shop" || got.Service != "web" || got.Health != resolver.HealthHealthy || got.State != resolver.StateRunning {
		t.Errorf("container = %+v", got)
	}
	if len(got.Endpoints) != 2 {
		t.Fatalf("endpoints = %+v, want app and other", got.Endpoints)
	}
	app := got.Endpoints[0]
	if app.NetworkName != "app" || app.IPv4 != netip.MustParseAddr("10.9.0.50") || !slices.Contains(app.Aliases, "www") || !slices.Contains(app.Aliases, id[:12]) {
		t.Errorf("app endpoint = %+v, want 10.9.0.50 with aliases www and the short ID", app)
	}
	if other := got.Endpoints[1]; !other.IPv4.IsValid() {
		t.Errorf("other endpoint has no address: %+v", other)
	}
	if len(got.Ports) != 2 {
		t.Errorf("ports = %+v, want 53/udp and 80/tcp", got.Ports)
	}
}

// collect reads events until n arrived or the stream fails.
func collect(tb testing.TB, msgs <-chan events.Message, errs <-chan error, n int) []string {
	tb.Helper()
	var got []string
	timeout := time.After(5 * time.Second)
	for len(got) < n {
		select {
		case m := <-msgs:
			got = append(got, string(m.Type)+" "+string(m.Action)+" "+m.Actor.Attributes["name"])
		case err := <-errs:
			tb.Fatalf("event stream ended after %v: %v", got, err)
		case <-timeout:
			tb.Fatalf("got events %v, waiting for %d", got, n)
		}
	}
	return got
}

func TestEventsFiltered(t *testing.T) {
	e := dockerfake.New(dockerfake.Options{})
	cli, _ := start(t, e)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	// The filter set dockerwatch subscribes with, minus die/destroy.
	msgs, errs := cli.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", "container"), filters.Arg("type", "network"),
		filters.Arg("event", "start"), filters.Arg("event", "health_status"), filters.Arg("event", "disconnect"),
	)})
	// The stream is subscribed once a first event comes through; keep
	// starting a sentinel until one does.
	waitSubscribed(t, e, msgs, errs, events.ActionDisconnect)

	id := e.StartContainer(dockerfake.ContainerSpec{Name: "a", Health: container.Starting})
	e.SetHealth(id, container.Healthy)
	e.StopContainer(id)
	e.StartContainer(dockerfake.ContainerSpec{Name: "b"})
	got := collect(t, msgs, errs, 4)
	want := []string{"container start a", "container health_status: healthy a", "network disconnect bridge", "container start b"}
	if !slices.Equal(got, want) {
		t.Errorf("events\n got %q\nwant %q", got, want)
	}
}

// waitSubscribed starts and stops sentinel containers until one shows up on
// the stream, then reads until the last sentinel's last event that the
// stream passes (last), so that no sentinel event is left in flight.
func waitSubscribed(tb testing.TB, e *dockerfake.Engine, msgs <-chan events.Message, errs <-chan error, last events.Action) {
	tb.Helper()
	deadline := time.After(5 * time.Second)
	var id string
	for {
		if id == "" {
			id = e.StartContainer(dockerfake.ContainerSpec{Name: "sentinel"})
			e.StopContainer(id)
		}
		// Until the stream delivers, start another sentinel every 20 ms:
		// whichever arrives first, the last one started ends the wait.
		select {
		case m := <-msgs:
			if m.Action == last && (m.Actor.ID == id || m.Actor.Attributes["container"] == id) {
				return
			}
			continue
		case err := <-errs:
			tb.Fatalf("event stream: %v", err)
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			tb.Fatal("event stream never delivered the sentinel")
		}
		id = ""
	}
}

func TestEventsSinceReplaysHistory(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); now = now.Add(time.Millisecond); return now }
	e := dockerfake.New(dockerfake.Options{Now: clock})
	cli, _ := start(t, e)
	e.StartContainer(dockerfake.ContainerSpec{Name: "early"})
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	msgs, errs := cli.Events(ctx, events.ListOptions{
		Since:   "1800000000",
		Until:   "1800000000.2", // the stream ends 0.2 s (of real time) after the replay
		Filters: filters.NewArgs(filters.Arg("event", "start")),
	})
	got := collect(t, msgs, errs, 1)
	if got[0] != "container start early" {
		t.Errorf("replayed %q, want the start of early", got)
	}
	select {
	case err := <-errs:
		if !errors.Is(err, io.EOF) {
			t.Errorf("stream ended with %v, want EOF", err)
		}
	case m := <-msgs:
		t.Errorf("unexpected event %+v", m)
	case <-time.After(5 * time.Second):
		t.Error("stream with until in the past did not end")
	}
}

func TestDownAndBack(t *testing.T) {
	e := dockerfake.New(dockerfake.Options{})
	cli, _ := start(t, e)
	ctx := ctxT(t)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs, errs := cli.Events(sctx, events.ListOptions{})
	waitSubscribed(t, e, msgs, errs, events.ActionDestroy)

	e.SetDown(true)
	select {
	case err := <-errs:
		if err == nil {
			t.Error("stream ended without an error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("event stream survived the daemon going down")
	}
	if _, err := cli.Ping(ctx); err == nil {
		t.Error("ping succeeded while down")
	}
	if _, err := cli.ContainerList(ctx, container.ListOptions{}); err == nil {
		t.Error("list succeeded while down")
	}
	e.StartContainer(dockerfake.ContainerSpec{Name: "while-down"})

	e.SetDown(false)
	list, err := cli.ContainerList(ctx, container.ListOptions{})
	if err != nil || len(list) != 1 {
		t.Fatalf("list after coming back = %d containers, %v; want 1", len(list), err)
	}

	msgs, errs = cli.Events(sctx, events.ListOptions{})
	waitSubscribed(t, e, msgs, errs, events.ActionDestroy)
	e.CloseConnections()
	select {
	case <-errs:
	case <-time.After(5 * time.Second):
		t.Fatal("event stream survived CloseConnections")
	}
	if _, err := cli.Ping(ctx); err != nil {
		t.Errorf("ping after CloseConnections: %v", err)
	}
}

func TestRawPathsWithoutVersion(t *testing.T) {
	e := dockerfake.New(dockerfake.Options{})
	_, sock := start(t, e)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	defer hc.CloseIdleConnections()
	for _, tt := range []struct {
		method, path string
		code         int
	}{
		{"HEAD", "/_ping", 200},
		{"GET", "/_ping", 200},
		{"GET", "/v1.41/_ping", 200},
		{"GET", "/containers/json", 200},
		{"GET", "/v1.24/networks", 200},
		{"GET", "/networks/bridge", 200},
		{"GET", "/v1.41/containers/nope/json", 404},
		{"GET", "/v1.41/images/json", 404},
		{"GET", "/v1.99/containers/json", 400},
	} {
		req, _ := http.NewRequestWithContext(ctxT(t), tt.method, "http://docker"+tt.path, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Errorf("%s %s: %v", tt.method, tt.path, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != tt.code {
			t.Errorf("%s %s = %d, want %d", tt.method, tt.path, resp.StatusCode, tt.code)
		}
	}
}

// The real watcher syncs from the fake, follows its events and recovers
// after the daemon goes away.
func TestWatcherFollowsFake(t *testing.T) {
	e := dockerfake.New(dockerfake.Options{Networks: 3})
	cli, _ := start(t, e)
	e.Populate(50)

	// The watcher's state changes with a publish or a log line (it logs when
	// the daemon goes away): each wakes the waits below to look again.
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	var (
		mu   sync.Mutex
		last resolver.Topology
	)
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(io.Discard), zapcore.DebugLevel),
		zap.Hooks(func(zapcore.Entry) error { poke(); return nil }))
	w := dockerwatch.New(cli, func(t resolver.Topology) { mu.Lock(); last = t; mu.Unlock(); poke() }, log,
		dockerwatch.Options{MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	has := func(name string) bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.ContainsFunc(last.Containers, func(c resolver.Container) bool { return c.Name == name })
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(last.Containers) }
	waitFor(t, changed, "first sync with 50 containers", func() bool { return w.Ready() && count() == 50 })

	e.StartContainer(dockerfake.ContainerSpec{Name: "late", Networks: map[string]dockerfake.Endpoint{"net1": {}}})
	waitFor(t, changed, "late to appear", func() bool { return has("late") })

	e.SetDown(true)
	waitFor(t, changed, "watcher to notice the daemon is gone", func() bool { return !w.Connected() })
	e.StopContainer("c0007")
	e.SetDown(false)
	waitFor(t, changed, "c0007 to go after the daemon came back", func() bool { return w.Connected() && !has("c0007") && has("late") })
}

// waitFor checks cond each time changed fires, until it holds or 10 s pass.
func waitFor(tb testing.TB, changed <-chan struct{}, what string, cond func() bool) {
	tb.Helper()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-changed:
		case <-deadline:
			tb.Fatalf("timed out waiting for %s", what)
		}
	}
}
