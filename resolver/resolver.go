package resolver

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
)

// Options configure a Resolver. The zero value of a field means its default.
type Options struct {
	TTL          uint32 // local answer TTL in seconds; default 5
	Domain       string // authoritative zone; default "docker."
	StrictHealth bool   // NODATA instead of failing open when no eligible container remains
	// NSAddrs are the server's own addresses: ns.<zone>, which the apex NS
	// record names, resolves to them. Unspecified addresses (a wildcard
	// listen address) name no server and are left out.
	NSAddrs []netip.Addr
}

// Defaults of Options, exported for the flags that set them.
const (
	// DefaultTTL is short so that health changes reach clients quickly
	// (Docker's fixed 600 s defeats health filtering).
	DefaultTTL    = 5
	DefaultDomain = "docker."
)

func (o Options) withDefaults() Options {
	if o.TTL == 0 {
		o.TTL = DefaultTTL
	}
	if o.Domain == "" {
		o.Domain = DefaultDomain
	}
	o.Domain = dns.Fqdn(strings.ToLower(o.Domain))
	var ns []netip.Addr
	for _, a := range o.NSAddrs {
		if a = a.Unmap(); a.IsValid() && !a.IsUnspecified() && !slices.Contains(ns, a) {
			ns = append(ns, a)
		}
	}
	o.NSAddrs = ns
	return o
}

// Stats are counters the ops surface exports.
type Stats struct {
	FailOpen  atomic.Uint64 // answers that fell back to unhealthy containers
	Publishes atomic.Uint64 // snapshots swapped in
}

// Resolver answers queries from the latest published snapshot. The query path
// takes no lock: Publish builds a new snapshot aside and swaps a pointer.
type Resolver struct {
	mu    sync.Mutex // serialises Publish and SetOptions, never held by queries
	snap  atomic.Pointer[snapshot]
	Stats Stats
}

// New returns a Resolver with an empty table.
func New(opts Options) *Resolver {
	r := &Resolver{}
	r.snap.Store(buildSnapshot(Topology{}, opts.withDefaults()))
	return r
}

// Publish builds a snapshot from t and makes it the one queries read. It
// keeps the current snapshot, and its round-robin cursors, when nothing changed.
// A small change (a container event) redoes only the containers it touches,
// matched by ID against the current topology, and shares the rest of the
// table with the current snapshot.
func (r *Resolver) Publish(t Topology) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.snap.Load()
	s, same := cur.update(t)
	if same {
		return
	}
	if s == nil {
		s = buildSnapshot(t, cur.opts)
	}
	r.snap.Store(s)
	r.Stats.Publishes.Add(1)
}

// SetOptions rebuilds the table with new options (a SIGHUP reload).
func (r *Resolver) SetOptions(opts Options) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snap.Store(buildSnapshot(r.snap.Load().topo, opts.withDefaults()))
	r.Stats.Publishes.Add(1)
}

// Size returns the number of names and containers in the table.
func (r *Resolver) Size() (names, containers int) {
	s := r.snap.Load()
	return s.names, s.containers
}

// IsLocalSource reports whether src is a container address or inside a subnet
// of a known network; the default allow list admits these.
func (r *Resolver) IsLocalSource(src netip.Addr) bool {
	s := r.snap.Load()
	src = src.Unmap()
	if s.querier(src) != nil {
		return true
	}
	for _, p := range s.subnets {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// start returns where this answer begins in the set: one further along each
// call, so load spreads evenly across replicas.
func (rs *rrset) start() int {
	if len(rs.answer) < 2 {
		return 0
	}
	return rs.first(rs.next.Add(1) - 1)
}

func minTTL(ms []*member) uint32 {
	var ttl uint32
	for i, m := range ms {
		if i == 0 || m.ttl < ttl {
			ttl = m.ttl
		}
	}
	return ttl
}

// splitSRV splits "_<service>._<proto>.<name>".
func splitSRV(name string) (service, proto, base string, ok bool) {
	first, rest, ok1 := strings.Cut(name, ".")
	second, base, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || len(first) < 2 || len(second) < 2 || first[0] != '_' || second[0] != '_' {
		return "", "", "", false
	}
	return first[1:], second[1:], base, true
}

// srvMatch matches a port against "_8080._tcp" (an exposed port) or
// "_http._tcp" (a port named by a sidedns.srv.http label).
func srvMatch(p Port, service, proto string) bool {
	if !strings.EqualFold(p.Proto, proto) {
		return false
	}
	if p.Name != "" && strings.EqualFold(p.Name, service) {
		return true
	}
	n, ok := parsePort(service)
	return ok && p.Name == "" && n == p.Port
}

// parsePort reads a decimal port number; strconv would allocate its error
// on the query path for every named service.
func parsePort(s string) (uint16, bool) {
	if len(s) == 0 || len(s) > 5 {
		return 0, false
	}
	var n uint32
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint32(c-'0')
	}
	return uint16(n), n <= 0xffff
}
