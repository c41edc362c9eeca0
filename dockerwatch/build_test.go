package dockerwatch

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/go-connections/nat"

	"github.com/sidedns/sidedns/resolver"
)

const fixtureDir = "../testdata/docker"

// loadJSON reads a `docker inspect` / `docker network inspect` output file.
func loadJSON[T any](tb testing.TB, name string) []T {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir, name))
	if err != nil {
		tb.Fatalf("read fixture: %v", err)
	}
	var v []T
	if err := json.Unmarshal(b, &v); err != nil {
		tb.Fatalf("decode fixture %s: %v", name, err)
	}
	return v
}

// loadFixtures reads every container fixture and the networks.
func loadFixtures(tb testing.TB) ([]container.InspectResponse, []network.Summary) {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(fixtureDir, "*.json"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no fixtures in %s: %v", fixtureDir, err)
	}
	var cs []container.InspectResponse
	for _, f := range files {
		if filepath.Base(f) == "networks.json" {
			continue
		}
		cs = append(cs, loadJSON[container.InspectResponse](tb, filepath.Base(f))...)
	}
	return cs, loadJSON[network.Summary](tb, "networks.json")
}

const (
	netBridge  = "f218782c801184b6f174c38cd6ebae2594685a062e321f715c61dac3ef35071f"
	netProj    = "bdadd2119f53d482eb3f17e8a766b6264d4dcb4f8d19d3117f511d391a7fd5cd"
	netBackend = "add040dbbe31137cd76f5a52edede2e70558bdf2e102e7706e85de1828d1a59e"
	netV6      = "183f3b68b70590884175d136eca7bd3f90315ed579cf915ec404aeb2fa4ed29b"
)

func TestBuildFixtures(t *testing.T) {
	cs, nets := loadFixtures(t)
	topo, problems := buildTopology(cs, nets)

	byName := map[string]resolver.Container{}
	for _, c := range topo.Containers {
		byName[c.Name] = c
	}
	tcp := func(p uint16) resolver.Port { return resolver.Port{Port: p, Proto: "tcp"} }
	ip := netip.MustParseAddr

	tests := []struct {
		name string
		want resolver.Container
	}{
		{"proj-web-1", resolver.Container{
			ID:       "4c520ad0228e2f1c2d1908f8b86e297b0b3ddaead5ff1d3f9e0939b397912f96",
			Name:     "proj-web-1",
			Hostname: "5f3a",
			Project:  "proj", Service: "web",
			Health: resolver.HealthHealthy, State: resolver.StateRunning,
			Ports: []resolver.Port{tcp(8080)},
			Endpoints: []resolver.Endpoint{{
				NetworkID: netProj, NetworkName: "proj_default",
				Aliases: []string{"web", "proj-web-1", "4c520ad0228e", "5f3a"},
				IPv4:    ip("172.18.0.2"),
			}},
		}},
		{"proj-web-2", resolver.Container{
			ID:       "f341d6c64fe823c7a812267b2f8f62f9f37f080ff251b8e3c8ec2c9cfe6529f5",
			Name:     "proj-web-2",
			Hostname: "f341d6c64fe8",
			Project:  "proj", Service: "web",
			Health: resolver.HealthUnhealthy, State: resolver.StateRunning,
			Ports: []resolver.Port{tcp(8080)},
			Endpoints: []resolver.Endpoint{{
				NetworkID: netProj, NetworkName: "proj_default",
				Aliases: []string{"web", "proj-web-2", "f341d6c64fe8"},
				IPv4:    ip("172.18.0.3"),
			}},
		}},
		{"proj_db_1", resolver.Container{ // compose v1 naming
			ID:       "abacf422e077a69db68d86e7f47b85e8abdd3f17a7bbf4592782b1ccdca2b446",
			Name:     "proj_db_1",
			Hostname: "abacf422e077",
			Project:  "proj", Service: "db",
			Ports: []resolver.Port{tcp(5432)},
			Endpoints: []resolver.Endpoint{{
				NetworkID: netProj, NetworkName: "proj_default",
				Aliases: []string{"db", "abacf422e077"},
				IPv4:    ip("172.18.0.4"),
			}},
		}},
		{"multi", resolver.Container{ // internal "backend" sorts after "proj_default"
			ID:       "b95dd86336234c37964fd66793418ddfec8af350edf77cd4a763c26df1f9eb74",
			Name:     "multi",
			Hostname: "multi.local",
			Endpoints: []resolver.Endpoint{
				{NetworkID: netProj, NetworkName: "proj_default", Aliases: []string{"b95dd8633623", "multi.local"}, IPv4: ip("172.18.0.5")},
				{NetworkID: netBackend, NetworkName: "backend", Aliases: []string{"api", "b95dd8633623", "multi.local"}, IPv4: ip("172.19.0.2")},
			},
		}},
		{"v6", resolver.Container{
			ID:       "ddbff7aa5da6af9fe296e4f0fdb3c3ed1a563788e80c4374ddfb287c5a42f5b4",
			Name:     "v6",
			Hostname: "ddbff7aa5da6",
			Endpoints: []resolver.Endpoint{{
				NetworkID: netV6, NetworkName: "v6", Aliases: []string{"ddbff7aa5da6"},
				IPv4: ip("172.30.0.2"), IPv6: ip("fd00:5d::10"),
			}},
		}},
		{"paused", resolver.Container{
			ID:        "ab0da61c9dcd3725813a9030137df12c05307e0ed3829ad462713550db63970e",
			Name:      "paused",
			Hostname:  "ab0da61c9dcd",
			State:     resolver.StatePaused,
			Endpoints: []resolver.Endpoint{{NetworkID: netBridge, NetworkName: "bridge", IPv4: ip("172.17.0.2")}},
		}},
		{"labels", resolver.Container{
			ID:       "7cbf98780ed94c49e750cd940adec902ceb405c1e5d759d030c32d6afc95052b",
			Name:     "labels",
			Hostname: "7cbf98780ed9",
			TTL:      30,
			Names:    []string{"api.example", "ok2"},
			Ports: []resolver.Port{
				{Port: 53, Proto: "udp"}, tcp(8080),
				{Name: "http", Port: 8080, Proto: "tcp"},
			},
			Endpoints: []resolver.Endpoint{{NetworkID: netBridge, NetworkName: "bridge", IPv4: ip("172.17.0.3")}},
		}},
		{"hostnet", resolver.Container{ // network mode host: no endpoint to answer from
			ID:       "4e3c61e5878e22457b34175514948dbf10251629338b1b7be0cbc1f3a8e6ad8c",
			Name:     "hostnet",
			Hostname: "vm",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := byName[tt.name]
			if !ok {
				t.Fatalf("container %s missing from topology", tt.name)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}

	if _, ok := byName["hidden"]; ok {
		t.Error("container labelled sidedns.enable=false is in the topology")
	}
	if len(topo.Containers) != len(tests) {
		t.Errorf("topology has %d containers, want %d", len(topo.Containers), len(tests))
	}

	// Networks: all of them, sorted by name, with subnets.
	var names []string
	for _, n := range topo.Networks {
		names = append(names, n.Name)
	}
	if want := []string{"backend", "bridge", "host", "none", "proj_default", "v6"}; !slices.Equal(names, want) {
		t.Errorf("networks = %v, want %v", names, want)
	}
	for _, n := range topo.Networks {
		switch n.Name {
		case "backend":
			if !n.Internal || !slices.Equal(n.Subnets, []netip.Prefix{netip.MustParsePrefix("172.19.0.0/16")}) {
				t.Errorf("backend = %+v", n)
			}
		case "v6":
			want := []netip.Prefix{netip.MustParsePrefix("172.30.0.0/24"), netip.MustParsePrefix("fd00:5d::/64")}
			if n.Internal || !slices.Equal(n.Subnets, want) {
				t.Errorf("v6 = %+v", n)
			}
		}
	}

	// The malformed labels of "labels" come back as problems, one each.
	var subjects []string
	for _, p := range problems {
		if p.Container != "labels" || p.ContainerID == "" || p.Err == nil {
			t.Errorf("unexpected problem %+v", p)
			continue
		}
		subjects = append(subjects, p.Subject)
	}
	wantSubjects := []string{"sidedns.names", "sidedns.names", "sidedns.nmes", "sidedns.srv.dns", "sidedns.srv.metrics"}
	if !slices.Equal(subjects, wantSubjects) {
		t.Errorf("problem subjects = %v, want %v", subjects, wantSubjects)
	}
}

// buildTopology must give the same result whatever the input order (the watcher
// feeds it from a map) and must not modify its input.
func TestBuildDeterministic(t *testing.T) {
	cs, nets := loadFixtures(t)
	want, _ := buildTopology(cs, nets)
	before, _ := json.Marshal(cs)
	slices.Reverse(cs)
	slices.Reverse(nets)
	got, _ := buildTopology(cs, nets)
	if !reflect.DeepEqual(got, want) {
		t.Error("buildTopology depends on input order")
	}
	slices.Reverse(cs)
	if after, _ := json.Marshal(cs); string(after) != string(before) {
		t.Error("buildTopology modified its input")
	}
}

// ctr builds an inspect result for table tests, Traefik style.
func ctr(id, name string, opts ...func(*container.InspectResponse)) container.InspectResponse {
	c := container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{
			ID:    id,
			Name:  "/" + name,
			State: &container.State{Status: "running", Running: true},
		},
		Config:          &container.Config{Hostname: id[:min(12, len(id))], Labels: map[string]string{}},
		NetworkSettings: &container.NetworkSettings{Networks: map[string]*network.EndpointSettings{}},
	}
	for _, o := range opts {
		o(&c)
	}
	return c
}

func withState(st container.State) func(*container.InspectResponse) {
	return func(c *container.InspectResponse) { c.State = &st }
}

func withHealthStatus(s container.HealthStatus) func(*container.InspectResponse) {
	return func(c *container.InspectResponse) { c.State.Health = &container.Health{Status: s} }
}

func withLabel(k, v string) func(*container.InspectResponse) {
	return func(c *container.InspectResponse) { c.Config.Labels[k] = v }
}

func withEndpoint(netName, netID string, es network.EndpointSettings) func(*container.InspectResponse) {
	return func(c *container.InspectResponse) {
		es.NetworkID = netID
		c.NetworkSettings.Networks[netName] = &es
	}
}

func TestBuildStateAndHealth(t *testing.T) {
	tests := []struct {
		name   string
		opts   []func(*container.InspectResponse)
		state  resolver.State
		health resolver.Health
	}{
		{"running", nil, resolver.StateRunning, resolver.HealthNone},
		{"paused counts as running in Docker", []func(*container.InspectResponse){withState(container.State{Running: true, Paused: true})}, resolver.StatePaused, resolver.HealthNone},
		{"restarting", []func(*container.InspectResponse){withState(container.State{Running: true, Restarting: true})}, resolver.StateRestarting, resolver.HealthNone},
		{"exited", []func(*container.InspectResponse){withState(container.State{Status: "exited"})}, resolver.StateDead, resolver.HealthNone},
		{"dead", []func(*container.InspectResponse){withState(container.State{Dead: true})}, resolver.StateDead, resolver.HealthNone},
		{"starting", []func(*container.InspectResponse){withHealthStatus(container.Starting)}, resolver.StateRunning, resolver.HealthStarting},
		{"healthy", []func(*container.InspectResponse){withHealthStatus(container.Healthy)}, resolver.StateRunning, resolver.HealthHealthy},
		{"unhealthy", []func(*container.InspectResponse){withHealthStatus(container.Unhealthy)}, resolver.StateRunning, resolver.HealthUnhealthy},
		{"health none", []func(*container.InspectResponse){withHealthStatus(container.NoHealthcheck)}, resolver.StateRunning, resolver.HealthNone},
		{"no state at all", []func(*container.InspectResponse){func(c *container.InspectResponse) { c.State = nil }}, resolver.StateDead, resolver.HealthNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topo, _ := buildTopology([]container.InspectResponse{ctr("c1", "c1", tt.opts...)}, nil)
			if len(topo.Containers) != 1 {
				t.Fatalf("got %d containers", len(topo.Containers))
			}
			c := topo.Containers[0]
			if c.State != tt.state || c.Health != tt.health {
				t.Errorf("state, health = %v, %v; want %v, %v", c.State, c.Health, tt.state, tt.health)
			}
		})
	}
}

func TestBuildEndpoints(t *testing.T) {
	nets := []network.Summary{
		{ID: "n-int", Name: "aaa-internal", Internal: true},
		{ID: "n-b", Name: "bbb"},
		{ID: "n-c", Name: "ccc"},
	}
	c := ctr("c1", "app",
		// API 1.44+ style: DNSNames repeat some aliases.
		withEndpoint("ccc", "n-c", network.EndpointSettings{
			Aliases: []string{"web", "app"}, DNSNames: []string{"app", "web", "c1", "app.host"},
			IPAddress: "10.0.2.5",
		}),
		withEndpoint("aaa-internal", "n-int", network.EndpointSettings{IPAddress: "10.0.9.5"}),
		withEndpoint("bbb", "n-b", network.EndpointSettings{IPAddress: "not-an-ip", GlobalIPv6Address: "2001:db8::5"}),
		withEndpoint("broken", "n-x", network.EndpointSettings{IPAddress: "2001:db8::9", GlobalIPv6Address: "10.0.0.1"}),
		withEndpoint("none", "n-none", network.EndpointSettings{}),
		withEndpoint("nil", "n-nil", network.EndpointSettings{}),
		func(c *container.InspectResponse) { c.NetworkSettings.Networks["nil"] = nil },
	)
	topo, problems := buildTopology([]container.InspectResponse{c}, nets)
	got := topo.Containers[0].Endpoints
	want := []resolver.Endpoint{
		{NetworkID: "n-b", NetworkName: "bbb", IPv6: netip.MustParseAddr("2001:db8::5")},
		{NetworkID: "n-c", NetworkName: "ccc", Aliases: []string{"web", "app", "c1", "app.host"}, IPv4: netip.MustParseAddr("10.0.2.5")},
		{NetworkID: "n-int", NetworkName: "aaa-internal", IPv4: netip.MustParseAddr("10.0.9.5")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("endpoints:\ngot  %+v\nwant %+v", got, want)
	}
	var subjects []string
	for _, p := range problems {
		subjects = append(subjects, p.Subject)
	}
	slices.Sort(subjects)
	if want := []string{"endpoint bbb", "endpoint broken"}; !slices.Equal(subjects, want) {
		t.Errorf("problems = %v, want %v", subjects, want)
	}
}

func TestSortEndpoints(t *testing.T) {
	eps := []resolver.Endpoint{
		{NetworkID: "4", NetworkName: "zeta"},
		{NetworkID: "1", NetworkName: "alpha"}, // internal
		{NetworkID: "3", NetworkName: "mid"},
		{NetworkID: "2", NetworkName: "beta"},
		{NetworkID: "0", NetworkName: "beta"}, // same name: by ID
	}
	SortEndpoints(eps, func(id string) bool { return id == "1" })
	var got []string
	for _, e := range eps {
		got = append(got, e.NetworkName+"/"+e.NetworkID)
	}
	if want := []string{"beta/0", "beta/2", "mid/3", "zeta/4", "alpha/1"}; !slices.Equal(got, want) {
		t.Errorf("order = %v, want %v", got, want)
	}
}

func TestBuildLabelsAndPorts(t *testing.T) {
	c := ctr("c1", "app",
		withLabel("sidedns.names", "Extra.Name,bad..name"),
		withLabel("sidedns.ttl", "nope"),
		withLabel("sidedns.srv.grpc", "9090/tcp"),
		withLabel("sidedns.tags", "Canary"),
		withLabel("sidedns.weight", "0"),
		withLabel(LabelComposeProject, "p"),
		withLabel(LabelComposeService, "s"),
		func(c *container.InspectResponse) {
			c.Config.ExposedPorts = nat.PortSet{"9090/tcp": {}, "53/udp": {}, "80": {}, "132/sctp": {}, "x/tcp": {}}
		},
	)
	hidden := ctr("c2", "secret", withLabel("sidedns.enable", "false"), withLabel("sidedns.ttl", "-5"))
	topo, problems := buildTopology([]container.InspectResponse{c, hidden}, nil)
	if len(topo.Containers) != 1 || topo.Containers[0].Name != "app" {
		t.Fatalf("containers = %+v, want only app", topo.Containers)
	}
	got := topo.Containers[0]
	if got.Project != "p" || got.Service != "s" || got.TTL != 0 || !slices.Equal(got.Names, []string{"extra.name"}) ||
		!slices.Equal(got.Tags, []string{"canary"}) || !got.Drained || got.Weight != 0 {
		t.Errorf("got %+v", got)
	}
	wantPorts := []resolver.Port{{Port: 53, Proto: "udp"}, {Port: 80, Proto: "tcp"}, {Port: 9090, Proto: "tcp"}, {Name: "grpc", Port: 9090, Proto: "tcp"}}
	if !slices.Equal(got.Ports, wantPorts) {
		t.Errorf("ports = %+v, want %+v", got.Ports, wantPorts)
	}
	// A hidden container's bad labels are still reported: the user asked
	// for something and should hear it was ignored.
	var msgs []string
	for _, p := range problems {
		msgs = append(msgs, p.Container+" "+p.Subject)
		var le *LabelError
		if !errors.As(p.Err, &le) {
			t.Errorf("problem %v is not a LabelError", p.Err)
		}
	}
	slices.Sort(msgs)
	if want := []string{"app sidedns.names", "app sidedns.ttl", "secret sidedns.ttl"}; !slices.Equal(msgs, want) {
		t.Errorf("problems = %v, want %v", msgs, want)
	}
	if strings.Contains(problems[0].Err.Error(), "%!") {
		t.Errorf("bad error formatting: %v", problems[0].Err)
	}
}

// buildTopology turns inspect results into a Topology in one go: the
// reference the watcher's incremental table must match. Containers labelled
// sidedns.enable=false are left out; the input is not modified. Containers
// and networks are sorted by name, so equal inputs give equal outputs.
func buildTopology(containers []container.InspectResponse, networks []network.Summary) (resolver.Topology, []Problem) {
	var topo resolver.Topology
	nets, internal, problems := buildNetworks(networks)
	topo.Networks = nets
	for i := range containers {
		c, ok, ps := buildContainer(&containers[i])
		problems = append(problems, ps...)
		if !ok {
			continue
		}
		SortEndpoints(c.Endpoints, func(id string) bool { return internal[id] })
		topo.Containers = append(topo.Containers, c)
	}
	slices.SortFunc(topo.Containers, func(a, b resolver.Container) int { return compareContainers(&a, &b) })
	return topo, problems
}
