package dockerwatch

import (
	"cmp"
	"slices"
	"strconv"

	"github.com/docker/go-connections/nat"

	"github.com/sidedns/sidedns/resolver"
)

// LabelCluster on a network marks it as reaching other hosts, whatever its
// driver (DESIGN 7).
const LabelCluster = "sidedns.cluster"

// spansHosts reports whether a network's addresses reach other hosts.
func spansHosts(driver string, labels map[string]string) bool {
	switch driver {
	case "overlay", "macvlan", "ipvlan":
		return true
	}
	b, err := strconv.ParseBool(labels[LabelCluster])
	return err == nil && b
}

// published reads the host ports Docker bound for a container, one per
// container port and protocol (the first binding: IPv4 and IPv6 bindings
// of one port share the host port).
func published(pm nat.PortMap) []resolver.Published {
	var out []resolver.Published
	for k, binds := range pm {
		p, err := parsePortProto(string(k))
		if err != nil {
			continue
		}
		for _, b := range binds {
			hp, err := strconv.ParseUint(b.HostPort, 10, 16)
			if err == nil && hp > 0 {
				out = append(out, resolver.Published{Port: p.Port, Proto: p.Proto, HostPort: uint16(hp)})
				break
			}
		}
	}
	slices.SortFunc(out, func(a, b resolver.Published) int {
		return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto))
	})
	return out
}

// ParsePort parses "8080/tcp" as the sidedns.srv labels do; the records file
// uses it too.
func ParsePort(s string) (resolver.Port, error) { return parsePortProto(s) }
