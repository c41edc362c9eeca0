package resolver

import (
	"net/netip"
	"strings"
	"unsafe"

	"github.com/sidedns/sidedns/dnswire"
)

// AppendAnswer appends the reply to a plain A or AAAA query for a local name
// with at least one address, straight to wire bytes and without allocating.
// It returns ok=false for everything else (other types, NODATA, NXDOMAIN, a
// reply too large for the client), and the caller uses Resolve instead; the
// two paths give the same answers.
func (r *Resolver) AppendAnswer(dst []byte, q *dnswire.Query, src netip.Addr) ([]byte, bool) {
	qname := q.Name()
	if q.Class != 1 || (q.Type != 1 && q.Type != 28) || len(qname) == 0 {
		return dst, false
	}
	s := r.snap.Load()
	// A string view of the name for map look-ups; it is never retained.
	name := unsafe.String(&qname[0], len(qname))
	nets, project := s.view(src)
	var rs *rrset
	if rest, ok := strings.CutSuffix(name, s.zoneSuffix); ok {
		rs = s.find(nets, rest, true)
	} else if name != s.domain {
		rs = s.lookup(nets, name)
	}
	if rs == nil {
		return dst, false
	}
	rs = scoped(rs, project)
	n, ttl := len(rs.answer), minTTL(rs.answer)
	var count int
	for _, m := range rs.answer {
		if q.Type == 1 && m.ip4.IsValid() || q.Type == 28 && m.ip6.IsValid() {
			count++
		}
	}
	rdlen := uint16(4)
	if q.Type == 28 {
		rdlen = 16
	}
	size := 12 + len(q.Raw) + 4 + count*(12+int(rdlen))
	if q.EDNS {
		size += dnswire.OPTLen
	}
	if count == 0 || size > int(q.UDPSize) {
		return dst, false
	}
	if rs.failOpen {
		r.Stats.FailOpen.Add(1)
	}
	dst = dnswire.AppendHeader(dst, q, dnswire.FlagAA|dnswire.FlagRA, 0, uint16(count), 0, q.ARCount())
	start := rs.start()
	for i := range n {
		m := rs.at(start, i)
		if q.Type == 1 && m.ip4.IsValid() {
			a := m.ip4.As4()
			dst = dnswire.AppendRecordHeader(dst, 1, ttl, 4)
			dst = append(dst, a[:]...)
		} else if q.Type == 28 && m.ip6.IsValid() {
			a := m.ip6.As16()
			dst = dnswire.AppendRecordHeader(dst, 28, ttl, 16)
			dst = append(dst, a[:]...)
		}
	}
	if q.EDNS {
		dst = dnswire.AppendOPT(dst, dnswire.EDNSSize, q.DO)
	}
	return dst, true
}
