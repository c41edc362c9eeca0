package resolver

import (
	"net/netip"
	"slices"

	"github.com/miekg/dns"
)

// Owner is who stands behind an address or a name of the table: a compose
// service (Service and Project set) or a plain container (Container alone),
// on this host (Host empty) or elsewhere (Host is the container's Origin:
// another cluster host's address, or OriginRecordsFile). The strings are the
// topology's own; nothing is copied.
type Owner struct {
	Service   string
	Project   string
	Container string
	Host      string
}

// QuerierOf returns the container that holds src, as queries see it (the
// last one in container order when several do), and false for an address
// the table does not know: the host, or a source outside Docker.
func (r *Resolver) QuerierOf(src netip.Addr) (Owner, bool) {
	s := r.snap.Load()
	us := s.addrs.get(src.Unmap())
	if len(us) == 0 {
		return Owner{}, false
	}
	return s.ownerByOrd(us[len(us)-1].ord)
}

// NameOwner returns the container or service that a query for name (lower
// case, no trailing dot) from src would be answered from. ok is false when
// the name is not ours and would be forwarded. A name of ours with no
// container behind it (the apex, a PTR name, NXDOMAIN inside the zone) gives
// ok with an empty Owner. It reads the same decision as Answer does, without
// moving the round-robin cursors.
func (r *Resolver) NameOwner(src netip.Addr, name string) (Owner, bool) {
	if name == "" {
		return Owner{}, false
	}
	s := r.snap.Load()
	// ANY decides like A for every name but moves no rotation cursor.
	d := s.decide([]byte(name), dns.TypeANY, src)
	if d.outcome == notOurs {
		return Owner{}, false
	}
	if d.rs == nil || len(d.rs.all) == 0 {
		return Owner{}, true
	}
	return s.ownerByOrd(d.rs.all[0].ord)
}

// ownerByOrd finds the container with order key ord; ords sort in
// container order.
func (s *snapshot) ownerByOrd(ord uint64) (Owner, bool) {
	i, ok := slices.BinarySearch(s.ords, ord)
	if !ok {
		return Owner{}, false
	}
	c := &s.topo.Containers[i]
	return Owner{Service: c.Service, Project: c.Project, Container: c.Name, Host: c.Origin}, true
}

// Generation changes whenever a new table is published, so that a reader
// of QuerierOf and NameOwner knows when what it learned may be stale.
func (r *Resolver) Generation() uint64 { return r.Stats.Publishes.Load() }

// Topology returns the topology the current table was built from. It is
// shared: callers must not change it.
func (r *Resolver) Topology() Topology { return r.snap.Load().topo }
