package resolver

import (
	"cmp"
	"maps"
	"slices"
	"strings"
)

// zoneTable holds the names of zone-only records (Container.Origin set):
// services from --records-file and from other cluster hosts. They answer only
// under the zone, never as bare Docker names. A set here also holds the local
// containers of the same name, first, so a name with local and remote
// replicas answers with the local ones ahead.
type zoneTable struct {
	names    map[string]*rrset // lower-cased record name
	services map[string]*rrset // "<service>.<project>"
	// parents holds the empty non-terminals these names make (RFC 8020):
	// "shop" for "api.shop", "_tcp.api" for an SRV port of "api".
	parents map[string]bool
}

func (z *zoneTable) used() bool { return len(z.names) != 0 }

// hasOrigin reports whether t holds any zone-only record.
func hasOrigin(t Topology) bool {
	return slices.ContainsFunc(t.Containers, func(c Container) bool { return c.Origin != "" })
}

// zoneUpdate is update for tables with zone-only records: they are merged
// with local names across networks, so a change is redone with a full build.
func (s *snapshot) zoneUpdate(t Topology) (*snapshot, bool) {
	if EqualTopology(s.topo, t) {
		return s, true
	}
	return nil, false
}

// buildZone fills s.zone from the zone-only containers of s.topo, after the
// network tables are built (it reads them for local replicas).
func (s *snapshot) buildZone(o Options) {
	t := s.topo
	var nc, neps int
	for i := range t.Containers {
		if c := &t.Containers[i]; c.Origin != "" {
			nc++
			neps += len(c.Endpoints)
		}
	}
	if nc == 0 {
		return
	}
	s.zone.names = make(map[string]*rrset, nc)
	s.zone.services = make(map[string]*rrset)
	s.zone.parents = make(map[string]bool)
	members := make([]member, neps) // one allocation for every zone member
	var svcKeys []string
	for i := range t.Containers {
		c := &t.Containers[i]
		if c.Origin == "" {
			continue
		}
		// "<service>.<project>" and the tag names, as for a local container.
		name := strings.ToLower(c.Name)
		svcKeys = serviceKeys(svcKeys[:0], c)
		s.zone.addParents(name, c.Ports)
		for _, key := range svcKeys {
			s.zone.addParents(key, c.Ports)
		}
		for j := range c.Endpoints {
			m := &members[0]
			members = members[1:]
			newMember(m, c, j, s.ords[i], o)
			zoneAdd(s.zone.names, name, m)
			for _, key := range svcKeys {
				zoneAdd(s.zone.services, key, m)
			}
		}
		s.containers++
	}
	for key, rs := range s.zone.names {
		s.prependLocal(rs, func(nt *netTable) *rrset { return nt.names.get(key) })
		s.names++
	}
	for key, rs := range s.zone.services {
		s.prependLocal(rs, func(nt *netTable) *rrset { return nt.services.get(key) })
	}
}

// addParents records the proper ancestors of key inside the zone, and the
// _<proto>.<key> names that hold its SRV records.
func (z *zoneTable) addParents(key string, ports []Port) {
	if key == "" {
		return
	}
	for i := strings.IndexByte(key, '.'); i >= 0; i = nextDot(key, i) {
		z.parents[key[i+1:]] = true
	}
	for _, p := range ports {
		z.parents["_"+strings.ToLower(p.Proto)+"."+key] = true
	}
}

func zoneAdd(m map[string]*rrset, key string, mb *member) {
	if rs := m[key]; rs != nil {
		rs.all = append(rs.all, mb)
		return
	}
	m[key] = &rrset{all: []*member{mb}}
}

// prependLocal puts the local containers that hold rs's name on any network
// ahead of the zone records, once each, in container order; then applies the
// health policy.
func (s *snapshot) prependLocal(rs *rrset, get func(*netTable) *rrset) {
	var local []*member
	for _, nt := range s.tables {
		if l := get(nt); l != nil {
			local = append(local, l.all...)
		}
	}
	if len(local) > 0 {
		slices.SortStableFunc(local, func(a, b *member) int { return cmp.Or(cmp.Compare(a.ord, b.ord), cmp.Compare(a.ep, b.ep)) })
		// One member per container: a container on two networks answers once.
		local = slices.CompactFunc(local, func(a, b *member) bool { return a.ord == b.ord })
		rs.all = append(local, rs.all...)
	}
	rs.finish(s.opts.StrictHealth)
	if len(local) == 0 {
		return
	}
	isLocal := make(map[*member]bool, len(local))
	for _, m := range local {
		isLocal[m] = true
	}
	for _, set := range append([]*rrset{rs}, slices.Collect(maps.Values(rs.byProject))...) {
		for set.local < len(set.answer) && isLocal[set.answer[set.local]] {
			set.local++
		}
	}
}

// at is member i of an answer that starts at cursor start. A zone set with
// local and remote members rotates each group on its own, so the local
// replicas always come first; any other set rotates as a whole.
func (rs *rrset) at(start, i int) *member {
	n, l := len(rs.answer), rs.local
	if l == 0 || l == n {
		return rs.answer[(start+i)%n]
	}
	if i < l {
		return rs.answer[(start+i)%l]
	}
	return rs.answer[l+(start+i-l)%(n-l)]
}

// find looks name up for a query: in the zone, zone records first (they
// carry the local replicas of their name too), then local names, then
// compose services; outside the zone, local names only.
func (s *snapshot) find(nets []int32, name string, inZone bool) *rrset {
	if !inZone {
		return s.lookup(nets, name)
	}
	if rs := s.zone.names[name]; rs != nil {
		return rs
	}
	if rs := s.lookup(nets, name); rs != nil {
		return rs
	}
	if rs := s.zone.services[name]; rs != nil {
		return rs
	}
	return s.lookupService(nets, name)
}
