// Package resolver holds the container name table and answers queries from it.
// It knows nothing about the Docker API: dockerwatch turns Docker state into a
// Topology, and Resolver.Publish turns a Topology into an immutable snapshot
// that the query path reads without locks.
package resolver

import "net/netip"

// Health is a container's healthcheck state as Docker reports it.
type Health uint8

const (
	HealthNone      Health = iota // no healthcheck: eligible
	HealthStarting                // healthcheck not yet passed: left out
	HealthHealthy                 // eligible
	HealthUnhealthy               // left out
)

func (h Health) String() string {
	switch h {
	case HealthStarting:
		return "starting"
	case HealthHealthy:
		return "healthy"
	case HealthUnhealthy:
		return "unhealthy"
	}
	return "none"
}

// State is a container's run state. Only running containers are answered;
// the others stay in the table so the ops surface can show them.
type State uint8

const (
	StateRunning State = iota
	StatePaused
	StateRestarting
	StateDead // exited, dead or removing
)

func (s State) String() string {
	switch s {
	case StatePaused:
		return "paused"
	case StateRestarting:
		return "restarting"
	case StateDead:
		return "dead"
	}
	return "running"
}

// Port is a port a container exposes. Name is empty for a plain exposed port
// and set for ports named by a sidedns.srv.<name> label.
type Port struct {
	Name  string
	Port  uint16
	Proto string // "tcp" or "udp"
}

// Endpoint is a container's attachment to one network.
type Endpoint struct {
	NetworkID   string
	NetworkName string
	// Aliases holds the endpoint's aliases and DNSNames in Docker's order
	// (compose adds <project>-<service>-<n> and <service>). Duplicates of the
	// container name, short ID or hostname are harmless.
	Aliases []string
	IPv4    netip.Addr // zero when the endpoint has none
	IPv6    netip.Addr // zero when the endpoint has none
}

// Container is one container as the table needs it.
type Container struct {
	ID       string // full 64-character ID
	Name     string // without Docker's leading "/"
	Hostname string
	Project  string // com.docker.compose.project label
	Service  string // com.docker.compose.service label
	Health   Health
	State    State
	TTL      uint32   // from sidedns.ttl; 0 means the configured default
	Names    []string // extra names from sidedns.names
	Ports    []Port
	// Tags from sidedns.tags, lower-cased: <tag>.<service>.<project>.<zone>
	// and <tag>.<name>.<zone> answer only the containers that carry the tag.
	Tags []string
	// Weight is how often the container comes first in an answer, relative
	// to the others (sidedns.weight or a runtime override); 0 means
	// DefaultWeight. Drained (weight 0) leaves the container out of answers
	// unless nothing else is left.
	Weight  uint16
	Drained bool
	// Endpoints in Docker's resolution order (dockerwatch.SortEndpoints).
	Endpoints []Endpoint
	// Published are the ports Docker binds on the host (docker run -p),
	// which the cluster advertises at the host's address.
	Published []Published
	// Origin is empty for a local Docker container. Otherwise the container
	// is a record from elsewhere (a cluster host's address, or OriginFile for
	// --records-file) and answers only under the zone, after local replicas.
	Origin string
}

// OriginFile is the Origin of the records of --records-file: this host's own
// configuration, not a container.
const OriginFile = "file"

// Published is a container port bound to a host port.
type Published struct {
	Port     uint16 // the container's port
	Proto    string // "tcp" or "udp"
	HostPort uint16
	HostIP   netip.Addr // the address bound; unspecified (0.0.0.0, ::) for every address
}

// Network is a Docker network.
type Network struct {
	ID       string
	Name     string
	Internal bool
	Subnets  []netip.Prefix
	// Spans says the network reaches other hosts (overlay, macvlan or ipvlan
	// driver, or the label sidedns.cluster=true): the cluster advertises
	// addresses on it as they are.
	Spans bool
}

// Topology is everything the table is built from. Containers hidden with
// sidedns.enable=false are left out by the producer.
type Topology struct {
	Networks   []Network
	Containers []Container
}
