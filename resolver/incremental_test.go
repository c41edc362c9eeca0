package resolver

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/sidedns/sidedns/dnswire"
)

// randTopo makes random topologies small enough that names, addresses,
// projects and networks collide often: the cases where order and
// first-match rules decide the answer.
type randTopo struct {
	rng  *rand.Rand
	seq  int
	nets []string
}

func (g *randTopo) pick(xs ...string) string { return xs[g.rng.IntN(len(xs))] }

func (g *randTopo) container() Container {
	g.seq++
	r := g.rng
	c := Container{
		ID:       id(fmt.Sprintf("%06x", g.seq)),
		Name:     g.pick("a", "b", "c", "d", "e", "f", "g", "h") + fmt.Sprint(r.IntN(4)),
		Hostname: g.pick("", "host1", "HOST2", "a1"),
		Health:   Health(r.IntN(4)),
		State:    State(r.IntN(4)),
	}
	if r.IntN(3) == 0 {
		c.State = StateRunning // mostly running
	}
	if r.IntN(2) == 0 {
		c.Project, c.Service = g.pick("p1", "p2", "p3"), g.pick("web", "db")
	}
	if r.IntN(4) == 0 {
		c.TTL = uint32(r.IntN(3) * 30)
	}
	if r.IntN(4) == 0 {
		c.Names = []string{g.pick("x", "y.z", "Web")}
	}
	if r.IntN(3) == 0 {
		c.Ports = []Port{{Port: 80, Proto: "tcp"}, {Name: "http", Port: 8080, Proto: g.pick("tcp", "udp")}}
	}
	if r.IntN(3) == 0 {
		c.Weight, c.Drained = uint16(r.IntN(3)*400), r.IntN(4) == 0
	}
	if r.IntN(4) == 0 {
		c.Tags = []string{g.pick("canary", "v2"), g.pick("v2", "Web")}
	}
	for range r.IntN(4) {
		e := Endpoint{NetworkName: g.nets[r.IntN(len(g.nets))]}
		e.NetworkID = "id-" + strings.ToLower(e.NetworkName)
		if r.IntN(2) == 0 {
			e.Aliases = append(e.Aliases, c.Service)
		}
		if r.IntN(3) == 0 {
			e.Aliases = append(e.Aliases, g.pick("web", "db", "x", "a0"))
		}
		if r.IntN(8) != 0 {
			e.IPv4 = netip.AddrFrom4([4]byte{10, 0, 0, byte(1 + r.IntN(40))})
		}
		if r.IntN(4) == 0 {
			e.IPv6 = netip.AddrFrom16([16]byte{0: 0xfd, 15: byte(1 + r.IntN(40))})
		}
		c.Endpoints = append(c.Endpoints, e)
	}
	return c
}

func (g *randTopo) networks() []Network {
	var out []Network
	for i, n := range g.nets {
		if g.rng.IntN(5) == 0 {
			continue // a network some containers name but Docker no longer lists
		}
		out = append(out, Network{ID: "id-" + strings.ToLower(n), Name: n,
			Subnets: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16)}})
	}
	return out
}

// mutate returns t with a random event applied, on a new slice as the
// watcher publishes it.
func (g *randTopo) mutate(t Topology) Topology {
	cs := slices.Clone(t.Containers)
	r := g.rng
	switch op := r.IntN(10); {
	case op < 3 || len(cs) == 0: // start
		cs = slices.Insert(cs, r.IntN(len(cs)+1), g.container())
	case op < 5: // remove
		i := r.IntN(len(cs))
		cs = slices.Delete(cs, i, i+1)
	case op < 7: // health or state change in place
		i := r.IntN(len(cs))
		cs[i].Health, cs[i].State = Health(r.IntN(4)), State(r.IntN(4))
	case op < 8: // the same container, redone (endpoints, names)
		i := r.IntN(len(cs))
		c := g.container()
		c.ID = cs[i].ID
		cs[i] = c
	case op < 9: // a container moves (renamed, so sorted elsewhere)
		i, j := r.IntN(len(cs)), r.IntN(len(cs))
		c := cs[i]
		cs = slices.Insert(slices.Delete(cs, i, i+1), j, c)
	default: // a burst: several at once, or a network change
		for range 1 + r.IntN(4) {
			cs = slices.Insert(cs, r.IntN(len(cs)+1), g.container())
		}
		if r.IntN(2) == 0 {
			i := r.IntN(len(cs))
			cs = slices.Delete(cs, i, i+1)
		}
		return Topology{Networks: g.networks(), Containers: cs}
	}
	return Topology{Networks: t.Networks, Containers: cs}
}

// After any sequence of incremental updates, a snapshot must answer exactly
// like one built from scratch for the same topology.
func TestUpdateAnswersLikeBuild(t *testing.T) {
	for _, strict := range []bool{false, true} {
		for seed := range uint64(2) {
			t.Run(fmt.Sprintf("strict=%v/seed=%d", strict, seed), func(t *testing.T) {
				g := &randTopo{rng: rand.New(rand.NewPCG(seed, 7)), nets: []string{"n0", "N1", "n2", "shared.net"}}
				opts := Options{StrictHealth: strict}.withDefaults()
				var top Topology
				top.Networks = g.networks()
				for range 12 {
					top.Containers = append(top.Containers, g.container())
				}
				inc := buildSnapshot(top, opts)
				var updates, builds int
				for step := range 40 {
					top = g.mutate(top)
					next, _ := inc.update(top)
					if next == nil {
						builds++
						next = buildSnapshot(top, opts)
					} else {
						updates++
					}
					inc = next
					compareSnapshots(t, fmt.Sprintf("step %d", step), inc, buildSnapshot(top, opts), top, g.rng)
				}
				if updates < 30 {
					t.Errorf("%d of %d publishes were incremental, want most", updates, updates+builds)
				}
			})
		}
	}
}

// compareSnapshots asks both snapshots every name the topology knows (and a
// few it does not), for the types that answer locally, from every container
// address and from an unknown source, and wants the same replies.
func compareSnapshots(t *testing.T, step string, got, want *snapshot, top Topology, rng *rand.Rand) {
	t.Helper()
	rGot, rWant := &Resolver{}, &Resolver{}
	rGot.snap.Store(got)
	rWant.snap.Store(want)
	// Both start their round-robin cursors at zero, so rotation must agree too.
	resetCursors(got)
	resetCursors(want)
	gn, gc := rGot.Size()
	if wn, wc := rWant.Size(); gn != wn || gc != wc {
		t.Fatalf("%s: size = %d names %d containers, want %d %d", step, gn, gc, wn, wc)
	}

	names := []string{"nope", "web.p1", "db.p2", "x", "y.z", "docker"}
	srcs := []netip.Addr{addr("127.0.0.1"), addr("10.0.0.99")}
	var ptrs []string
	for _, c := range top.Containers {
		names = append(names, c.Name, c.Hostname, c.ID[:12], c.Service+"."+c.Project, c.Project)
		names = append(names, c.Names...)
		for _, tag := range c.Tags {
			names = append(names, tag+"."+c.Name)
			if c.Service != "" {
				names = append(names, tag+"."+c.Service+"."+c.Project)
			}
		}
		for _, e := range c.Endpoints {
			names = append(names, c.Name+"."+e.NetworkName, c.ID[:12]+"."+strings.ToUpper(e.NetworkName), e.NetworkName)
			names = append(names, e.Aliases...)
			for _, a := range []netip.Addr{e.IPv4, e.IPv6} {
				if a.IsValid() {
					srcs = append(srcs, a)
					r, _ := dns.ReverseAddr(a.String())
					ptrs = append(ptrs, r)
				}
			}
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	// Every source would take long under -race; a random handful covers
	// the views over the run.
	rng.Shuffle(len(srcs), func(i, j int) { srcs[i], srcs[j] = srcs[j], srcs[i] })
	srcs = srcs[:min(len(srcs), 2)]
	for _, src := range append(srcs, addr("::ffff:10.0.0.1")) {
		if rGot.IsLocalSource(src) != rWant.IsLocalSource(src) {
			t.Errorf("%s: IsLocalSource(%v) differs", step, src)
		}
		for _, p := range append(ptrs, "1.0.0.10.in-addr.arpa.") {
			compareQuery(t, step, rGot, rWant, src, p, dns.TypePTR)
		}
		for _, n := range names {
			if n == "" || n == "." {
				continue
			}
			for _, qname := range []string{n + ".", n + ".docker.", "_http._tcp." + n + ".", "_80._tcp." + n + ".docker.", "_tcp." + n + ".docker."} {
				for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypeMX, dns.TypeTXT} {
					if strings.HasPrefix(qname, "_") != (qt == dns.TypeSRV) && !strings.HasPrefix(qname, "_tcp.") {
						continue
					}
					compareQuery(t, step, rGot, rWant, src, qname, qt)
				}
			}
		}
	}
}

func compareQuery(t *testing.T, step string, got, want *Resolver, src netip.Addr, qname string, qtype uint16) {
	t.Helper()
	req := new(dns.Msg)
	req.SetQuestion(qname, qtype)
	pkt, err := req.Pack()
	if err != nil {
		t.Fatal(err)
	}
	var q dnswire.Query
	if err := dnswire.Parse(pkt, &q); err != nil {
		t.Fatal(err)
	}
	g, gok := got.Answer(nil, &q, src)
	w, wok := want.Answer(nil, &q, src)
	if gok != wok || string(g) != string(w) {
		var gm, wm dns.Msg
		_, _ = gm.Unpack(g), wm.Unpack(w)
		t.Fatalf("%s: %s %s from %v:\nincremental (ours=%v):\n%v\nbuilt (ours=%v):\n%v",
			step, qname, dns.TypeToString[qtype], src, gok, &gm, wok, &wm)
	}
}

func resetCursors(s *snapshot) {
	var reset func(rs *rrset)
	reset = func(rs *rrset) {
		rs.next.Store(0)
		for _, sub := range rs.byProject {
			reset(sub)
		}
	}
	for _, nt := range s.tables {
		nt.names.each(func(_ string, rs *rrset) { reset(rs) })
		nt.services.each(func(_ string, rs *rrset) { reset(rs) })
	}
}

// The layered map must read like a plain map through sets, deletes and folds.
func TestLayeredMatchesMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[int]int{}
	var l layered[int, int]
	for round := range 200 {
		l.thaw()
		for range 1 + rng.IntN(20) {
			k := rng.IntN(300)
			if rng.IntN(3) == 0 {
				delete(want, k)
				l.del(k)
			} else {
				want[k] = round + 1
				l.set(k, round+1)
			}
		}
		l.settle()
		for k := range 300 {
			if got := l.get(k); got != want[k] {
				t.Fatalf("round %d: get(%d) = %d, want %d", round, k, got, want[k])
			}
		}
		n := 0
		l.each(func(k, v int) {
			n++
			if want[k] != v {
				t.Fatalf("round %d: each gave %d=%d, want %d", round, k, v, want[k])
			}
		})
		if n != len(want) {
			t.Fatalf("round %d: each gave %d entries, want %d", round, n, len(want))
		}
	}
}
