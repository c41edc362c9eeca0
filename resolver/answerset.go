package resolver

import (
	"net/netip"
	"strings"
)

// Answer is one address in a name's answer set.
type Answer struct {
	Container string // container name
	Addr      netip.Addr
	Weight    uint16 // 0 for a drained container answered because nothing else is left
}

// AnswerSet returns the addresses that A and AAAA queries for name get from
// a source that sees every network (the host), in table order, before
// rotation: the set the control API's Watch streams. name is a query name
// with or without the trailing dot, in the zone or a Docker-compatible one.
// It returns nil when the name is not ours or has no address.
func (r *Resolver) AnswerSet(name string) []Answer {
	s := r.snap.Load()
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	var rs *rrset
	if rest, ok := strings.CutSuffix(name, s.zoneSuffix); ok {
		rs = s.find(s.all, rest, true) // the same lookup as a query's
	} else if name != s.domain {
		rs = s.find(s.all, name, false)
	}
	if rs == nil {
		return nil
	}
	var out []Answer
	for _, m := range rs.answer {
		for _, a := range [2]netip.Addr{m.ip4, m.ip6} {
			if a.IsValid() {
				out = append(out, Answer{Container: m.name, Addr: a, Weight: m.weight})
			}
		}
	}
	return out
}
