package dnsserver

import (
	"net/netip"
	"sync/atomic"
)

// sourceKinds records whether any query came from loopback and whether any came from elsewhere. When
// Docker forwards containers' queries from the host's namespace (a current engine does, for a loopback
// nameserver in the host's resolv.conf), every query looks like the host's; the flags let the operator
// be told.
// Each is set once and only read afterwards, so the query path pays one load.
type sourceKinds struct {
	loopback, other atomic.Bool
}

func (k *sourceKinds) see(src netip.Addr) {
	f := &k.other
	if src.IsLoopback() {
		f = &k.loopback
	}
	if !f.Load() {
		f.Store(true)
	}
}

// Sources reports whether any query so far came from a loopback address, and whether any came from
// another address.
func (s *Server) Sources() (loopback, other bool) {
	return s.sources.loopback.Load(), s.sources.other.Load()
}
