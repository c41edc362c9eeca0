package servicemap

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/dnswire"
)

// FuzzRecord feeds any packet that parses as a query through Record and
// the readers: names from the wire (odd octets, single labels, public
// suffixes alone) must neither panic nor break the counts.
func FuzzRecord(f *testing.F) {
	for _, name := range []string{"api.", "api.github.com.", "co.uk.", "paymnts.", "a\\.b.example.", "\\255.", "x.shop.docker.", "1.0.30.172.in-addr.arpa."} {
		pkt, err := new(dns.Msg).SetQuestion(name, dns.TypeA).Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(pkt, uint8(0), uint8(1))
	}
	f.Fuzz(func(t *testing.T, pkt []byte, rcode, src uint8) {
		var q dnswire.Query
		if dnswire.Parse(pkt, &q) != nil {
			return
		}
		m, c := newMap(t)
		from := netip.AddrFrom4([4]byte{172, 30, 0, src})
		for range 3 {
			m.Record(c.now(), from, &q, int(rcode&0xf), 0, "upstream", 0)
		}
		g := m.Graph(c.now().Add(-Window))
		var n uint64
		for _, e := range g.Edges {
			n += e.Queries
			if e.From == "" || e.To == "" {
				t.Fatalf("edge without an end: %+v", e)
			}
		}
		if want := map[bool]uint64{true: 3, false: 0}[q.HasQuestion && len(q.Name()) > 0]; n != want {
			t.Fatalf("%d lookups counted, want %d (%+v)", n, want, g.Edges)
		}
		m.Problems(c.now().Add(-Window))
	})
}
