package dockerwatch

import (
	"cmp"
	"net/netip"
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

// published reads the host ports Docker bound for a container: every
// binding, by container port, protocol and host address.
func published(pm nat.PortMap) []resolver.Published {
	var out []resolver.Published
	for k, binds := range pm {
		p, err := parsePortProto(string(k))
		if err != nil {
			continue
		}
		for _, b := range binds {
			hp, err := strconv.ParseUint(b.HostPort, 10, 16)
			if err != nil || hp == 0 {
				continue
			}
			ip := netip.IPv4Unspecified() // Docker writes "" for every address
			if b.HostIP != "" {
				if ip, err = netip.ParseAddr(b.HostIP); err != nil {
					continue
				}
			}
			out = append(out, resolver.Published{Port: p.Port, Proto: p.Proto, HostPort: uint16(hp), HostIP: ip})
		}
	}
	slices.SortFunc(out, func(a, b resolver.Published) int {
		return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto), a.HostIP.Compare(b.HostIP), cmp.Compare(a.HostPort, b.HostPort))
	})
	return out
}

// ParsePort parses "8080/tcp" as the sidedns.srv labels do; the records file
// uses it too.
func ParsePort(s string) (resolver.Port, error) { return parsePortProto(s) }
