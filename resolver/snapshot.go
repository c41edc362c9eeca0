package resolver

import (
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
)

// snapshot is the immutable, query-ready table. Everything a query needs is
// computed here, at publish time: lower-cased keys, parsed addresses, health
// eligibility and per-project subsets.
type snapshot struct {
	topo   Topology
	opts   Options
	domain string // lower-cased zone without the trailing dot, e.g. "docker"

	byName  map[string]*netTable // lower-cased network name -> table
	all     []*netTable          // every network in Docker's order: the admin view
	clients map[netip.Addr]*querier
	ptrs    map[netip.Addr][]ptrTarget
	subnets []netip.Prefix

	names, containers int // table size, for metrics
}

// netTable is one network's names.
type netTable struct {
	name     string // as Docker spells it
	names    map[string]*rrset
	services map[string]*rrset // "<service>.<project>" -> compose service members
}

// querier is a container address and what it may see.
type querier struct {
	networks []*netTable // the container's networks, in Docker's order
	project  string
}

type ptrTarget struct {
	network *netTable
	target  string // "<container-name>.<network>."
}

// member is one container's endpoint on one network.
type member struct {
	name    string // container name
	project string
	ip4     netip.Addr
	ip6     netip.Addr
	ttl     uint32
	ports   []Port
	network string
}

// rrset is everything one name means on one network.
type rrset struct {
	// answer is what queries get after health filtering; failOpen says it
	// holds ineligible containers because no eligible one remained.
	answer    []*member
	failOpen  bool
	byProject map[string]*rrset // compose project -> that project's subset
	next      atomic.Uint32     // round-robin cursor
	all       []*member         // every container, whatever its state; for building
}

func buildSnapshot(t Topology, o Options) *snapshot {
	s := &snapshot{
		topo:    t,
		opts:    o,
		domain:  strings.TrimSuffix(strings.ToLower(o.Domain), "."),
		byName:  make(map[string]*netTable),
		clients: make(map[netip.Addr]*querier),
		ptrs:    make(map[netip.Addr][]ptrTarget),
	}
	for _, n := range t.Networks {
		s.table(n.Name)
		s.subnets = append(s.subnets, n.Subnets...)
	}
	eligible := make(map[*member]bool)
	running := make(map[*member]bool)
	for i := range t.Containers {
		c := &t.Containers[i]
		cl := &querier{project: c.Project}
		for _, ep := range c.Endpoints {
			nt := s.table(ep.NetworkName)
			m := &member{
				name: c.Name, project: c.Project, ip4: ep.IPv4, ip6: ep.IPv6,
				ttl: o.TTL, ports: c.Ports, network: ep.NetworkName,
			}
			if c.TTL > 0 {
				m.ttl = c.TTL
			}
			running[m] = c.State == StateRunning
			eligible[m] = c.State == StateRunning && (c.Health == HealthNone || c.Health == HealthHealthy)
			for _, name := range containerNames(c, ep) {
				rs := nt.names[name]
				if rs == nil {
					rs = &rrset{}
					nt.names[name] = rs
					s.names++
				}
				rs.all = append(rs.all, m)
			}
			if c.Service != "" && c.Project != "" {
				key := strings.ToLower(c.Service + "." + c.Project)
				rs := nt.services[key]
				if rs == nil {
					rs = &rrset{}
					nt.services[key] = rs
				}
				rs.all = append(rs.all, m)
			}
			cl.networks = append(cl.networks, nt)
			target := c.Name + "." + ep.NetworkName + "."
			for _, a := range []netip.Addr{ep.IPv4, ep.IPv6} {
				if a.IsValid() {
					s.clients[a] = cl
					s.ptrs[a] = append(s.ptrs[a], ptrTarget{network: nt, target: target})
				}
			}
		}
		s.containers++
	}
	for _, nt := range s.byName {
		for _, rs := range nt.names {
			rs.finish(eligible, running, o.StrictHealth)
		}
		for _, rs := range nt.services {
			rs.finish(eligible, running, o.StrictHealth)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.byName)) {
		s.all = append(s.all, s.byName[name])
	}
	return s
}

func (s *snapshot) table(name string) *netTable {
	key := strings.ToLower(name)
	nt := s.byName[key]
	if nt == nil {
		nt = &netTable{name: name, names: make(map[string]*rrset), services: make(map[string]*rrset)}
		s.byName[key] = nt
	}
	return nt
}

// finish applies the health policy and splits the set by compose project.
func (rs *rrset) finish(eligible, running map[*member]bool, strict bool) {
	rs.answer, rs.failOpen = pickAnswer(rs.all, eligible, running, strict)
	projects := make(map[string][]*member)
	for _, m := range rs.all {
		if m.project != "" {
			projects[m.project] = append(projects[m.project], m)
		}
	}
	for p, ms := range projects {
		if len(ms) == len(rs.all) {
			continue // the subset is the whole set: no need to keep it twice
		}
		sub := &rrset{all: ms}
		sub.answer, sub.failOpen = pickAnswer(ms, eligible, running, strict)
		if rs.byProject == nil {
			rs.byProject = make(map[string]*rrset)
		}
		rs.byProject[p] = sub
	}
}

// pickAnswer returns the eligible members, or, when none is eligible, every
// running member (fail open) unless strict is set.
func pickAnswer(all []*member, eligible, running map[*member]bool, strict bool) ([]*member, bool) {
	var ok, run []*member
	for _, m := range all {
		if eligible[m] {
			ok = append(ok, m)
		}
		if running[m] {
			run = append(run, m)
		}
	}
	if len(ok) > 0 || strict || len(run) == 0 {
		return ok, false
	}
	return run, true
}

// containerNames lists the names an endpoint registers, lower-cased and
// without duplicates, in DESIGN 2.1 order.
func containerNames(c *Container, ep Endpoint) []string {
	var names []string
	add := func(n string) {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	add(c.Name)
	for _, a := range ep.Aliases {
		add(a)
	}
	if len(c.ID) >= 12 {
		add(c.ID[:12])
	}
	add(c.Hostname)
	for _, n := range c.Names {
		add(n)
	}
	return names
}

// view is the list of networks a source may see.
func (s *snapshot) view(src netip.Addr) (nets []*netTable, project string) {
	if cl := s.clients[src.Unmap()]; cl != nil {
		return cl.networks, cl.project
	}
	return s.all, ""
}

// lookup finds name (lower-cased, no trailing dot) in the view: whole on each
// network in order, then "a.b" on network "c", then "a" on network "b.c".
// The first network that knows the name supplies all the addresses.
func (s *snapshot) lookup(nets []*netTable, name string) *rrset {
	for _, nt := range nets {
		if rs := nt.names[name]; rs != nil {
			return rs
		}
	}
	for i := strings.LastIndexByte(name, '.'); i > 0; i = strings.LastIndexByte(name[:i], '.') {
		if nt := findNet(nets, name[i+1:]); nt != nil {
			if rs := nt.names[name[:i]]; rs != nil {
				return rs
			}
		}
	}
	return nil
}

// lookupService finds "<service>.<project>" in the view.
func lookupService(nets []*netTable, name string) *rrset {
	for _, nt := range nets {
		if rs := nt.services[name]; rs != nil {
			return rs
		}
	}
	return nil
}

func findNet(nets []*netTable, lname string) *netTable {
	for _, nt := range nets {
		if strings.EqualFold(nt.name, lname) {
			return nt
		}
	}
	return nil
}

// scoped narrows rs to the querier's compose project when that project has
// containers under the name.
func scoped(rs *rrset, project string) *rrset {
	if project != "" {
		if sub := rs.byProject[project]; sub != nil {
			return sub
		}
	}
	return rs
}

// ptrName parses an in-addr.arpa or ip6.arpa name (lower-cased, no trailing
// dot) into an address.
func ptrName(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa"); ok {
		parts := strings.Split(rest, ".")
		if len(parts) != 4 {
			return netip.Addr{}, false
		}
		var b [4]byte
		for i, p := range parts {
			v, err := strconv.ParseUint(p, 10, 8)
			if err != nil || (len(p) > 1 && p[0] == '0') {
				return netip.Addr{}, false
			}
			b[3-i] = byte(v)
		}
		return netip.AddrFrom4(b), true
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa"); ok {
		parts := strings.Split(rest, ".")
		if len(parts) != 32 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i, p := range parts {
			v, err := strconv.ParseUint(p, 16, 8)
			if err != nil || len(p) != 1 {
				return netip.Addr{}, false
			}
			pos := 31 - i
			if pos%2 == 0 {
				b[pos/2] |= byte(v) << 4
			} else {
				b[pos/2] |= byte(v)
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}
