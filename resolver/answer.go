package resolver

import (
	"net/netip"
	"strings"
	"unsafe"

	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/dnswire"
)

// Every query goes through decide, which holds all the answer rules; the
// renderers below only write what a decision says. A and AAAA answers and
// negative answers are written straight to wire bytes without allocating;
// the other record types are built with miekg/dns and packed.

// outcome is what a query gets.
type outcome uint8

const (
	notOurs  outcome = iota // forward it
	answer                  // records, as kind says
	noData                  // NOERROR, no records (the SOA in the zone)
	nxDomain                // NXDOMAIN, with the SOA (only in the zone)
)

// kind is the records an answer holds.
type kind uint8

const (
	kindAddrs   kind = iota // A or AAAA of rs's members
	kindSRV                 // SRV of rs's members' matching ports, A/AAAA in additional
	kindPTR                 // PTR to ptr
	kindHINFO               // RFC 8482 minimal answer to ANY
	kindSOA                 // the zone's SOA, at the apex
	kindNS                  // the zone's NS, at the apex, with the server's addresses
	kindNSAddrs             // A or AAAA of ns.<zone>: the server's addresses
)

// decision is the answer to one query. Strings in it may point into the
// query's name: it lives no longer than the query.
type decision struct {
	outcome outcome
	zone    bool // inside the zone: a negative answer carries the SOA
	kind    kind
	rs      *rrset // scoped to the querier's project
	start   int    // round-robin start in rs.answer
	// SRV filter: "_<service>._<proto>"; empty for a plain name in the zone.
	service, proto string
	ptr            string // PTR target
}

func (d *decision) rcode() int {
	if d.outcome == nxDomain {
		return dns.RcodeNameError
	}
	return dns.RcodeSuccess
}

// Answer appends to dst the reply to q from a client at src: header (as
// dnswire.AppendHeader writes it), question and records, without an OPT
// record; the caller completes it with dnswire.Finish. ok is false when the
// name is not ours and the query must be forwarded, and for classes other
// than IN.
func (r *Resolver) Answer(dst []byte, q *dnswire.Query, src netip.Addr) (out []byte, ok bool) {
	if !q.HasQuestion || q.Class != dns.ClassINET {
		return dst, false
	}
	s := r.snap.Load()
	d := s.decide(q.Name(), q.Type, src)
	switch {
	case d.outcome == notOurs:
		return dst, false
	case d.rs != nil && d.rs.failOpen:
		r.Stats.FailOpen.Add(1)
	}
	if d.outcome != answer || d.kind == kindAddrs {
		return s.appendWire(dst, q, &d), true
	}
	return s.appendMsg(dst, q, &d), true
}

// decide applies the answer rules (docs/ARCHITECTURE.md) to
// a query for name, as dnswire.Query.Name gives it, from src.
//
// The order: PTR for a container address; then names inside the zone, which
// are always ours; then Docker-compatible names, searched on the querier's
// networks (every network for an unknown source). A known name with no
// record of the asked type is NODATA, never NXDOMAIN and never a forward,
// because the name exists. Types Docker forwards for known names (TXT,
// CNAME, ...) are forwarded too.
func (s *snapshot) decide(qname []byte, qtype uint16, src netip.Addr) decision {
	if len(qname) == 0 {
		return decision{}
	}
	// A string view of the name for map look-ups; it is never retained
	// beyond the query.
	name := unsafe.String(&qname[0], len(qname))
	nets, project := s.view(src)
	if qtype == dns.TypePTR {
		if a, ok := ptrName(name); ok {
			return s.decidePTR(nets, a)
		}
	}
	if name == s.domain {
		return s.decideApex(qtype)
	}
	if rest, ok := strings.CutSuffix(name, s.zoneSuffix); ok {
		return s.decideZone(nets, project, rest, qtype)
	}
	return s.decideBare(nets, project, name, qtype)
}

func (s *snapshot) decidePTR(nets []int32, a netip.Addr) decision {
	for _, pt := range s.addrs.get(a) {
		for _, slot := range nets {
			if slot == pt.slot {
				return decision{outcome: answer, kind: kindPTR, ptr: pt.target}
			}
		}
	}
	return decision{}
}

func (s *snapshot) decideApex(qtype uint16) decision {
	switch qtype {
	case dns.TypeSOA:
		return decision{outcome: answer, zone: true, kind: kindSOA}
	case dns.TypeNS:
		return decision{outcome: answer, zone: true, kind: kindNS}
	}
	return decision{outcome: noData, zone: true}
}

// decideZone answers rest.<zone>: ns, then <name>, <service>.<project> and
// <name>.<network>, then SRV names under those, then empty non-terminals
// (RFC 8020: NODATA), and NXDOMAIN for the rest.
func (s *snapshot) decideZone(nets []int32, project, rest string, qtype uint16) decision {
	if rest == nsLabel {
		// The apex NS record names it: the server itself.
		if s.nsAddrOf(qtype) {
			return decision{outcome: answer, zone: true, kind: kindNSAddrs}
		}
		return decision{outcome: noData, zone: true}
	}
	if rs := s.find(nets, rest, true); rs != nil {
		d := typed(scoped(rs, project), qtype, "", "")
		d.zone = true
		if d.outcome == notOurs { // a type Docker forwards; the zone has no such record
			d.outcome = noData
		}
		return d
	}
	if service, proto, base, ok := splitSRV(rest); ok {
		if rs := s.find(nets, base, true); rs != nil {
			if rs = scoped(rs, project); hasPort(rs, service, proto) {
				if qtype != dns.TypeSRV {
					return decision{outcome: noData, zone: true, rs: rs}
				}
				d := typed(rs, qtype, service, proto)
				d.zone = true
				return d
			}
		}
	}
	if s.isParent(nets, project, rest) {
		return decision{outcome: noData, zone: true}
	}
	return decision{outcome: nxDomain, zone: true}
}

// decideBare answers a Docker-compatible name outside the zone. Names that
// are not in the table, and types Docker forwards, are forwarded.
func (s *snapshot) decideBare(nets []int32, project, name string, qtype uint16) decision {
	if rs := s.lookup(nets, name); rs != nil {
		if qtype == dns.TypeSRV {
			return decision{} // SRV for a plain container name: Docker forwards it
		}
		return typed(scoped(rs, project), qtype, "", "")
	}
	if qtype != dns.TypeSRV {
		return decision{}
	}
	service, proto, base, ok := splitSRV(name)
	if !ok {
		return decision{}
	}
	rs := s.lookup(nets, base)
	if rs == nil {
		return decision{}
	}
	return typed(scoped(rs, project), qtype, service, proto)
}

// typed is the answer of type qtype from rs: records, or NODATA when rs has
// none of that type; notOurs for the types Docker forwards for its names
// (all but A, AAAA, SRV, ANY and MX).
func typed(rs *rrset, qtype uint16, service, proto string) decision {
	d := decision{outcome: noData, rs: rs, service: service, proto: proto}
	switch qtype {
	case dns.TypeA, dns.TypeAAAA:
		for _, m := range rs.answer {
			if m.addr(qtype).IsValid() {
				d.outcome, d.kind = answer, kindAddrs
				break
			}
		}
	case dns.TypeSRV:
		if service != "" && hasPort(rs, service, proto) {
			d.outcome, d.kind = answer, kindSRV
		}
	case dns.TypeANY:
		d.outcome, d.kind = answer, kindHINFO
	case dns.TypeMX:
		// Docker answers MX for container names with an empty NOERROR.
	default:
		d.outcome = notOurs
	}
	if d.outcome == answer && (d.kind == kindAddrs || d.kind == kindSRV) {
		d.start = rs.start()
	}
	return d
}

// hasPort reports whether a member of rs's answer has a port that
// "_<service>._<proto>" names.
func hasPort(rs *rrset, service, proto string) bool {
	for _, m := range rs.answer {
		for _, p := range m.ports {
			if srvMatch(p, service, proto) {
				return true
			}
		}
	}
	return false
}

// isParent reports whether rest (inside the zone, not itself a name) is a
// proper ancestor, by whole labels, of a name the view answers in the zone:
// the parent of <name>.<network> (the network), of <service>.<project> (the
// project), of a dotted name, or _<proto>.<name> of an SRV name.
func (s *snapshot) isParent(nets []int32, project, rest string) bool {
	if s.zone.parents[rest] {
		return true // an ancestor of a zone-only record (records file, other hosts)
	}
	for _, slot := range nets {
		nt := s.tables[slot]
		if nt.parents[rest] > 0 || nt.count > 0 && isLabelSuffix(nt.lname, rest) {
			return true
		}
	}
	// <ancestor of a name>.<network>
	for i := strings.IndexByte(rest, '.'); i > 0; i = nextDot(rest, i) {
		if nt := s.findNet(nets, rest[i+1:]); nt != nil && nt.parents[rest[:i]] > 0 {
			return true
		}
	}
	// _<proto>.<name> holds _<service>._<proto>.<name>.
	if first, base, ok := strings.Cut(rest, "."); ok && len(first) > 1 && first[0] == '_' {
		if rs := s.find(nets, base, true); rs != nil {
			for _, m := range scoped(rs, project).answer {
				for _, p := range m.ports {
					if strings.EqualFold(p.Proto, first[1:]) {
						return true
					}
				}
			}
		}
	}
	return false
}

func nextDot(s string, i int) int {
	j := strings.IndexByte(s[i+1:], '.')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// isLabelSuffix reports whether suffix is name or a tail of it by whole labels.
func isLabelSuffix(name, suffix string) bool {
	if len(name) == len(suffix) {
		return name == suffix
	}
	return len(name) > len(suffix) && name[len(name)-len(suffix)-1] == '.' && strings.HasSuffix(name, suffix)
}

// nsAddrOf reports whether the server has an address of qtype's family.
func (s *snapshot) nsAddrOf(qtype uint16) bool {
	for _, a := range s.opts.NSAddrs {
		if familyOf(a) == qtype {
			return true
		}
	}
	return false
}

func familyOf(a netip.Addr) uint16 {
	if a.Is4() {
		return dns.TypeA
	}
	return dns.TypeAAAA
}

// addr is m's address of qtype's family (A or AAAA), or the zero Addr.
func (m *member) addr(qtype uint16) netip.Addr {
	switch qtype {
	case dns.TypeA:
		return m.ip4
	case dns.TypeAAAA:
		return m.ip6
	}
	return netip.Addr{}
}

// appendWire writes an address answer or a negative answer straight to
// wire, without allocating.
func (s *snapshot) appendWire(dst []byte, q *dnswire.Query, d *decision) []byte {
	if d.outcome != answer {
		var ns uint16
		if d.zone {
			ns = 1
		}
		dst = dnswire.AppendHeader(dst, q, d.rcode(), 0, ns, 0)
		if d.zone {
			dst = append(dst, s.soaWire...)
		}
		return dst
	}
	rs := d.rs
	var count uint16
	for _, m := range rs.answer {
		if m.addr(q.Type).IsValid() {
			count++
		}
	}
	dst = dnswire.AppendHeader(dst, q, dns.RcodeSuccess, count, 0, 0)
	n, ttl := len(rs.answer), minTTL(rs.answer)
	for i := range n {
		a := rs.at(d.start, i).addr(q.Type)
		if !a.IsValid() {
			continue
		}
		if q.Type == dns.TypeA {
			b := a.As4()
			dst = dnswire.AppendRecordHeader(dst, dns.TypeA, ttl, uint16(len(b)))
			dst = append(dst, b[:]...)
		} else {
			b := a.As16()
			dst = dnswire.AppendRecordHeader(dst, dns.TypeAAAA, ttl, uint16(len(b)))
			dst = append(dst, b[:]...)
		}
	}
	return dst
}

// appendMsg builds the records of an answer with miekg/dns and packs them.
func (s *snapshot) appendMsg(dst []byte, q *dnswire.Query, d *decision) []byte {
	qname, _, err := dns.UnpackDomainName(q.Raw, 0)
	if err != nil { // Parse read it; cannot happen
		return dnswire.AppendHeader(dst, q, dns.RcodeServerFailure, 0, 0, 0)
	}
	m := &dns.Msg{
		MsgHdr:   dns.MsgHdr{Id: q.ID, Response: true, Rcode: d.rcode()},
		Compress: true,
		Question: []dns.Question{{Name: qname, Qtype: q.Type, Qclass: q.Class}},
	}
	ttl := s.opts.TTL
	switch d.kind {
	case kindAddrs:
		rs := d.rs
		n, minttl := len(rs.answer), minTTL(rs.answer)
		for i := range n {
			if rr := addrRecord(qname, q.Type, rs.at(d.start, i).addr(q.Type), minttl); rr != nil {
				m.Answer = append(m.Answer, rr)
			}
		}
	case kindSRV:
		rs := d.rs
		n := len(rs.answer)
		for i := range n {
			mb := rs.at(d.start, i)
			target := mb.name + "."
			if d.zone {
				target += s.opts.Domain
			}
			for _, p := range mb.ports {
				if !srvMatch(p, d.service, d.proto) {
					continue
				}
				m.Answer = append(m.Answer, &dns.SRV{Hdr: header(qname, dns.TypeSRV, mb.ttl), Port: p.Port, Target: target})
				for _, t := range [2]uint16{dns.TypeA, dns.TypeAAAA} {
					if rr := addrRecord(target, t, mb.addr(t), mb.ttl); rr != nil {
						m.Extra = append(m.Extra, rr)
					}
				}
			}
		}
	case kindPTR:
		m.Answer = append(m.Answer, &dns.PTR{Hdr: header(qname, dns.TypePTR, ttl), Ptr: d.ptr})
	case kindHINFO:
		m.Answer = append(m.Answer, &dns.HINFO{Hdr: header(qname, dns.TypeHINFO, ttl), Cpu: "RFC8482"})
	case kindSOA:
		m.Answer = append(m.Answer, s.soa(qname))
	case kindNS:
		m.Answer = append(m.Answer, &dns.NS{Hdr: header(qname, dns.TypeNS, ttl), Ns: nsLabel + "." + s.opts.Domain})
		for _, a := range s.opts.NSAddrs {
			m.Extra = append(m.Extra, addrRecord(nsLabel+"."+s.opts.Domain, familyOf(a), a, ttl))
		}
	case kindNSAddrs:
		for _, a := range s.opts.NSAddrs {
			if familyOf(a) == q.Type {
				m.Answer = append(m.Answer, addrRecord(qname, q.Type, a, ttl))
			}
		}
	}
	wire, err := m.Pack()
	if err != nil { // records we built ourselves; cannot happen
		return dnswire.AppendHeader(dst, q, dns.RcodeServerFailure, 0, 0, 0)
	}
	return append(dst, wire...)
}

// nsLabel is the label of the name server the apex NS record names.
const nsLabel = "ns"

// addrRecord builds an A or AAAA record for a, or nil when a is not valid.
func addrRecord(owner string, qtype uint16, a netip.Addr, ttl uint32) dns.RR {
	if !a.IsValid() {
		return nil
	}
	switch qtype {
	case dns.TypeA:
		return &dns.A{Hdr: header(owner, dns.TypeA, ttl), A: a.Unmap().AsSlice()}
	case dns.TypeAAAA:
		return &dns.AAAA{Hdr: header(owner, dns.TypeAAAA, ttl), AAAA: a.AsSlice()}
	}
	return nil
}

func header(owner string, rrtype uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: owner, Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
}

// soa is the zone's SOA record, owned by owner (the apex as the client
// spelled it, or the configured domain).
func (s *snapshot) soa(owner string) *dns.SOA {
	return &dns.SOA{
		Hdr:     header(owner, dns.TypeSOA, s.opts.TTL),
		Ns:      nsLabel + "." + s.opts.Domain,
		Mbox:    "hostmaster." + s.opts.Domain,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  s.opts.TTL,
	}
}

// packSOA packs the SOA record of negative answers once per snapshot,
// uncompressed, so that it can follow any question.
func (s *snapshot) packSOA() []byte {
	rr := s.soa(s.opts.Domain)
	buf := make([]byte, dns.Len(rr)+len(s.opts.Domain)*3)
	n, err := dns.PackRR(rr, buf, 0, nil, false)
	if err != nil {
		panic("resolver: pack SOA for " + s.opts.Domain + ": " + err.Error()) // withDefaults made the domain a name
	}
	return buf[:n]
}
