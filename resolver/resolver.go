package resolver

import (
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/sidedns/sidedns/dnswire"
)

// Options configure a Resolver. The zero value of a field means its default.
type Options struct {
	TTL          uint32 // local answer TTL in seconds; default 5
	Domain       string // authoritative zone; default "docker."
	StrictHealth bool   // NODATA instead of failing open when no eligible container remains
	Logger       *zap.Logger
}

func (o Options) withDefaults() Options {
	if o.TTL == 0 {
		o.TTL = 5
	}
	if o.Domain == "" {
		o.Domain = "docker."
	}
	o.Domain = dns.Fqdn(strings.ToLower(o.Domain))
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
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

// Topology returns the topology of the current snapshot. Callers must not
// modify it.
func (r *Resolver) Topology() Topology { return r.snap.Load().topo }

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

// Resolve answers req from the table for a client at src. ok is false when
// the name is not ours and the query must be forwarded.
//
// The order: PTR for a container address; then names inside the zone, which
// are always ours (NXDOMAIN with SOA when unknown); then Docker-compatible
// names, searched on the querier's networks (every network for an unknown
// source). A known name with no record of the asked type is NODATA, never
// NXDOMAIN and never a forward, because the name exists. Types Docker
// forwards for known names (TXT, CNAME, ...) are forwarded too.
//
// maxSize is the client's UDP size (512 without EDNS) or 65535 over TCP; a
// larger answer is truncated with TC set.
func (r *Resolver) Resolve(req *dns.Msg, src netip.Addr, maxSize int) (resp *dns.Msg, ok bool) {
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		return nil, false
	}
	q := req.Question[0]
	if q.Qclass != dns.ClassINET {
		return nil, false
	}
	s := r.snap.Load()
	name := strings.ToLower(strings.TrimSuffix(q.Name, "."))
	nets, project := s.view(src)

	addr, isPTR := netip.Addr{}, false
	if q.Qtype == dns.TypePTR {
		addr, isPTR = ptrName(name)
	}
	if isPTR {
		resp = s.answerPTR(req, nets, addr)
	} else if name == s.domain || strings.HasSuffix(name, s.zoneSuffix) {
		resp = r.answerZone(s, req, nets, project, name)
	} else {
		resp = r.answerName(s, req, nets, project, name, false)
	}
	if resp == nil {
		return nil, false
	}
	finish(req, resp, maxSize)
	return resp, true
}

func (s *snapshot) answerPTR(req *dns.Msg, nets []int32, addr netip.Addr) *dns.Msg {
	for _, pt := range s.addrs.get(addr) {
		for _, slot := range nets {
			if slot == pt.slot {
				resp := reply(req)
				resp.Answer = append(resp.Answer, &dns.PTR{
					Hdr: header(req.Question[0].Name, dns.TypePTR, s.opts.TTL),
					Ptr: pt.target,
				})
				return resp
			}
		}
	}
	return nil
}

// answerZone answers a name inside --domain: the apex, then <name>, then
// <service>.<project>, then <name>.<network> (through lookup's splitting).
func (r *Resolver) answerZone(s *snapshot, req *dns.Msg, nets []int32, project, name string) *dns.Msg {
	q := req.Question[0]
	if name == s.domain {
		resp := reply(req)
		switch q.Qtype {
		case dns.TypeSOA:
			resp.Answer = append(resp.Answer, s.soa())
		case dns.TypeNS:
			resp.Answer = append(resp.Answer, &dns.NS{Hdr: header(s.opts.Domain, dns.TypeNS, s.opts.TTL), Ns: "ns." + s.opts.Domain})
		default:
			resp.Ns = append(resp.Ns, s.soa())
		}
		return resp
	}
	rest := strings.TrimSuffix(name, "."+s.domain)
	if resp := r.answerName(s, req, nets, project, rest, true); resp != nil {
		return resp
	}
	resp := reply(req)
	resp.Rcode = dns.RcodeNameError
	resp.Ns = append(resp.Ns, s.soa())
	return resp
}

// answerName answers a Docker-compatible name (inZone: the part before the
// zone). It returns nil when the name is not ours.
func (r *Resolver) answerName(s *snapshot, req *dns.Msg, nets []int32, project, name string, inZone bool) *dns.Msg {
	q := req.Question[0]
	var srvService, srvProto string
	rs := s.lookup(nets, name)
	if rs == nil && inZone {
		rs = s.lookupService(nets, name)
	}
	if rs == nil && q.Qtype == dns.TypeSRV {
		if svc, proto, base, ok := splitSRV(name); ok {
			srvService, srvProto = svc, proto
			rs = s.lookup(nets, base)
			if rs == nil && inZone {
				rs = s.lookupService(nets, base)
			}
		}
	}
	if rs == nil {
		return nil
	}
	switch {
	case q.Qtype == dns.TypeSRV && srvService == "" && !inZone:
		return nil // SRV for a plain container name: Docker forwards it
	case !inZone && !answeredLocally(q.Qtype):
		return nil // Docker forwards the other types
	}
	rs = scoped(rs, project)
	if rs.failOpen {
		r.Stats.FailOpen.Add(1)
	}
	resp := reply(req)
	start, n := rs.start(), len(rs.answer)
	switch q.Qtype {
	case dns.TypeA, dns.TypeAAAA:
		ttl := minTTL(rs.answer)
		for i := range n {
			if rr := addrRecord(q.Name, q.Qtype, rs.answer[(start+i)%n], ttl); rr != nil {
				resp.Answer = append(resp.Answer, rr)
			}
		}
	case dns.TypeSRV:
		for i := range n {
			m := rs.answer[(start+i)%n]
			for _, p := range m.ports {
				if !srvMatch(p, srvService, srvProto) {
					continue
				}
				target := dns.Fqdn(m.name)
				if inZone {
					target = m.name + "." + s.opts.Domain
				}
				resp.Answer = append(resp.Answer, &dns.SRV{
					Hdr:  header(q.Name, dns.TypeSRV, m.ttl),
					Port: p.Port, Target: target,
				})
				for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
					if rr := addrRecord(target, t, m, m.ttl); rr != nil {
						resp.Extra = append(resp.Extra, rr)
					}
				}
			}
		}
	case dns.TypeANY:
		// RFC 8482: a minimal answer instead of everything we have.
		resp.Answer = append(resp.Answer, &dns.HINFO{Hdr: header(q.Name, dns.TypeHINFO, s.opts.TTL), Cpu: "RFC8482"})
	case dns.TypeMX:
		// Docker answers MX for container names with an empty NOERROR.
	}
	if len(resp.Answer) == 0 && inZone {
		resp.Ns = append(resp.Ns, s.soa())
	}
	return resp
}

// answeredLocally reports whether a known non-zone name is answered here for
// qtype; Docker forwards every other type, and so do we.
func answeredLocally(qtype uint16) bool {
	switch qtype {
	case dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypeANY, dns.TypeMX:
		return true
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

// addrRecord builds the A or AAAA record for m, or nil when m has no address
// of that family.
func addrRecord(owner string, qtype uint16, m *member, ttl uint32) dns.RR {
	switch {
	case qtype == dns.TypeA && m.ip4.IsValid():
		return &dns.A{Hdr: header(owner, dns.TypeA, ttl), A: m.ip4.AsSlice()}
	case qtype == dns.TypeAAAA && m.ip6.IsValid():
		return &dns.AAAA{Hdr: header(owner, dns.TypeAAAA, ttl), AAAA: m.ip6.AsSlice()}
	}
	return nil
}

func header(owner string, rrtype uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: owner, Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
}

func (s *snapshot) soa() *dns.SOA {
	return &dns.SOA{
		Hdr:     header(s.opts.Domain, dns.TypeSOA, s.opts.TTL),
		Ns:      "ns." + s.opts.Domain,
		Mbox:    "hostmaster." + s.opts.Domain,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  s.opts.TTL,
	}
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
	n, err := strconv.ParseUint(service, 10, 16)
	return err == nil && p.Name == "" && uint16(n) == p.Port
}

func reply(req *dns.Msg) *dns.Msg {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	resp.RecursionAvailable = true
	return resp
}

// finish adds EDNS when the client used it and truncates to the client's size.
func finish(req, resp *dns.Msg, maxSize int) {
	if opt := req.IsEdns0(); opt != nil {
		resp.SetEdns0(dnswire.EDNSSize, opt.Do())
	}
	resp.Compress = true
	if maxSize > 0 {
		resp.Truncate(maxSize)
	}
}
