// Package dockerwatch mirrors the Docker engine's containers and networks into
// a resolver.Topology. Build is the pure transform from inspect results to a
// Topology; Watcher does the Docker I/O (subscribe, list, inspect, follow
// events) and publishes a new Topology whenever the table changes.
package dockerwatch

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"github.com/sidedns/sidedns/resolver"
)

// Compose labels (set by compose v1 and v2 alike).
const (
	LabelComposeProject = "com.docker.compose.project"
	LabelComposeService = "com.docker.compose.service"
)

// Problem is a piece of Docker data that Build ignored: a malformed sidedns
// label or an unparsable address. The watcher logs each (ContainerID, Subject)
// once.
type Problem struct {
	ContainerID string // empty for a network problem
	Container   string // container name, or network name
	Subject     string // label key, or "endpoint <network>", or "subnet"
	Err         error
}

// compareContainers is the topology's container order: by name, then ID.
func compareContainers(a, b *resolver.Container) int {
	return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
}

// buildNetworks converts the network list, sorted by name, and returns which
// network IDs are internal, for SortEndpoints.
func buildNetworks(networks []network.Summary) ([]resolver.Network, map[string]bool, []Problem) {
	var (
		out      []resolver.Network
		problems []Problem
	)
	internal := make(map[string]bool, len(networks))
	for _, n := range networks {
		internal[n.ID] = n.Internal
		nw := resolver.Network{ID: n.ID, Name: n.Name, Internal: n.Internal, Spans: spansHosts(n.Driver, n.Labels)}
		for _, c := range n.IPAM.Config {
			if c.Subnet == "" {
				continue
			}
			p, err := netip.ParsePrefix(c.Subnet)
			if err != nil {
				problems = append(problems, Problem{Container: n.Name, Subject: "subnet", Err: fmt.Errorf("parse subnet: %w", err)})
				continue
			}
			nw.Subnets = append(nw.Subnets, p.Masked())
		}
		out = append(out, nw)
	}
	slices.SortFunc(out, func(a, b resolver.Network) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return out, internal, problems
}

// buildContainer converts one inspect result; ok is false when the container
// is hidden or too incomplete to use.
func buildContainer(in *container.InspectResponse) (c resolver.Container, ok bool, problems []Problem) {
	if in.ContainerJSONBase == nil || in.ID == "" {
		return c, false, nil
	}
	c.ID = in.ID
	c.Name = strings.TrimPrefix(in.Name, "/")
	c.State, c.Health = state(in.State)

	var labels map[string]string
	if in.Config != nil {
		c.Hostname = in.Config.Hostname
		labels = in.Config.Labels
		c.Ports = exposedPorts(in.Config.ExposedPorts)
	}
	c.Project = labels[LabelComposeProject]
	c.Service = labels[LabelComposeService]

	lc, errs := ParseLabels(labels)
	for _, err := range errs {
		subject := ""
		if le, isLE := err.(*LabelError); isLE {
			subject = le.Label
		}
		problems = append(problems, Problem{ContainerID: c.ID, Container: c.Name, Subject: subject, Err: err})
	}
	if lc.Hidden {
		return c, false, problems
	}
	c.TTL = lc.TTL
	c.Names = lc.Names
	c.Tags, c.Weight, c.Drained = lc.Tags, lc.Weight, lc.Drained
	c.Ports = append(c.Ports, lc.Ports...)
	slices.SortFunc(c.Ports, func(a, b resolver.Port) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto))
	})

	if in.NetworkSettings != nil {
		c.Published = published(in.NetworkSettings.Ports)
		for name, es := range in.NetworkSettings.Networks {
			if es == nil {
				continue
			}
			ep, err := endpoint(name, es)
			if err != nil {
				problems = append(problems, Problem{ContainerID: c.ID, Container: c.Name, Subject: "endpoint " + name, Err: err})
			}
			// An endpoint without any address (network mode host or none, or
			// a container between restarts) cannot be answered from.
			if !ep.IPv4.IsValid() && !ep.IPv6.IsValid() {
				continue
			}
			c.Endpoints = append(c.Endpoints, ep)
		}
	}
	return c, true, problems
}

// endpoint converts one network attachment. A bad address is reported and
// left zero; the other family still counts.
func endpoint(name string, es *network.EndpointSettings) (resolver.Endpoint, error) {
	ep := resolver.Endpoint{NetworkID: es.NetworkID, NetworkName: name}
	// Aliases then DNSNames (API 1.44+), without repeats.
	n := len(es.Aliases) + len(es.DNSNames)
	if n > 0 {
		ep.Aliases = make([]string, 0, n)
		for _, list := range [][]string{es.Aliases, es.DNSNames} {
			for _, a := range list {
				if a != "" && !slices.Contains(ep.Aliases, a) {
					ep.Aliases = append(ep.Aliases, a)
				}
			}
		}
	}
	var errs []error
	if es.IPAddress != "" {
		a, err := netip.ParseAddr(es.IPAddress)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("parse IPv4 address: %w", err))
		case !a.Unmap().Is4():
			errs = append(errs, fmt.Errorf("parse IPv4 address: %s is not IPv4", a))
		default:
			ep.IPv4 = a.Unmap()
		}
	}
	if es.GlobalIPv6Address != "" {
		a, err := netip.ParseAddr(es.GlobalIPv6Address)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("parse IPv6 address: %w", err))
		case !a.Is6() || a.Is4In6() || a.Zone() != "":
			errs = append(errs, fmt.Errorf("parse IPv6 address: %s is not a global IPv6 address", a))
		default:
			ep.IPv6 = a
		}
	}
	return ep, errors.Join(errs...)
}

// SortEndpoints puts endpoints in Docker's resolution order: networks that are
// not internal first, then by network name (ties by network ID so the order
// is total). isInternal reports whether a network ID is internal; unknown
// networks count as not internal.
func SortEndpoints(eps []resolver.Endpoint, isInternal func(networkID string) bool) {
	slices.SortStableFunc(eps, func(a, b resolver.Endpoint) int {
		ia, ib := isInternal(a.NetworkID), isInternal(b.NetworkID)
		if ia != ib {
			if ia {
				return 1
			}
			return -1
		}
		return cmp.Or(cmp.Compare(a.NetworkName, b.NetworkName), cmp.Compare(a.NetworkID, b.NetworkID))
	})
}

// state maps Docker's run state and health. Docker reports a paused container
// as Running too, so Paused and Restarting are checked first.
func state(st *container.State) (resolver.State, resolver.Health) {
	if st == nil {
		return resolver.StateDead, resolver.HealthNone
	}
	s := resolver.StateDead
	switch {
	case st.Running && !st.Paused && !st.Restarting:
		s = resolver.StateRunning
	case st.Paused:
		s = resolver.StatePaused
	case st.Restarting:
		s = resolver.StateRestarting
	}
	h := resolver.HealthNone
	if st.Health != nil {
		h = healthOf(st.Health.Status)
	}
	return s, h
}

// healthOf maps Docker's health status; unknown values count as no
// healthcheck, which keeps the container eligible.
func healthOf(s container.HealthStatus) resolver.Health {
	switch s {
	case container.Starting:
		return resolver.HealthStarting
	case container.Healthy:
		return resolver.HealthHealthy
	case container.Unhealthy:
		return resolver.HealthUnhealthy
	}
	return resolver.HealthNone
}

// exposedPorts reads Config.ExposedPorts ("8080/tcp"). Ports of other
// protocols (sctp) have no SRV use here and are skipped, as are malformed ones.
func exposedPorts[K ~string, V any](set map[K]V) []resolver.Port {
	if len(set) == 0 {
		return nil
	}
	ports := make([]resolver.Port, 0, len(set))
	for k := range set {
		spec := string(k)
		if !strings.Contains(spec, "/") {
			spec += "/tcp" // Docker's default when none is given
		}
		if p, err := parsePortProto(spec); err == nil {
			ports = append(ports, p)
		}
	}
	return ports
}
