package ops

import (
	"slices"
	"strings"

	"github.com/sidedns/sidedns/resolver"
)

// shortIDLen is Docker's short container ID length.
const shortIDLen = 12

// Records is the JSON body of /api/v1/records: the table as people and
// scripts see it. Field names are part of the API; add, never rename.
type Records struct {
	Networks   []NetworkRecord   `json:"networks"`
	Containers []ContainerRecord `json:"containers"`
	// Cluster is the other hosts with their last heartbeat and records,
	// when sidedns runs with --cluster-etcd.
	Cluster any `json:"cluster,omitempty"`

	// Names is every name the resolver answers, per network, as the
	// resolver itself lists it.
	Names []NameRecord `json:"names"`
}

// NameRecord is one name the resolver answers on one network.
type NameRecord struct {
	Name    string `json:"name"`
	Network string `json:"network"`
	// Zone: a <service>.<project>.<zone> name, answered only inside the
	// zone; the others answer bare, as <name>.<network> and in the zone.
	Zone bool `json:"zone"`
	// Addresses is what an A or AAAA query from the host gets.
	Addresses  []string `json:"addresses"`
	FailOpen   bool     `json:"fail_open"`
	Containers []string `json:"containers"` // IDs, whatever their state
}

// NetworkRecord is one Docker network.
type NetworkRecord struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Internal bool     `json:"internal"`
	Subnets  []string `json:"subnets"`
}

// ContainerRecord is one container with every name it answers to.
type ContainerRecord struct {
	ID       string `json:"id"`
	ShortID  string `json:"short_id"`
	Name     string `json:"name"`
	Hostname string `json:"hostname"`
	// Names is every name the container answers to on any of its networks,
	// lower-cased, as the resolver answers them (see Records.Names).
	Names   []string `json:"names"`
	Project string   `json:"project,omitempty"`
	Service string   `json:"service,omitempty"`
	State   string   `json:"state"`
	Health  string   `json:"health"`
	TTL     uint32   `json:"ttl,omitempty"`
	Tags    []string `json:"tags"`
	// Weight is how often the container comes first in answers, relative
	// to the others under a name; 0 when drained.
	Weight    uint16          `json:"weight"`
	Drained   bool            `json:"drained"`
	Ports     []PortRecord    `json:"ports"`
	Addresses []AddressRecord `json:"addresses"`
	// Origin is set for a record that is not a local container: "file"
	// for --records-file, or the cluster host that published it.
	Origin string `json:"origin,omitempty"`
}

// PortRecord is an exposed port; Name is set for sidedns.srv.<name> ports.
type PortRecord struct {
	Name  string `json:"name,omitempty"`
	Port  uint16 `json:"port"`
	Proto string `json:"proto"`
}

// AddressRecord is a container's attachment to one network.
type AddressRecord struct {
	NetworkID string   `json:"network_id"`
	Network   string   `json:"network"`
	IPv4      string   `json:"ipv4,omitempty"`
	IPv6      string   `json:"ipv6,omitempty"`
	Aliases   []string `json:"aliases"`
	// Names is what the container answers to on this network, by name.
	Names []string `json:"names"`
}

// BuildRecords turns a topology and the names the resolver answers for it
// into the JSON view. Slices are never nil so clients can iterate without
// checks.
func BuildRecords(t resolver.Topology, names []resolver.Record) Records {
	r := Records{
		Networks:   make([]NetworkRecord, 0, len(t.Networks)),
		Containers: make([]ContainerRecord, 0, len(t.Containers)),
		Names:      make([]NameRecord, 0, len(names)),
	}
	for _, n := range t.Networks {
		nr := NetworkRecord{ID: n.ID, Name: n.Name, Internal: n.Internal, Subnets: make([]string, 0, len(n.Subnets))}
		for _, p := range n.Subnets {
			nr.Subnets = append(nr.Subnets, p.String())
		}
		r.Networks = append(r.Networks, nr)
	}
	// The bare names of each container, by network.
	type onNet struct{ id, network string }
	held := make(map[onNet][]string)
	for _, rec := range names {
		nr := NameRecord{
			Name: rec.Name, Network: rec.Network, Zone: rec.Zone, FailOpen: rec.FailOpen,
			Addresses:  make([]string, 0, len(rec.Addrs)),
			Containers: append(make([]string, 0, len(rec.Containers)), rec.Containers...),
		}
		for _, a := range rec.Addrs {
			nr.Addresses = append(nr.Addresses, a.String())
		}
		r.Names = append(r.Names, nr)
		if rec.Zone {
			continue
		}
		for _, id := range rec.Containers {
			k := onNet{id, strings.ToLower(rec.Network)}
			held[k] = append(held[k], rec.Name)
		}
	}
	for _, c := range t.Containers {
		r.Containers = append(r.Containers, buildContainer(c, func(network string) []string {
			return held[onNet{c.ID, strings.ToLower(network)}]
		}))
	}
	return r
}

func buildContainer(c resolver.Container, namesOn func(network string) []string) ContainerRecord {
	short := c.ID
	if len(short) > shortIDLen {
		short = short[:shortIDLen]
	}
	cr := ContainerRecord{
		ID:        c.ID,
		ShortID:   short,
		Name:      c.Name,
		Hostname:  c.Hostname,
		Project:   c.Project,
		Service:   c.Service,
		Origin:    c.Origin,
		State:     c.State.String(),
		Health:    c.Health.String(),
		TTL:       c.TTL,
		Names:     []string{},
		Tags:      append(make([]string, 0, len(c.Tags)), c.Tags...),
		Weight:    c.Weight,
		Drained:   c.Drained,
		Ports:     make([]PortRecord, 0, len(c.Ports)),
		Addresses: make([]AddressRecord, 0, len(c.Endpoints)),
	}
	switch {
	case c.Drained:
		cr.Weight = 0
	case c.Weight == 0:
		cr.Weight = resolver.DefaultWeight
	}
	for _, p := range c.Ports {
		cr.Ports = append(cr.Ports, PortRecord{Name: p.Name, Port: p.Port, Proto: p.Proto})
	}
	for _, ep := range c.Endpoints {
		ar := AddressRecord{
			NetworkID: ep.NetworkID,
			Network:   ep.NetworkName,
			Aliases:   append(make([]string, 0, len(ep.Aliases)), ep.Aliases...),
			Names:     append([]string{}, namesOn(ep.NetworkName)...),
		}
		if ep.IPv4.IsValid() {
			ar.IPv4 = ep.IPv4.String()
		}
		if ep.IPv6.IsValid() {
			ar.IPv6 = ep.IPv6.String()
		}
		for _, n := range ar.Names {
			if !slices.Contains(cr.Names, n) {
				cr.Names = append(cr.Names, n)
			}
		}
		cr.Addresses = append(cr.Addresses, ar)
	}
	return cr
}
