package cluster

import (
	"net/netip"
	"strconv"

	"github.com/sidedns/sidedns/resolver"
)

// LocalRecords is what this host publishes from its Docker topology (DESIGN
// 7): every eligible container that other hosts can reach. A container on a
// network that spans hosts is published with its own addresses there and its
// own ports; otherwise one with published ports is published at advertise,
// with SRV names of its container ports pointing at the host ports. Zone-only
// containers (remote ones, records-file ones) and names that are not valid
// DNS names are left out.
func LocalRecords(t resolver.Topology, advertise netip.Addr) []Record {
	spans := make(map[string]bool)
	for _, n := range t.Networks {
		if n.Spans {
			spans[n.Name] = true
		}
	}
	var out []Record
	for i := range t.Containers {
		c := &t.Containers[i]
		if c.Origin != "" || c.State != resolver.StateRunning ||
			(c.Health != resolver.HealthNone && c.Health != resolver.HealthHealthy) {
			continue
		}
		r := Record{Name: c.Name, Project: c.Project, Service: c.Service, TTL: c.TTL,
			Tags: c.Tags, Weight: c.Weight, Drained: c.Drained}
		if r.Project == "" || r.Service == "" {
			r.Project, r.Service = "", ""
		}
		for _, ep := range c.Endpoints {
			if !spans[ep.NetworkName] {
				continue
			}
			for _, a := range []netip.Addr{ep.IPv4, ep.IPv6} {
				if a.IsValid() {
					r.Addresses = append(r.Addresses, a)
				}
			}
		}
		if len(r.Addresses) > 0 {
			for _, p := range c.Ports {
				r.Ports = append(r.Ports, Port{Name: p.Name, Port: p.Port, Proto: p.Proto})
			}
		} else if r.Ports = publishedPorts(c, advertise); len(r.Ports) > 0 {
			r.Addresses = []netip.Addr{advertise}
		}
		if len(r.Addresses) > maxAddresses {
			r.Addresses = r.Addresses[:maxAddresses]
		}
		if len(r.Ports) > maxPorts {
			r.Ports = r.Ports[:maxPorts]
		}
		if len(r.Tags) > maxTags {
			r.Tags = r.Tags[:maxTags]
		}
		if len(r.Addresses) == 0 || r.Validate() != nil {
			continue
		}
		out = append(out, r)
	}
	return out
}

// publishedPorts names each host port by its container port ("8080" for
// _8080._tcp) and by every sidedns.srv label naming that container port.
// Only bindings other hosts can reach at advertise count: on every address,
// on advertise itself, or on loopback when advertise is loopback (hosts
// that are processes on one machine). One binding per container port.
func publishedPorts(c *resolver.Container, advertise netip.Addr) []Port {
	var out []Port
	seen := make(map[resolver.Port]bool)
	for _, pp := range c.Published {
		ip := pp.HostIP.Unmap()
		if !ip.IsUnspecified() && ip != advertise && !(ip.IsLoopback() && advertise.IsLoopback()) {
			continue
		}
		if key := (resolver.Port{Port: pp.Port, Proto: pp.Proto}); seen[key] {
			continue // the IPv4 and IPv6 bindings of one port
		} else {
			seen[key] = true
		}
		out = append(out, Port{Name: strconv.Itoa(int(pp.Port)), Port: pp.HostPort, Proto: pp.Proto})
		for _, p := range c.Ports {
			if p.Name != "" && p.Port == pp.Port && p.Proto == pp.Proto {
				out = append(out, Port{Name: p.Name, Port: pp.HostPort, Proto: pp.Proto})
			}
		}
	}
	return out
}
