// Package upstream forwards queries to upstream resolvers and caches their
// answers. It knows nothing about containers.
package upstream

import (
	"context"
	"errors"

	"github.com/miekg/dns"
)

// Exchanger sends a query and returns the reply. The Forwarder and the Cache
// both implement it, so the Cache can wrap the Forwarder and tests can wrap either.
type Exchanger interface {
	Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error)
}

// ErrOverloaded means the bound on outstanding upstream queries was reached;
// the server answers REFUSED.
var ErrOverloaded = errors.New("too many outstanding upstream queries")

// ErrAllFailed means every upstream failed (timeout, SERVFAIL, REFUSED or a
// network error); the server answers SERVFAIL, or the cache serves stale.
var ErrAllFailed = errors.New("all upstreams failed")

// StripOPT removes the OPT record from m, in place: a reply to a query that
// had none must not carry one (RFC 6891 7), and cached replies get the
// client's own later.
func StripOPT(m *dns.Msg) {
	kept := m.Extra[:0]
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			kept = append(kept, rr)
		}
	}
	clear(m.Extra[len(kept):])
	m.Extra = kept
}

type tcpKey struct{}

// WithTCP marks ctx as coming from a TCP client, so the query is forwarded over TCP.
func WithTCP(ctx context.Context) context.Context {
	return context.WithValue(ctx, tcpKey{}, true)
}

// IsTCP reports whether ctx was marked by WithTCP.
func IsTCP(ctx context.Context) bool {
	v, _ := ctx.Value(tcpKey{}).(bool)
	return v
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

type originKey struct{}

// WithOrigin lets the caller learn where the answer came from: the cache
// writes to *o; it stays OriginUpstream otherwise.
func WithOrigin(ctx context.Context, o *Origin) context.Context {
	return context.WithValue(ctx, originKey{}, o)
}

func setOrigin(ctx context.Context, o Origin) {
	if p, ok := ctx.Value(originKey{}).(*Origin); ok {
		*p = o
	}
}
