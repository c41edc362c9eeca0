// Package upstream forwards queries to upstream resolvers and caches their
// answers. It knows nothing about containers.
package upstream

import (
	"context"
	"errors"

	"github.com/miekg/dns"
)

// Exchanger sends a query upstream and returns the reply, which is the
// caller's to modify. tcp says the client came over TCP, so the query goes
// over TCP too. The Forwarder implements it; the Cache sits in front of one.
type Exchanger interface {
	Exchange(ctx context.Context, m *dns.Msg, tcp bool) (*dns.Msg, error)
}

// ErrOverloaded means the bound on outstanding upstream queries was reached;
// the server answers REFUSED.
var ErrOverloaded = errors.New("too many outstanding upstream queries")

// ErrAllFailed means every upstream failed (timeout, SERVFAIL, REFUSED or a
// network error); the server answers SERVFAIL, or the cache serves stale.
var ErrAllFailed = errors.New("all upstreams failed")

// stripOPT removes the OPT record from m, in place: an upstream's OPT
// describes that hop, and Finish gives the client its own (RFC 6891 7).
func stripOPT(m *dns.Msg) {
	kept := m.Extra[:0]
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			kept = append(kept, rr)
		}
	}
	clear(m.Extra[len(kept):])
	m.Extra = kept
}

// Origin says where a forwarded answer came from, for metrics and the query log.
type Origin uint8

const (
	OriginUpstream Origin = iota // asked an upstream for it
	OriginCache                  // a fresh cache entry
	OriginStale                  // an expired entry, because every upstream failed
)

func (o Origin) String() string {
	switch o {
	case OriginCache:
		return "cache"
	case OriginStale:
		return "stale"
	}
	return "upstream"
}
