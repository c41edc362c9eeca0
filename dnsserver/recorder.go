package dnsserver

import (
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/dnswire"
)

// Recorder sees every answered lookup (servicemap.Map). Record runs on the
// query path for each reply: it must not block, lock or allocate. at is when
// the query was read; answers is the reply's answer count; via is where the
// answer came from ("local", "cache", "upstream", "stale" or "server", as
// the source label of sidedns_queries_total); took is how long an upstream
// answer took, zero for the others.
type Recorder interface {
	Record(at time.Time, src netip.Addr, q *dnswire.Query, rcode, answers int, via string, took time.Duration)
}

// record passes a reply to the recorder. Replies the server made itself for
// a query it would not handle (REFUSED, FORMERR, NOTIMP) are not lookups of
// anything, and recording them would let any source fill the table.
func (s *Server) record(r *request, rcode, answers int, from source) {
	if s.recorder == nil || (from == srcServer && rcode != dns.RcodeServerFailure) {
		return
	}
	var took time.Duration
	if from == srcUpstream { // a forward, off the fast path: one more clock read is cheap there
		took = time.Since(r.start)
	}
	s.recorder.Record(r.start, r.src, &r.q, rcode, answers, sourceNames[from], took)
}
