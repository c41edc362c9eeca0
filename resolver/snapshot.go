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
//
// A snapshot is either built from scratch (buildSnapshot) or derived from the
// previous one with only the changed containers redone (update), sharing
// everything else. Both give the same answers; the equivalence test holds
// them to it.
type snapshot struct {
	topo       Topology
	ords       []uint64 // per topo.Containers: keys that sort in container order (see update)
	opts       Options
	domain     string // lower-cased zone without the trailing dot, e.g. "docker"
	zoneSuffix string // "." + domain, for suffix checks on the query path

	// tables are the networks by slot. Queriers and addresses refer to a
	// network by slot, so a changed table is replaced in this slice alone.
	tables  []*netTable
	slots   map[string]int32 // lower-cased network name -> slot
	all     []int32          // every slot in name order: the admin view
	addrs   layered[netip.Addr, []addrUse]
	subnets []netip.Prefix
	soaWire []byte // the SOA of negative answers, packed once

	names, containers int // table size, for metrics

	zone zoneTable // records that answer only under the zone (Container.Origin)
}

// netTable is one network's names.
type netTable struct {
	name     string                  // as Docker spells it
	lname    string                  // lower-cased
	names    layered[string, *rrset] // lower-cased name -> everything it means here
	services layered[string, *rrset] // "<service>.<project>" -> compose service members
	count    int                     // names in names
	// parents counts, for every proper ancestor by whole labels of a name
	// or service key ("b" of "a.b", "proj" of "web.proj"), the keys under
	// it: inside the zone such a name is an empty non-terminal (RFC 8020).
	parents map[string]int32
	size    int // endpoints, for sizing names while building
}

// querier is a container and what it may see.
type querier struct {
	networks []int32 // slots of the container's networks, in Docker's order
	project  string
}

// addrUse is one endpoint that holds an address. The endpoints of an address
// are kept in container order: PTR answers from the first one the querier may
// see, and the last one decides who a query from the address comes from.
type addrUse struct {
	ord    uint64 // the container's order key
	sub    uint32 // endpoint index * 2 + family, for the order within a container
	slot   int32
	target string // "<container-name>.<network>."
	cl     *querier
}

// member is one container's endpoint on one network.
type member struct {
	id       string // container ID
	name     string // container name
	project  string
	ip4      netip.Addr
	ip6      netip.Addr
	ttl      uint32
	ports    []Port
	ord      uint64 // the container's order key
	ep       uint32 // endpoint index: one container can sit on a network twice
	running  bool   // StateRunning
	eligible bool   // running and healthy or without a healthcheck
	weight   uint16 // weightOf the container: 0 when drained
}

// rrset is everything one name means on one network.
type rrset struct {
	// answer is what queries get after health filtering; failOpen says it
	// holds ineligible containers because no eligible one remained.
	answer    []*member
	failOpen  bool
	sched     []uint16          // schedule of answer by weight; nil for plain rotation
	byProject map[string]*rrset // compose project -> that project's subset
	next      atomic.Uint32     // round-robin cursor
	local     int               // zone sets: answer[:local] are this host's, rotated apart (see at)
	all       []*member         // every container, whatever its state, in container order
}

// ordStep spaces the order keys of a fresh build, leaving room for about 32
// insertions at one place before update gives up and a build renumbers.
const ordStep = 1 << 32

// buildSnapshot builds the table from t. It sizes its maps from a first pass
// and carves members, rrsets and small slices out of a few large arrays
// instead of allocating each one.
func buildSnapshot(t Topology, o Options) *snapshot {
	s := &snapshot{
		topo:       t,
		opts:       o,
		domain:     strings.TrimSuffix(o.Domain, "."), // withDefaults lower-cased it
		zoneSuffix: "." + strings.TrimSuffix(o.Domain, "."),
		slots:      make(map[string]int32, len(t.Networks)),
	}
	for _, n := range t.Networks {
		s.table(n.Name)
	}
	s.subnets = subnetsOf(t.Networks)

	// First pass: counts, so every map and array below is allocated once.
	var neps, naddrs, maxNames int
	for i := range t.Containers {
		c := &t.Containers[i]
		if c.Origin != "" {
			continue // buildZone
		}
		for j := range c.Endpoints {
			ep := &c.Endpoints[j]
			s.tables[s.table(ep.NetworkName)].size++
			neps++
			if ep.IPv4.IsValid() {
				naddrs++
			}
			if ep.IPv6.IsValid() {
				naddrs++
			}
			maxNames += 3 + len(ep.Aliases) + len(c.Names)
		}
	}
	s.ords = make([]uint64, len(t.Containers))
	s.addrs.base = make(map[netip.Addr][]addrUse, naddrs)
	members := make([]member, neps)
	sets := make([]rrset, 0, maxNames)
	setMembers := make([]*member, maxNames)
	queriers := make([]querier, len(t.Containers))
	querierNets := make([]int32, neps)
	uses := make([]addrUse, naddrs)
	newSet := func(m *member) *rrset {
		// The first member goes in a one-slot window of setMembers; a
		// second append copies out, leaving the neighbours untouched.
		sets = append(sets, rrset{all: setMembers[:1:1]})
		setMembers = setMembers[1:]
		rs := &sets[len(sets)-1]
		rs.all[0] = m
		return rs
	}

	var names, svcKeys []string // reused for each endpoint and container
	for i := range t.Containers {
		c := &t.Containers[i]
		ord := uint64(i+1) * ordStep
		s.ords[i] = ord
		if c.Origin != "" {
			continue // buildZone
		}
		cl := &queriers[i]
		cl.project = c.Project
		cl.networks = querierNets[:0:len(c.Endpoints)]
		querierNets = querierNets[len(c.Endpoints):]
		svcKeys = serviceKeys(svcKeys[:0], c)
		for j, ep := range c.Endpoints {
			slot := s.slots[strings.ToLower(ep.NetworkName)]
			nt := s.tables[slot]
			if nt.names.base == nil {
				nt.names.base = make(map[string]*rrset, 3*nt.size)
			}
			m := &members[0]
			members = members[1:]
			newMember(m, c, j, ord, o)
			names = containerNames(names[:0], c, ep)
			for _, name := range names {
				if rs := nt.names.base[name]; rs != nil {
					rs.all = append(rs.all, m)
					continue
				}
				nt.names.base[name] = newSet(m)
				nt.keyChanged(name, true, 1)
				s.names++
			}
			for _, key := range svcKeys {
				if rs := nt.services.base[key]; rs != nil {
					rs.all = append(rs.all, m)
				} else {
					if nt.services.base == nil {
						nt.services.base = make(map[string]*rrset)
					}
					nt.services.base[key] = &rrset{all: []*member{m}}
					nt.keyChanged(key, false, 1)
				}
			}
			cl.networks = append(cl.networks, slot)
			target := c.Name + "." + ep.NetworkName + "."
			for f, a := range [2]netip.Addr{ep.IPv4, ep.IPv6} {
				if !a.IsValid() {
					continue
				}
				u := addrUse{ord: ord, sub: uint32(2*j + f), slot: slot, target: target, cl: cl}
				if prev, ok := s.addrs.base[a]; ok {
					s.addrs.base[a] = append(prev, u)
					continue
				}
				uses[0] = u
				s.addrs.base[a] = uses[:1:1]
				uses = uses[1:]
			}
		}
		s.containers++
	}
	for _, nt := range s.tables {
		// Queries read these maps without nil checks on the table itself;
		// a nil map reads as empty, so only writers above need them made.
		for _, rs := range nt.names.base {
			rs.finish(o.StrictHealth)
		}
		for _, rs := range nt.services.base {
			rs.finish(o.StrictHealth)
		}
	}
	s.buildZone(o)
	s.sortSlots()
	s.soaWire = s.packSOA()
	return s
}

// keyChanged accounts for a key that came (up 1) or went (up -1): a name,
// which count counts, or a service key. Only builders call it, on a table
// not yet published (an update gives the table its own parents first).
func (nt *netTable) keyChanged(key string, name bool, up int32) {
	if name {
		nt.count += int(up)
	}
	for i := strings.IndexByte(key, '.'); i >= 0; i = nextDot(key, i) {
		p := key[i+1:]
		if nt.parents == nil {
			nt.parents = make(map[string]int32)
		}
		if nt.parents[p] += up; nt.parents[p] <= 0 {
			delete(nt.parents, p)
		}
	}
}

// newMember fills m for endpoint j of c.
func newMember(m *member, c *Container, j int, ord uint64, o Options) {
	ep := &c.Endpoints[j]
	*m = member{
		id: c.ID, name: c.Name, project: c.Project, ip4: ep.IPv4, ip6: ep.IPv6,
		ttl: o.TTL, ports: c.Ports, ord: ord, ep: uint32(j),
		running:  c.State == StateRunning,
		eligible: c.State == StateRunning && (c.Health == HealthNone || c.Health == HealthHealthy),
		weight:   weightOf(c),
	}
	if c.TTL > 0 {
		m.ttl = c.TTL
	}
}

// serviceKey is c's "<service>.<project>" zone name, or "" outside compose.
func serviceKey(c *Container) string {
	if c.Service == "" || c.Project == "" {
		return ""
	}
	return strings.ToLower(c.Service + "." + c.Project)
}

func subnetsOf(networks []Network) []netip.Prefix {
	var out []netip.Prefix
	for _, n := range networks {
		out = append(out, n.Subnets...)
	}
	return out
}

// sortSlots sets the admin view: every network, in name order.
func (s *snapshot) sortSlots() {
	s.all = make([]int32, 0, len(s.slots))
	for _, name := range slices.Sorted(maps.Keys(s.slots)) {
		s.all = append(s.all, s.slots[name])
	}
}

// table returns the slot of the network called name, adding a table for it
// when there is none. Only builders call it, on a snapshot not yet published.
func (s *snapshot) table(name string) int32 {
	key := strings.ToLower(name)
	slot, ok := s.slots[key]
	if !ok {
		slot = int32(len(s.tables))
		s.tables = append(s.tables, &netTable{name: name, lname: key})
		s.slots[key] = slot
	}
	return slot
}

// finish applies the health policy and splits the set by compose project.
func (rs *rrset) finish(strict bool) {
	rs.answer, rs.failOpen = pickWeighted(rs.all, strict)
	rs.sched = schedule(rs.answer)
	if !mixedProjects(rs.all) {
		return // no subset would differ from the whole set
	}
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
		sub.answer, sub.failOpen = pickWeighted(ms, strict)
		sub.sched = schedule(sub.answer)
		if rs.byProject == nil {
			rs.byProject = make(map[string]*rrset)
		}
		rs.byProject[p] = sub
	}
}

// mixedProjects reports whether some project holds only part of ms: a
// member with another project, or with none, next to one with a project.
func mixedProjects(ms []*member) bool {
	if len(ms) < 2 {
		return false
	}
	for _, m := range ms[1:] {
		if m.project != ms[0].project {
			return true
		}
	}
	return false
}

// pickAnswer returns the eligible members, or, when none is eligible, every
// running member (fail open) unless strict is set. The answer shares all's
// array when every member is eligible: both are read-only once built.
func pickAnswer(all []*member, strict bool) ([]*member, bool) {
	var nok, nrun int
	for _, m := range all {
		if m.eligible {
			nok++
		}
		if m.running {
			nrun++
		}
	}
	if nok == len(all) {
		return all, false
	}
	if nok > 0 || strict || nrun == 0 {
		return filter(all, nok, func(m *member) bool { return m.eligible }), false
	}
	return filter(all, nrun, func(m *member) bool { return m.running }), true
}

func filter(all []*member, n int, keep func(*member) bool) []*member {
	if n == 0 {
		return nil
	}
	out := make([]*member, 0, n)
	for _, m := range all {
		if keep(m) {
			out = append(out, m)
		}
	}
	return out
}

// containerNames appends to names the names an endpoint registers,
// lower-cased and without duplicates, in Docker's order: container name, aliases and DNSNames, short ID, hostname.
func containerNames(names []string, c *Container, ep Endpoint) []string {
	names = addName(names, c.Name)
	for _, a := range ep.Aliases {
		names = addName(names, a)
	}
	if len(c.ID) >= 12 {
		names = addName(names, c.ID[:12])
	}
	names = addName(names, c.Hostname)
	for _, n := range c.Names {
		names = addName(names, n)
	}
	return names
}

func addName(names []string, n string) []string {
	n = strings.ToLower(strings.TrimSuffix(n, "."))
	if n != "" && !slices.Contains(names, n) {
		names = append(names, n)
	}
	return names
}

// EqualTopology reports whether a and b are equal as reflect.DeepEqual
// would say (a nil slice differs from an empty one), without reflection:
// publishers call it on every change to skip unchanged tables.
func EqualTopology(a, b Topology) bool {
	if !equalNetworks(a.Networks, b.Networks) || !nilness(a.Containers, b.Containers) {
		return false
	}
	if sameArray(a.Containers, b.Containers) {
		return true
	}
	if len(a.Containers) != len(b.Containers) {
		return false
	}
	for i := range a.Containers {
		if !EqualContainer(&a.Containers[i], &b.Containers[i]) {
			return false
		}
	}
	return true
}

// EqualContainer is EqualTopology for one container.
func EqualContainer(a, b *Container) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Hostname == b.Hostname && a.Project == b.Project &&
		a.Service == b.Service && a.Health == b.Health && a.State == b.State && a.TTL == b.TTL &&
		a.Weight == b.Weight && a.Drained == b.Drained && equalSlice(a.Tags, b.Tags) &&
		equalSlice(a.Names, b.Names) && equalSlice(a.Ports, b.Ports) &&
		nilness(a.Endpoints, b.Endpoints) && (sameArray(a.Endpoints, b.Endpoints) || slices.EqualFunc(a.Endpoints, b.Endpoints, equalEndpoint)) &&
		equalSlice(a.Published, b.Published) && a.Origin == b.Origin
}

func equalNetworks(a, b []Network) bool {
	return nilness(a, b) && (sameArray(a, b) || slices.EqualFunc(a, b, equalNetwork))
}

func equalEndpoint(a, b Endpoint) bool {
	return a.NetworkID == b.NetworkID && a.NetworkName == b.NetworkName && a.IPv4 == b.IPv4 && a.IPv6 == b.IPv6 &&
		equalSlice(a.Aliases, b.Aliases)
}

func equalNetwork(a, b Network) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Internal == b.Internal && equalSlice(a.Subnets, b.Subnets) && a.Spans == b.Spans
}

func equalSlice[T comparable](a, b []T) bool {
	return nilness(a, b) && (sameArray(a, b) || slices.Equal(a, b))
}

// sameArray reports whether a and b are the same elements of one array: a
// copied container shares its slices with the original, and comparing them
// element by element is most of the cost of a publish.
func sameArray[T any](a, b []T) bool { return len(a) == len(b) && len(a) > 0 && &a[0] == &b[0] }

// nilness reports whether a and b are both nil or both non-nil.
func nilness[T any](a, b []T) bool { return (a == nil) == (b == nil) }

// view is the list of networks a source may see, by slot.
func (s *snapshot) view(src netip.Addr) (nets []int32, project string) {
	if cl := s.querier(src.Unmap()); cl != nil {
		return cl.networks, cl.project
	}
	return s.all, ""
}

// querier is the container that holds address a; when several do, the last
// one in container order.
func (s *snapshot) querier(a netip.Addr) *querier {
	if us := s.addrs.get(a); len(us) > 0 {
		return us[len(us)-1].cl
	}
	return nil
}

// lookup finds name (lower-cased, no trailing dot) in the view: whole on each
// network in order, then "a.b" on network "c", then "a" on network "b.c".
// The first network that knows the name supplies all the addresses.
func (s *snapshot) lookup(nets []int32, name string) *rrset {
	for _, slot := range nets {
		if rs := s.tables[slot].names.get(name); rs != nil {
			return rs
		}
	}
	for i := strings.LastIndexByte(name, '.'); i > 0; i = strings.LastIndexByte(name[:i], '.') {
		if nt := s.findNet(nets, name[i+1:]); nt != nil {
			if rs := nt.names.get(name[:i]); rs != nil {
				return rs
			}
		}
	}
	return nil
}

// lookupService finds "<service>.<project>" in the view.
func (s *snapshot) lookupService(nets []int32, name string) *rrset {
	for _, slot := range nets {
		if rs := s.tables[slot].services.get(name); rs != nil {
			return rs
		}
	}
	return nil
}

func (s *snapshot) findNet(nets []int32, lname string) *netTable {
	if slot, ok := s.slots[lname]; ok && slices.Contains(nets, slot) {
		return s.tables[slot]
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
