// Package dockerfake is a fake Docker Engine API server for tests and
// benchmarks. It serves the read-only part of the API that dockerwatch uses
// (ping, version, events, container list and inspect, network list and
// inspect) over HTTP on any listener, with bodies built from the SDK's own
// types so the real client decodes them exactly as it decodes a daemon's.
//
// It speaks API 1.41 (Engine 20.10): a client must negotiate, as dockerwatch
// does; a request for a newer version gets the daemon's 400.
//
// The state is changed through Go calls (StartContainer, StopContainer,
// SetHealth, ...), each of which emits the events a real daemon would.
package dockerfake

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/go-connections/nat"
)

// API versions the fake reports, those of Engine 20.10.
const (
	APIVersion    = "1.41"
	MinAPIVersion = "1.12"
)

// Options configures an Engine. The zero value is usable.
type Options struct {
	// Now is the clock for event times and timestamps; time.Now if nil.
	Now func() time.Time
	// Networks is how many user networks Populate spreads containers over
	// (net0, net1, ...); 4 if zero.
	Networks int
	// History is how many past events at least are kept for replay to a subscriber
	// that asks with since=; 1024 if zero.
	History int
	// StreamBuffer is how many events may wait for one slow subscriber
	// before its stream is cut, as the daemon does; 4096 if zero.
	StreamBuffer int
	// NoDefaultNetworks leaves out bridge, host and none, which New creates
	// like a fresh daemon has them.
	NoDefaultNetworks bool
}

// ContainerSpec describes a container to start.
type ContainerSpec struct {
	Name     string // without the leading slash; required
	Hostname string // defaults to the first 12 characters of the ID
	// Networks maps a network name (or ID) to the endpoint on it. A network
	// that does not exist yet is created with the next free 10.x/16 subnet.
	// Empty means the default bridge.
	Networks map[string]Endpoint
	Labels   map[string]string
	// Health is the initial health status ("starting", "healthy",
	// "unhealthy"); empty means the container has no healthcheck.
	Health       container.HealthStatus
	ExposedPorts []string // "80/tcp", "53/udp"
	Image        string   // defaults to "fake:latest"
}

// Endpoint is a container's attachment to one network.
type Endpoint struct {
	IP      string // IPv4; allocated from the network's subnet when empty
	IPv6    string // optional global IPv6 address
	Aliases []string
}

// Engine is the fake daemon: its state and the HTTP server over it. All
// methods are safe for concurrent use.
type Engine struct {
	opts Options

	mu       sync.RWMutex
	nets     map[string]*fakeNetwork // by ID
	ctrs     map[string]*fakeContainer
	order    []string // container IDs in start order
	seq      uint64
	subnet   int // next automatic 10.x/16
	history  []events.Message
	subs     map[*subscriber]struct{}
	srv      *http.Server
	connsMu  sync.Mutex
	conns    map[net.Conn]struct{}
	down     atomic.Bool
	closed   atomic.Bool
	requests atomic.Int64
}

type fakeNetwork struct {
	inspect network.Inspect
	prefix  netip.Prefix
	next    netip.Addr
	used    map[netip.Addr]string // address -> container ID
}

type fakeContainer struct {
	resp    container.InspectResponse
	created int64
	nets    []string // network IDs, in attach order
}

// New returns an Engine with the default networks (bridge 172.17.0.0/16,
// host, none) unless opts says otherwise.
func New(opts Options) *Engine {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Networks <= 0 {
		opts.Networks = 4
	}
	if opts.History <= 0 {
		opts.History = 1024
	}
	if opts.StreamBuffer <= 0 {
		opts.StreamBuffer = 4096
	}
	e := &Engine{
		opts:   opts,
		nets:   make(map[string]*fakeNetwork),
		ctrs:   make(map[string]*fakeContainer),
		subs:   make(map[*subscriber]struct{}),
		conns:  make(map[net.Conn]struct{}),
		subnet: 100,
	}
	if !opts.NoDefaultNetworks {
		e.mu.Lock()
		e.addNetwork("bridge", "bridge", "172.17.0.0/16")
		e.addNetwork("host", "host", "")
		e.addNetwork("none", "null", "")
		e.mu.Unlock()
	}
	return e
}

// AddNetwork creates a bridge network with an IPv4 subnet ("10.1.0.0/16";
// empty for none) and returns its ID. It emits a network create event. An
// existing network of that name is returned as is.
func (e *Engine) AddNetwork(name, subnet string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if n := e.networkLocked(name); n != nil {
		return n.inspect.ID
	}
	n := e.addNetwork(name, "bridge", subnet)
	e.emit(events.NetworkEventType, events.ActionCreate, n.inspect.ID, map[string]string{"name": name, "type": "bridge"})
	return n.inspect.ID
}

func (e *Engine) addNetwork(name, driver, subnet string) *fakeNetwork {
	n := &fakeNetwork{
		inspect: network.Inspect{
			Name:       name,
			ID:         e.newID("network", name),
			Created:    e.opts.Now(),
			Scope:      "local",
			Driver:     driver,
			EnableIPv4: subnet != "",
			IPAM:       network.IPAM{Driver: "default", Options: map[string]string{}, Config: []network.IPAMConfig{}},
			Containers: map[string]network.EndpointResource{},
			Options:    map[string]string{},
			Labels:     map[string]string{},
		},
		used: make(map[netip.Addr]string),
	}
	if subnet != "" {
		p := netip.MustParsePrefix(subnet).Masked()
		gw := p.Addr().Next()
		n.prefix, n.next = p, gw.Next()
		n.inspect.IPAM.Config = append(n.inspect.IPAM.Config, network.IPAMConfig{Subnet: p.String(), Gateway: gw.String()})
	}
	e.nets[n.inspect.ID] = n
	return n
}

// networkLocked finds a network by ID, name or unique ID prefix.
func (e *Engine) networkLocked(ref string) *fakeNetwork {
	if n, ok := e.nets[ref]; ok {
		return n
	}
	var found *fakeNetwork
	for _, n := range e.nets {
		if n.inspect.Name == ref {
			return n
		}
		if ref != "" && strings.HasPrefix(n.inspect.ID, ref) {
			if found != nil {
				return nil // ambiguous
			}
			found = n
		}
	}
	return found
}

// containerLocked finds a container by ID, name (with or without the
// slash) or unique ID prefix.
func (e *Engine) containerLocked(ref string) *fakeContainer {
	if c, ok := e.ctrs[ref]; ok {
		return c
	}
	name := "/" + strings.TrimPrefix(ref, "/")
	var found *fakeContainer
	for _, c := range e.ctrs {
		if c.resp.Name == name {
			return c
		}
		if ref != "" && strings.HasPrefix(c.resp.ID, ref) {
			if found != nil {
				return nil
			}
			found = c
		}
	}
	return found
}

func (e *Engine) newID(kind, name string) string {
	e.seq++
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d", kind, name, e.seq))
	return hex.EncodeToString(sum[:])
}

// StartContainer creates and starts a running container and returns its ID.
// It emits create, a network connect per network, then start, as the daemon
// does for docker run. It panics on a malformed spec (no name, bad address,
// a full subnet): specs come from test code.
func (e *Engine) StartContainer(spec ContainerSpec) string {
	if spec.Name == "" {
		panic("dockerfake: StartContainer without a name")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.opts.Now()
	id := e.newID("container", spec.Name)
	image := cmpOr(spec.Image, "fake:latest")
	labels := maps.Clone(spec.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	cfg := &container.Config{
		Hostname: cmpOr(spec.Hostname, id[:12]),
		Image:    image,
		Labels:   labels,
		Cmd:      []string{"/app"},
		Env:      []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	}
	if len(spec.ExposedPorts) > 0 {
		cfg.ExposedPorts = nat.PortSet{}
		for _, p := range spec.ExposedPorts {
			cfg.ExposedPorts[nat.Port(p)] = struct{}{}
		}
	}
	state := &container.State{
		Status:     container.StateRunning,
		Running:    true,
		Pid:        int(1000 + e.seq),
		StartedAt:  now.UTC().Format(time.RFC3339Nano),
		FinishedAt: "0001-01-01T00:00:00Z",
	}
	if spec.Health != "" {
		state.Health = &container.Health{Status: spec.Health, Log: []*container.HealthcheckResult{}}
	}
	c := &fakeContainer{created: now.Unix()}
	c.resp = container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{
			ID:             id,
			Created:        now.UTC().Format(time.RFC3339Nano),
			Path:           "/app",
			Args:           []string{},
			State:          state,
			Image:          "sha256:" + imageID(image),
			Name:           "/" + spec.Name,
			Driver:         "overlay2",
			Platform:       "linux",
			HostConfig:     &container.HostConfig{},
			ResolvConfPath: "/var/lib/docker/containers/" + id + "/resolv.conf",
			HostnamePath:   "/var/lib/docker/containers/" + id + "/hostname",
			HostsPath:      "/var/lib/docker/containers/" + id + "/hosts",
		},
		Mounts:          []container.MountPoint{},
		Config:          cfg,
		NetworkSettings: &container.NetworkSettings{Networks: map[string]*network.EndpointSettings{}},
	}
	// Set field by field: the struct that holds them is deprecated, they are not.
	c.resp.NetworkSettings.SandboxID = id
	c.resp.NetworkSettings.SandboxKey = "/var/run/docker/netns/" + id[:12]
	c.resp.NetworkSettings.Ports = nat.PortMap{}

	attach := spec.Networks
	if len(attach) == 0 {
		attach = map[string]Endpoint{"bridge": {}}
	}
	attr := map[string]string{"image": image, "name": spec.Name}
	maps.Copy(attr, labels)
	e.emit(events.ContainerEventType, events.ActionCreate, id, attr)
	for _, ref := range slices.Sorted(maps.Keys(attach)) {
		ep := attach[ref]
		n := e.networkLocked(ref)
		if n == nil {
			n = e.addNetwork(ref, "bridge", e.nextSubnet())
			e.emit(events.NetworkEventType, events.ActionCreate, n.inspect.ID, map[string]string{"name": ref, "type": "bridge"})
		}
		e.attach(n, c, id, spec.Name, ep)
		if c.resp.HostConfig.NetworkMode == "" {
			c.resp.HostConfig.NetworkMode = container.NetworkMode(n.inspect.Name)
		}
		e.emit(events.NetworkEventType, events.ActionConnect, n.inspect.ID, map[string]string{"container": id, "name": n.inspect.Name, "type": n.inspect.Driver})
	}
	e.ctrs[id] = c
	e.order = append(e.order, id)
	e.emit(events.ContainerEventType, events.ActionStart, id, attr)
	return id
}

// attach allocates the endpoint of c on n.
func (e *Engine) attach(n *fakeNetwork, c *fakeContainer, id, name string, ep Endpoint) {
	es := &network.EndpointSettings{
		NetworkID:  n.inspect.ID,
		EndpointID: e.newID("endpoint", name),
		Aliases:    slices.Clone(ep.Aliases),
	}
	// Engine 20.10 adds the short ID as an alias on user networks only.
	if n.inspect.Name != "bridge" && n.inspect.Driver == "bridge" {
		es.Aliases = append(es.Aliases, id[:12])
	}
	if n.prefix.IsValid() {
		var a netip.Addr
		if ep.IP != "" {
			a = netip.MustParseAddr(ep.IP)
		} else {
			a = n.alloc()
		}
		n.used[a] = id
		es.IPAddress = a.String()
		es.IPPrefixLen = n.prefix.Bits()
		es.Gateway = n.prefix.Addr().Next().String()
		b := a.As4()
		es.MacAddress = fmt.Sprintf("02:42:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
	}
	if ep.IPv6 != "" {
		es.GlobalIPv6Address = netip.MustParseAddr(ep.IPv6).String()
		es.GlobalIPv6PrefixLen = 64
	}
	c.resp.NetworkSettings.Networks[n.inspect.Name] = es
	c.nets = append(c.nets, n.inspect.ID)
	n.inspect.Containers[id] = network.EndpointResource{
		Name: name, EndpointID: es.EndpointID, MacAddress: es.MacAddress,
		IPv4Address: prefixString(es.IPAddress, es.IPPrefixLen), IPv6Address: prefixString(es.GlobalIPv6Address, es.GlobalIPv6PrefixLen),
	}
}

// alloc returns the next free address, wrapping once around the subnet.
func (n *fakeNetwork) alloc() netip.Addr {
	first := n.prefix.Addr().Next().Next()
	for range 2 {
		for a := n.next; n.prefix.Contains(a); a = a.Next() {
			if _, taken := n.used[a]; !taken && !isBroadcast(n.prefix, a) {
				n.next = a.Next()
				return a
			}
		}
		n.next = first
	}
	panic(fmt.Sprintf("dockerfake: subnet %s of network %s is full", n.prefix, n.inspect.Name))
}

func isBroadcast(p netip.Prefix, a netip.Addr) bool {
	return a.Is4() && !p.Contains(a.Next())
}

func (e *Engine) nextSubnet() string {
	for ; e.subnet < 256; e.subnet++ {
		s := fmt.Sprintf("10.%d.0.0/16", e.subnet)
		p := netip.MustParsePrefix(s)
		clash := false
		for _, n := range e.nets {
			if n.prefix.IsValid() && n.prefix.Overlaps(p) {
				clash = true
			}
		}
		if !clash {
			e.subnet++
			return s
		}
	}
	panic("dockerfake: out of automatic subnets")
}

// StopContainer stops and removes a container, emitting kill, die, a
// network disconnect per network, stop and destroy, as docker run --rm does.
// It reports whether the container existed.
func (e *Engine) StopContainer(ref string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.containerLocked(ref)
	if c == nil {
		return false
	}
	id, name := c.resp.ID, strings.TrimPrefix(c.resp.Name, "/")
	attr := map[string]string{"image": c.resp.Config.Image, "name": name}
	maps.Copy(attr, c.resp.Config.Labels)
	e.emit(events.ContainerEventType, events.ActionKill, id, withAttr(attr, "signal", "15"))
	e.emit(events.ContainerEventType, events.ActionDie, id, withAttr(attr, "exitCode", "0"))
	for _, nid := range c.nets {
		n := e.nets[nid]
		if n == nil {
			continue
		}
		delete(n.inspect.Containers, id)
		if es := c.resp.NetworkSettings.Networks[n.inspect.Name]; es != nil && es.IPAddress != "" {
			delete(n.used, netip.MustParseAddr(es.IPAddress))
		}
		e.emit(events.NetworkEventType, events.ActionDisconnect, nid, map[string]string{"container": id, "name": n.inspect.Name, "type": n.inspect.Driver})
	}
	e.emit(events.ContainerEventType, events.ActionStop, id, attr)
	e.emit(events.ContainerEventType, events.ActionDestroy, id, attr)
	delete(e.ctrs, id)
	if i := slices.Index(e.order, id); i >= 0 {
		e.order = slices.Delete(e.order, i, i+1)
	}
	return true
}

// SetHealth changes a container's health status and emits
// "health_status: <status>". It reports whether the container exists.
func (e *Engine) SetHealth(ref string, status container.HealthStatus) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.containerLocked(ref)
	if c == nil {
		return false
	}
	// Replace rather than mutate, so what Inspect returned earlier keeps
	// its old state.
	st := *c.resp.State
	h := container.Health{Log: []*container.HealthcheckResult{}}
	if st.Health != nil {
		h = *st.Health
	}
	if status == container.Unhealthy {
		h.FailingStreak++
	} else {
		h.FailingStreak = 0
	}
	h.Status = status
	st.Health = &h
	base := *c.resp.ContainerJSONBase
	base.State = &st
	c.resp.ContainerJSONBase = &base
	attr := map[string]string{"image": c.resp.Config.Image, "name": strings.TrimPrefix(c.resp.Name, "/")}
	maps.Copy(attr, c.resp.Config.Labels)
	e.emit(events.ContainerEventType, events.Action(string(events.ActionHealthStatus)+": "+string(status)), c.resp.ID, attr)
	return true
}

// Populate starts n containers named c0000, c0001, ... spread round-robin
// over Options.Networks user networks net0, net1, ... (10.100.0.0/16,
// 10.101.0.0/16, ...). Container i gets the address 10.(100+k).x.y where k is
// i mod the network count, allocated in order, so the layout is the same on
// every run. It returns the IDs in order.
func (e *Engine) Populate(n int) []string {
	k := e.opts.Networks
	names := make([]string, k)
	for j := range k {
		names[j] = fmt.Sprintf("net%d", j)
		e.AddNetwork(names[j], fmt.Sprintf("10.%d.0.0/16", 100+j))
	}
	ids := make([]string, n)
	for i := range n {
		ids[i] = e.StartContainer(ContainerSpec{
			Name:     fmt.Sprintf("c%04d", i),
			Networks: map[string]Endpoint{names[i%k]: {}},
		})
	}
	return ids
}

// Containers returns the IDs of the running containers in start order.
func (e *Engine) Containers() []string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return slices.Clone(e.order)
}

// Inspect returns a copy of a container's inspect data as the API would
// serve it, and whether it exists.
func (e *Engine) Inspect(ref string) (container.InspectResponse, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	c := e.containerLocked(ref)
	if c == nil {
		return container.InspectResponse{}, false
	}
	return c.resp, true
}

// Requests is how many API requests the engine has served.
func (e *Engine) Requests() int64 { return e.requests.Load() }

func withAttr(m map[string]string, k, v string) map[string]string {
	m = maps.Clone(m)
	m[k] = v
	return m
}

func prefixString(addr string, bits int) string {
	if addr == "" {
		return ""
	}
	return fmt.Sprintf("%s/%d", addr, bits)
}

func imageID(image string) string {
	sum := sha256.Sum256([]byte(image))
	return hex.EncodeToString(sum[:])
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
