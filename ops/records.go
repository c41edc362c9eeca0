package ops

import (
	"strings"

	"github.com/sidedns/sidedns/resolver"
)

// shortIDLen is Docker's short container ID length, which is also a name.
const shortIDLen = 12

// Records is the JSON body of /api/v1/records: the table as people and
// scripts see it. Field names are part of the API; add, never rename.
type Records struct {
	Networks   []NetworkRecord   `json:"networks"`
	Containers []ContainerRecord `json:"containers"`
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
	// Names is every name the container answers to on any of its networks:
	// name, aliases, short ID, hostname and sidedns.names, without
	// case-insensitive duplicates.
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
	// Names is what the container answers to on this network (section 2.1
	// order: name, aliases, short ID, hostname, then sidedns.names).
	Names []string `json:"names"`
}

// BuildRecords turns a topology into its JSON view. Slices are never nil so
// clients can iterate without checks.
func BuildRecords(t resolver.Topology) Records {
	r := Records{
		Networks:   make([]NetworkRecord, 0, len(t.Networks)),
		Containers: make([]ContainerRecord, 0, len(t.Containers)),
	}
	for _, n := range t.Networks {
		nr := NetworkRecord{ID: n.ID, Name: n.Name, Internal: n.Internal, Subnets: make([]string, 0, len(n.Subnets))}
		for _, p := range n.Subnets {
			nr.Subnets = append(nr.Subnets, p.String())
		}
		r.Networks = append(r.Networks, nr)
	}
	for _, c := range t.Containers {
		r.Containers = append(r.Containers, buildContainer(c))
	}
	return r
}

func buildContainer(c resolver.Container) ContainerRecord {
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
		State:     c.State.String(),
		Health:    c.Health.String(),
		TTL:       c.TTL,
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
	all := newNameSet()
	all.add(c.Name)
	for _, ep := range c.Endpoints {
		ar := AddressRecord{
			NetworkID: ep.NetworkID,
			Network:   ep.NetworkName,
			Aliases:   append(make([]string, 0, len(ep.Aliases)), ep.Aliases...),
		}
		if ep.IPv4.IsValid() {
			ar.IPv4 = ep.IPv4.String()
		}
		if ep.IPv6.IsValid() {
			ar.IPv6 = ep.IPv6.String()
		}
		names := newNameSet()
		names.add(c.Name)
		names.add(ep.Aliases...)
		names.add(short, c.Hostname)
		names.add(c.Names...)
		ar.Names = names.list
		all.add(names.list...)
		cr.Addresses = append(cr.Addresses, ar)
	}
	// A container without endpoints still has these names in the table.
	all.add(short, c.Hostname)
	all.add(c.Names...)
	cr.Names = all.list
	return cr
}

// nameSet keeps names in first-seen order, dropping empty names and
// case-insensitive duplicates, as DNS matching is case-insensitive.
type nameSet struct {
	seen map[string]struct{}
	list []string
}

func newNameSet() *nameSet {
	return &nameSet{seen: make(map[string]struct{}), list: []string{}}
}

func (s *nameSet) add(names ...string) {
	for _, n := range names {
		n = strings.TrimSuffix(n, ".")
		if n == "" {
			continue
		}
		k := strings.ToLower(n)
		if _, ok := s.seen[k]; ok {
			continue
		}
		s.seen[k] = struct{}{}
		s.list = append(s.list, n)
	}
}
