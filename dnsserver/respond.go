package dnsserver

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/sidedns/sidedns/dnswire"
	"github.com/sidedns/sidedns/upstream"
)

// Local answers the names that are ours (resolver.Resolver). Answer appends
// the reply to q (header, question, records, no OPT) and reports whether the
// name is ours; when it is not, the query is forwarded. IsLocalSource reports
// whether src belongs to a Docker network (the default allow list).
type Local interface {
	Answer(dst []byte, q *dnswire.Query, src netip.Addr) ([]byte, bool)
	IsLocalSource(src netip.Addr) bool
}

// Upstream answers the names that are not ours (upstream.Cache). Both
// methods append a reply body without OPT; the server finishes it.
type Upstream interface {
	AppendHit(dst []byte, q *dnswire.Query) ([]byte, bool)
	Resolve(ctx context.Context, dst []byte, q *dnswire.Query, tcp bool) ([]byte, upstream.Origin, error)
}

// request is one query and what the server knows of it. The UDP reader
// reuses one, so the inline path allocates nothing.
type request struct {
	q     dnswire.Query
	src   netip.Addr
	tcp   bool
	start time.Time
}

// step is what respond decided to do with a query.
type step uint8

const (
	stepReply   step = iota // the reply is ready
	stepDrop                // send nothing
	stepForward             // ask the upstream (it may take seconds): call forward
)

// respond applies sidedns's rules to one query, read from UDP or TCP, and
// appends the reply to dst. It is the only place these rules live; the UDP
// reader runs it inline, so everything but a forward costs no goroutine and
// no allocation. The order:
//
//  1. Not a query (too short, or a response): dropped.
//  2. A source outside the allow list: REFUSED.
//  3. A query that does not parse: FORMERR; an opcode other than QUERY:
//     NOTIMP; an EDNS version above 0: BADVERS. Never forwarded.
//  4. Zone transfers, meta types and classes other than IN: REFUSED or
//     NOTIMP (policy). Never forwarded, whatever the name.
//  5. Our names (the container table and the zone): the local answer, AA.
//  6. A fresh cache entry.
//  7. RD=0 and not cached: REFUSED; sidedns does not recurse for a client
//     that did not ask for it (RFC 1034 4.3.1).
//  8. Everything else: forward.
//
// Every reply goes through dnswire.Finish or dnswire.AppendError, which set
// the header, the question case, truncation and the OPT.
func (s *Server) respond(dst, pkt []byte, r *request) ([]byte, step) {
	r.start = time.Now()
	q := &r.q
	err := dnswire.Parse(pkt, q)
	if errors.Is(err, dnswire.ErrNotQuery) {
		s.Stats.Malformed.Add(1)
		return dst, stepDrop
	}
	s.Stats.Queries.Add(1)
	if !s.allowed(r.src) {
		s.Stats.Refused.Add(1)
		return s.fail(dst, r, dns.RcodeRefused), stepReply
	}
	if err != nil {
		s.Stats.FormErr.Add(1)
		return s.fail(dst, r, parseRcode(err)), stepReply
	}
	if rc := policy(q); rc != dns.RcodeSuccess {
		s.Stats.Policy.Add(1)
		return s.fail(dst, r, rc), stepReply
	}
	if s.local != nil {
		if out, ok := s.local.Answer(dst, q, r.src); ok {
			s.Stats.Local.Add(1)
			return s.finish(dst, out, r, true, srcLocal), stepReply
		}
	}
	if up := s.upstream.Load().up; up != nil {
		if out, ok := up.AppendHit(dst, q); ok {
			s.Stats.Forwarded.Add(1)
			return s.finish(dst, out, r, false, srcCache), stepReply
		}
	}
	if !q.RD {
		s.Stats.Policy.Add(1)
		return s.fail(dst, r, dns.RcodeRefused), stepReply
	}
	return dst, stepForward
}

// forward asks the upstream for q, which respond sent here, and appends the
// finished reply to dst.
func (s *Server) forward(dst []byte, r *request) []byte {
	up := s.upstream.Load().up
	if up == nil {
		s.Stats.ServFail.Add(1)
		return s.fail(dst, r, dns.RcodeServerFailure)
	}
	ctx, cancel := context.WithTimeout(s.baseCtx, s.timeout)
	defer cancel()
	out, origin, err := up.Resolve(ctx, dst, &r.q, r.tcp)
	switch {
	case errors.Is(err, upstream.ErrOverloaded):
		s.Stats.Overloaded.Add(1)
		return s.fail(dst, r, dns.RcodeRefused)
	case err != nil:
		s.Stats.ServFail.Add(1)
		s.log.Debug("forward failed", zap.Stringer("name", qname(&r.q)), zap.String("type", typeString(r.q.Type)), zap.Error(err))
		return s.fail(dst, r, dns.RcodeServerFailure)
	}
	s.Stats.Forwarded.Add(1)
	from := srcUpstream
	switch origin {
	case upstream.OriginCache:
		from = srcCache
	case upstream.OriginStale:
		from = srcStale
	}
	return s.finish(dst, out, r, false, from)
}

// policy is the rcode for questions that sidedns neither answers nor
// forwards, or RcodeSuccess. Zone transfers would hand a client a whole
// upstream zone; meta types are not questions about data (RFC 6895 3.1);
// other classes are not ours, and a zone name must never leak upstream.
func policy(q *dnswire.Query) int {
	switch q.Type {
	case dns.TypeAXFR, dns.TypeIXFR:
		return dns.RcodeRefused
	case dns.TypeOPT, dns.TypeTSIG, dns.TypeTKEY, dns.TypeMAILA, dns.TypeMAILB:
		return dns.RcodeNotImplemented
	}
	if q.Class != dns.ClassINET {
		return dns.RcodeRefused
	}
	return dns.RcodeSuccess
}

func parseRcode(err error) int {
	switch {
	case errors.Is(err, dnswire.ErrNotImplemented):
		return dns.RcodeNotImplemented
	case errors.Is(err, dnswire.ErrBadVersion):
		return dns.RcodeBadVers
	}
	return dns.RcodeFormatError
}

// finish completes a reply that Local or Upstream appended after dst, then
// counts and logs it.
func (s *Server) finish(dst, out []byte, r *request, authoritative bool, from source) []byte {
	out, ok := dnswire.Finish(out, len(dst), &r.q, authoritative, dnswire.Limit(&r.q, r.tcp))
	if !ok {
		s.Stats.ServFail.Add(1)
		s.log.Warn("unusable reply", zap.String("from", sourceNames[from]), zap.Stringer("name", qname(&r.q)))
		return s.fail(dst, r, dns.RcodeServerFailure)
	}
	s.done(r, int(out[len(dst)+3]&0xf), int(out[len(dst)+6])<<8|int(out[len(dst)+7]), from)
	return out
}

// fail appends a reply with rcode and no records.
func (s *Server) fail(dst []byte, r *request, rcode int) []byte {
	s.done(r, rcode, 0, srcServer)
	return dnswire.AppendError(dst, &r.q, rcode)
}

// done counts a reply (answers: its answer count), records it for the
// service map, and writes it to the query log when sampled; counted and
// logged before the write, so a client that has its answer sees it counted.
func (s *Server) done(r *request, rcode, answers int, from source) {
	s.metrics.observe(r.q.Type, rcode, from, r.start)
	s.record(r, rcode, answers, from)
	if s.logRate > 0 && rand.Float64() < s.logRate {
		proto := "udp"
		if r.tcp {
			proto = "tcp"
		}
		s.log.Info("query",
			zap.Stringer("src", r.src),
			zap.String("proto", proto),
			zap.Stringer("name", qname(&r.q)),
			zap.String("type", typeString(r.q.Type)),
			zap.String("rcode", rcodeString(rcode)),
			zap.String("via", sourceNames[from]),
			zap.Duration("took", time.Since(r.start)))
	}
}

// panicked answers SERVFAIL for a query whose handling panicked.
func (s *Server) panicked(dst []byte, r *request, p any) []byte {
	s.Stats.ServFail.Add(1)
	s.log.Error("query handler panicked", zap.Any("panic", p), zap.Stringer("src", r.src))
	return s.fail(dst, r, dns.RcodeServerFailure)
}

// qname formats the question name for logs, only when a log line is written.
type qnameStringer struct{ raw []byte }

func qname(q *dnswire.Query) qnameStringer { return qnameStringer{q.Raw} }

func (n qnameStringer) String() string {
	if len(n.raw) == 0 {
		return ""
	}
	name, _, err := dns.UnpackDomainName(n.raw, 0)
	if err != nil {
		return "?"
	}
	return name
}

func rcodeString(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return "RCODE" + strconv.Itoa(rc)
}
