package resolver

import (
	"cmp"
	"net/netip"
	"slices"
)

// Record is one name the resolver answers on one network, as a query from
// an unknown source (the admin view) gets it. A name answers bare, as
// <name>.<network>, and inside the zone; a compose service name only as
// <service>.<project>.<zone>.
type Record struct {
	// Name is lower-cased, without the trailing dot; for a Zone record it
	// ends in the zone ("web.proj.docker").
	Name    string
	Network string // as Docker spells it
	Zone    bool   // a <service>.<project>.<zone> name, answered only inside the zone
	// Addrs is what A and AAAA queries get, after the health policy, in
	// table order (answers rotate from there).
	Addrs []netip.Addr
	// FailOpen: no container under the name is eligible, so Addrs holds
	// the running ones.
	FailOpen bool
	// Containers holds the IDs of every container under the name, whatever
	// their state, in table order.
	Containers []string
}

// Records returns the names of the current table, by network, then bare
// names before zone names, then by name, with the topology they come from.
func (r *Resolver) Records() (Topology, []Record) {
	s := r.snap.Load()
	var out []Record
	for _, slot := range s.all {
		nt := s.tables[slot]
		start := len(out)
		add := func(name string, rs *rrset, zone bool) {
			rec := Record{Name: name, Network: nt.name, Zone: zone, FailOpen: rs.failOpen}
			for _, m := range rs.answer {
				for _, a := range [2]netip.Addr{m.ip4, m.ip6} {
					if a.IsValid() {
						rec.Addrs = append(rec.Addrs, a)
					}
				}
			}
			for _, m := range rs.all {
				if !slices.Contains(rec.Containers, m.id) {
					rec.Containers = append(rec.Containers, m.id)
				}
			}
			out = append(out, rec)
		}
		nt.names.each(func(name string, rs *rrset) { add(name, rs, false) })
		nt.services.each(func(key string, rs *rrset) { add(key+s.zoneSuffix, rs, true) })
		slices.SortFunc(out[start:], func(a, b Record) int {
			if a.Zone != b.Zone {
				if a.Zone {
					return 1
				}
				return -1
			}
			return cmp.Compare(a.Name, b.Name)
		})
	}
	return s.topo, out
}
