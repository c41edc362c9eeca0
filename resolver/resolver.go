package resolver

import (
	"net/netip"
	"sync/atomic"

	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// Options configure a Resolver. The zero value of a field means its default.
type Options struct {
	TTL          uint32 // local answer TTL; default 5
	Domain       string // authoritative zone; default "docker."
	StrictHealth bool   // NODATA instead of failing open when no eligible container remains
	Logger       *zap.Logger
}

// Stats are counters the ops surface exports.
type Stats struct {
	FailOpen atomic.Uint64 // answers that fell back to unhealthy containers
}

// Resolver answers queries from the latest published snapshot.
type Resolver struct {
	opts  Options
	snap  atomic.Pointer[snapshot]
	Stats Stats
}

// New returns a Resolver with an empty table.
func New(opts Options) *Resolver {
	panic("TODO")
}

// Publish builds a snapshot from t and makes it the one queries read.
// It is safe to call from any goroutine.
func (r *Resolver) Publish(t Topology) { panic("TODO") }

// Topology returns the topology of the current snapshot (read-only).
func (r *Resolver) Topology() Topology { panic("TODO") }

// Resolve answers req from the table for a client at src.
// ok is false when the name is not ours and the query must be forwarded.
// maxSize is the client's UDP size (512 without EDNS) or 65535 over TCP;
// a larger answer is truncated with TC set.
func (r *Resolver) Resolve(req *dns.Msg, src netip.Addr, maxSize int) (resp *dns.Msg, ok bool) {
	panic("TODO")
}

// IsLocalSource reports whether src is a container address or inside a subnet
// of a network in the table (used for the default allow list).
func (r *Resolver) IsLocalSource(src netip.Addr) bool { panic("TODO") }

type snapshot struct{}
