package resolver

import (
	"cmp"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strings"
)

// Container order keys. Answers list a name's containers in topology order,
// so every member carries its container's order key (ord). A build numbers
// containers ordStep apart; update keeps the keys of containers that stay in
// place and gives an inserted container a key between its neighbours'. That
// way an unchanged container's members never need rewriting when others come
// and go around it.

// maxUpdateShare bounds an incremental update: past 1/maxUpdateShare of the
// table (plus a floor) changed, a full build costs about the same and starts
// the layered maps afresh.
const maxUpdateShare = 4

// update returns a snapshot for t that shares with s everything the changes
// between s.topo and t leave alone, or nil when t is better built afresh (too
// many changes, or no room left between order keys). Containers are matched
// by ID; a matched container that differs, or that moved relative to the
// others, is redone as a removal and an addition. same reports that t equals
// s.topo (as EqualTopology says); then s itself is returned.
func (s *snapshot) update(t Topology) (n *snapshot, same bool) {
	if s.zone.used() || hasOrigin(t) {
		return s.zoneUpdate(t) // zone records: a full build
	}
	old, cur := s.topo.Containers, t.Containers
	limit := 64 + max(len(old), len(cur))/maxUpdateShare

	// The common prefix and suffix by ID keep their places and keys.
	p := 0
	for p < len(old) && p < len(cur) && old[p].ID == cur[p].ID {
		p++
	}
	q := 0
	for q < len(old)-p && q < len(cur)-p && old[len(old)-1-q].ID == cur[len(cur)-1-q].ID {
		q++
	}
	oldMid, curMid := old[p:len(old)-q], cur[p:len(cur)-q]
	if len(oldMid)+len(curMid) > limit {
		return nil, false
	}

	u := &updater{
		s:     s,
		n:     s.clone(t),
		edits: make(map[editKey]*edit),
		addrs: make(map[netip.Addr]*addrEdit),
	}
	ords := u.n.ords
	copy(ords, s.ords[:p])
	copy(ords[len(cur)-q:], s.ords[len(old)-q:])

	// The middle: match by ID, keep a match's key while keys still rise
	// (a greedy increasing run), and give every other container a new key.
	byID := make(map[string]int, len(oldMid))
	for i := range oldMid {
		byID[oldMid[i].ID] = i
	}
	kept := make([]bool, len(oldMid))
	match := make([]int, len(curMid)) // index into oldMid, or -1
	last := uint64(0)
	if p > 0 {
		last = ords[p-1]
	}
	for j := range curMid {
		match[j] = -1
		if i, ok := byID[curMid[j].ID]; ok && !kept[i] && s.ords[p+i] > last {
			kept[i], match[j] = true, i
			last = s.ords[p+i]
			ords[p+j] = last
		}
	}
	for j := 0; j < len(curMid); {
		if match[j] >= 0 {
			j++
			continue
		}
		k := j // curMid[j:k] get new keys between lo and hi
		for k < len(curMid) && match[k] < 0 {
			k++
		}
		lo, hi := uint64(0), uint64(math.MaxUint64)
		if p+j > 0 {
			lo = ords[p+j-1]
		}
		if p+k < len(cur) {
			hi = ords[p+k]
		}
		step := (hi - lo) / uint64(k-j+1)
		if step == 0 {
			return nil, false
		}
		for i := j; i < k; i++ {
			ords[p+i] = lo + step*uint64(i-j+1)
		}
		j = k
	}

	// The changes: removals first, so that a container redone in place
	// (same key) loses its old members before it gains the new ones.
	type pair struct{ o, c int } // indices into old and cur
	var redo []pair
	for i := 0; i < p; i++ {
		if !EqualContainer(&old[i], &cur[i]) {
			redo = append(redo, pair{i, i})
		}
	}
	for j := range curMid {
		if i := match[j]; i >= 0 && !EqualContainer(&oldMid[i], &curMid[j]) {
			redo = append(redo, pair{p + i, p + j})
		}
	}
	for i := 0; i < q; i++ {
		if oi, ci := len(old)-1-i, len(cur)-1-i; !EqualContainer(&old[oi], &cur[ci]) {
			redo = append(redo, pair{oi, ci})
		}
	}
	if len(redo) == 0 && len(oldMid) == 0 && len(curMid) == 0 && nilness(old, cur) &&
		equalNetworks(s.topo.Networks, t.Networks) {
		return s, true
	}
	if 2*len(redo)+len(oldMid)+len(curMid) > limit {
		return nil, false
	}
	for i := range oldMid {
		if !kept[i] {
			u.remove(&oldMid[i], s.ords[p+i])
		}
	}
	for _, r := range redo {
		u.remove(&old[r.o], s.ords[r.o])
	}
	for j := range curMid {
		if match[j] < 0 {
			u.add(&curMid[j], ords[p+j])
		}
	}
	for _, r := range redo {
		u.add(&cur[r.c], ords[r.c])
	}
	u.apply()
	return u.n, false
}

// clone starts the snapshot for t from s: the tables and maps are shared
// until the updater copies the ones it writes.
func (s *snapshot) clone(t Topology) *snapshot {
	n := &snapshot{
		topo:       t,
		ords:       make([]uint64, len(t.Containers)),
		opts:       s.opts,
		domain:     s.domain,
		zoneSuffix: s.zoneSuffix,
		tables:     slices.Clone(s.tables),
		slots:      s.slots,
		all:        s.all,
		addrs:      s.addrs,
		subnets:    s.subnets,
		soaWire:    s.soaWire,
		names:      s.names,
		containers: len(t.Containers),
	}
	if !equalNetworks(s.topo.Networks, t.Networks) {
		n.subnets = subnetsOf(t.Networks)
		for _, nw := range t.Networks {
			if _, ok := n.slots[strings.ToLower(nw.Name)]; !ok {
				n.addTable(nw.Name)
			}
		}
	}
	return n
}

// addTable adds an empty table for a network the snapshot has not seen. A
// table, once added, stays: an empty one answers nothing, as a missing one.
func (n *snapshot) addTable(name string) int32 {
	n.slots = maps.Clone(n.slots)
	slot := int32(len(n.tables))
	n.tables = append(n.tables, &netTable{name: name, lname: strings.ToLower(name)})
	n.slots[strings.ToLower(name)] = slot
	n.sortSlots()
	return slot
}

// updater collects the per-name and per-address edits of one update, so that
// each rrset and address list is rebuilt once however many containers touch it.
type updater struct {
	s, n  *snapshot
	edits map[editKey]*edit
	addrs map[netip.Addr]*addrEdit
}

type editKey struct {
	slot    int32
	service bool // in services rather than names
	name    string
}

// edit drops the members of the containers with the given keys and adds new
// members.
type edit struct {
	drop []uint64
	add  []*member
}

type addrEdit struct {
	drop []uint64
	add  []addrUse
}

func (u *updater) edit(k editKey) *edit {
	e := u.edits[k]
	if e == nil {
		e = &edit{}
		u.edits[k] = e
	}
	return e
}

func (u *updater) addrEdit(a netip.Addr) *addrEdit {
	e := u.addrs[a]
	if e == nil {
		e = &addrEdit{}
		u.addrs[a] = e
	}
	return e
}

// remove drops container c, which had key ord, from every name and address
// it registered.
func (u *updater) remove(c *Container, ord uint64) {
	var names []string
	svcKeys := serviceKeys(nil, c)
	for _, ep := range c.Endpoints {
		slot := u.n.slots[strings.ToLower(ep.NetworkName)] // the table exists: c was in it
		names = containerNames(names[:0], c, ep)
		for _, name := range names {
			e := u.edit(editKey{slot: slot, name: name})
			e.drop = append(e.drop, ord)
		}
		for _, key := range svcKeys {
			e := u.edit(editKey{slot: slot, service: true, name: key})
			e.drop = append(e.drop, ord)
		}
		for _, a := range [2]netip.Addr{ep.IPv4, ep.IPv6} {
			if a.IsValid() {
				e := u.addrEdit(a)
				e.drop = append(e.drop, ord)
			}
		}
	}
}

// add registers container c with key ord, as buildSnapshot would.
func (u *updater) add(c *Container, ord uint64) {
	var names []string
	svcKeys := serviceKeys(nil, c)
	cl := &querier{networks: make([]int32, 0, len(c.Endpoints)), project: c.Project}
	members := make([]member, len(c.Endpoints))
	for j, ep := range c.Endpoints {
		slot, ok := u.n.slots[strings.ToLower(ep.NetworkName)]
		if !ok {
			slot = u.n.addTable(ep.NetworkName)
		}
		m := &members[j]
		newMember(m, c, j, ord, u.n.opts)
		names = containerNames(names[:0], c, ep)
		for _, name := range names {
			e := u.edit(editKey{slot: slot, name: name})
			e.add = append(e.add, m)
		}
		for _, key := range svcKeys {
			e := u.edit(editKey{slot: slot, service: true, name: key})
			e.add = append(e.add, m)
		}
		cl.networks = append(cl.networks, slot)
		target := c.Name + "." + ep.NetworkName + "."
		for f, a := range [2]netip.Addr{ep.IPv4, ep.IPv6} {
			if a.IsValid() {
				e := u.addrEdit(a)
				e.add = append(e.add, addrUse{ord: ord, sub: uint32(2*j + f), slot: slot, target: target, cl: cl})
			}
		}
	}
}

// apply rebuilds every edited rrset and address list on copies of the
// tables and maps they live in.
func (u *updater) apply() {
	n := u.n
	thawed := make(map[int32]bool)
	for k, e := range u.edits {
		if !thawed[k.slot] {
			nt := *n.tables[k.slot]
			nt.names.thaw()
			nt.services.thaw()
			nt.parents = maps.Clone(nt.parents)
			n.tables[k.slot] = &nt
			thawed[k.slot] = true
		}
		nt := n.tables[k.slot]
		m := &nt.names
		if k.service {
			m = &nt.services
		}
		prev := m.get(k.name)
		var all []*member
		if prev != nil {
			all = prev.all
		}
		all = merge(all, e.drop, e.add, func(m *member) uint64 { return m.ord }, func(a, b *member) int {
			return cmp.Or(cmp.Compare(a.ord, b.ord), cmp.Compare(a.ep, b.ep))
		})
		switch {
		case len(all) == 0 && prev != nil:
			m.del(k.name)
			nt.keyChanged(k.name, !k.service, -1)
			if !k.service {
				n.names--
			}
		case len(all) > 0:
			rs := &rrset{all: all}
			rs.finish(n.opts.StrictHealth)
			m.set(k.name, rs)
			if prev == nil {
				nt.keyChanged(k.name, !k.service, 1)
				if !k.service {
					n.names++
				}
			}
		}
	}
	for slot := range thawed {
		n.tables[slot].names.settle()
		n.tables[slot].services.settle()
	}
	if len(u.addrs) > 0 {
		n.addrs.thaw()
		for a, e := range u.addrs {
			us := merge(n.addrs.get(a), e.drop, e.add, func(u addrUse) uint64 { return u.ord }, func(x, y addrUse) int {
				return cmp.Or(cmp.Compare(x.ord, y.ord), cmp.Compare(x.sub, y.sub))
			})
			if len(us) == 0 {
				n.addrs.del(a)
			} else {
				n.addrs.set(a, us)
			}
		}
		n.addrs.settle()
	}
}

// merge returns a new list: the items of sorted list old whose key is not in
// drop, and add, in order. old is shared with the previous snapshot and left
// as it is.
func merge[T any](old []T, drop []uint64, add []T, key func(T) uint64, order func(a, b T) int) []T {
	out := make([]T, 0, len(old)+len(add))
	for _, x := range old {
		if !slices.Contains(drop, key(x)) {
			out = append(out, x)
		}
	}
	out = append(out, add...)
	slices.SortStableFunc(out, order)
	return out
}
