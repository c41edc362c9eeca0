package resolver

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/dnswire"
)

// parseQuery packs a query for name and qtype, with EDNS when edns, and
// parses it as the server does.
func parseQuery(t testing.TB, name string, qtype uint16, edns bool) *dnswire.Query {
	t.Helper()
	req := new(dns.Msg)
	req.SetQuestion(name, qtype)
	req.Id = 4242
	if edns {
		req.SetEdns0(1232, true)
	}
	pkt, err := req.Pack()
	if err != nil {
		t.Fatal(err)
	}
	var q dnswire.Query
	if err := dnswire.Parse(pkt, &q); err != nil {
		t.Fatal(err)
	}
	return &q
}

// sameRenders decides q once and, for an address answer, renders it with
// both the wire renderer and the miekg/dns one; they must agree to the byte.
// It reports whether the decision was an address answer.
func sameRenders(t testing.TB, s *snapshot, q *dnswire.Query, src netip.Addr) bool {
	t.Helper()
	d := s.decide(q.Name(), q.Type, src)
	if d.outcome != answer || d.kind != kindAddrs {
		return false
	}
	fast := s.appendWire(nil, q, &d)
	slow := s.appendMsg(nil, q, &d)
	if string(fast) != string(slow) {
		var f, m dns.Msg
		_, _ = f.Unpack(fast), m.Unpack(slow)
		t.Fatalf("%q %s from %v: wire and miekg renderers differ:\nwire  %x\n%v\nmiekg %x\n%v",
			q.Name(), dns.TypeToString[q.Type], src, fast, &f, slow, &m)
	}
	return true
}

// The wire renderer of A and AAAA answers must write what the general one
// writes, byte for byte, whatever the case of the question and the view.
func TestWireRendererMatchesMsg(t *testing.T) {
	tests := []struct {
		src, name string
		qtype     uint16
		edns      bool
		addrs     bool // whether the answer holds addresses
	}{
		{client, "web.", dns.TypeA, false, true},
		{client, "WeB.", dns.TypeA, true, true},
		{client, "six.", dns.TypeAAAA, false, true},
		{client, "web.", dns.TypeAAAA, false, false}, // NODATA
		{client, "flaky.", dns.TypeA, false, true},
		{client, "allbad.", dns.TypeA, false, true},
		{"172.22.0.10", "db.", dns.TypeA, false, true},
		{client, "web.proj.DOCKER.", dns.TypeA, true, true},
		{host, "multi.other.", dns.TypeA, false, true},
		{client, "nope.docker.", dns.TypeA, false, false}, // NXDOMAIN
		{client, "example.test.", dns.TypeA, false, false},
		{outer, "web.", dns.TypeA, false, false},
		{client, "web.", dns.TypeMX, false, false},
	}
	r := newTestResolver(t, Options{})
	s := r.snap.Load()
	for _, tt := range tests {
		t.Run(tt.name+dns.TypeToString[tt.qtype], func(t *testing.T) {
			q := parseQuery(t, tt.name, tt.qtype, tt.edns)
			if got := sameRenders(t, s, q, addr(tt.src)); got != tt.addrs {
				t.Fatalf("address answer = %v, want %v", got, tt.addrs)
			}
		})
	}
	// Random topologies: every name they know, from every kind of source.
	for seed := range uint64(3) {
		g := &randTopo{rng: rand.New(rand.NewPCG(seed, 11)), nets: []string{"n0", "N1", "shared.net"}}
		top := Topology{Networks: g.networks()}
		for range 20 {
			top.Containers = append(top.Containers, g.container())
		}
		s := buildSnapshot(top, Options{}.withDefaults())
		n := 0
		for _, c := range top.Containers {
			for _, e := range c.Endpoints {
				for _, name := range append([]string{c.Name, c.Name + "." + e.NetworkName}, e.Aliases...) {
					if name == "" {
						continue
					}
					for _, qname := range []string{name + ".", name + ".DoCkEr."} {
						for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
							for _, src := range []netip.Addr{addr(host), e.IPv4, e.IPv6} {
								if sameRenders(t, s, parseQuery(t, qname, qt, n%2 == 0), src) {
									n++
								}
							}
						}
					}
				}
			}
		}
		if n == 0 {
			t.Fatalf("seed %d: no address answer compared", seed)
		}
	}
}

// FuzzAnswer: any packet that Parse takes must get, through Answer and
// Finish, a reply that miekg/dns unpacks, and an address answer must render
// the same through both renderers.
func FuzzAnswer(f *testing.F) {
	for _, name := range []string{"web.", "WEB.docker.", "nope.docker.", "_http._tcp.web.proj.docker.", "docker.",
		"2.0.20.172.in-addr.arpa.", "appnet.docker.", "ns.docker.", `a\.b.web.docker.`, "_tcp.web.docker."} {
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypePTR, dns.TypeANY, dns.TypeSOA, dns.TypeNS} {
			req := new(dns.Msg)
			req.SetQuestion(name, qt)
			req.SetEdns0(4096, qt == dns.TypeA)
			pkt, err := req.Pack()
			if err != nil {
				f.Fatal(err)
			}
			f.Add(pkt, byte(qt))
		}
	}
	r := New(Options{NSAddrs: []netip.Addr{addr("127.0.0.1"), addr("::1")}})
	r.Publish(fixture())
	srcs := []netip.Addr{addr(client), addr(host), addr(outer), addr("172.22.0.10"), addr("172.20.0.30")}
	f.Fuzz(func(t *testing.T, pkt []byte, pick byte) {
		var q dnswire.Query
		if dnswire.Parse(pkt, &q) != nil {
			return
		}
		src := srcs[int(pick)%len(srcs)]
		sameRenders(t, r.snap.Load(), &q, src)
		out, ok := r.Answer(nil, &q, src)
		if !ok {
			return
		}
		if q.Class != dns.ClassINET {
			t.Fatalf("answered class %d", q.Class)
		}
		out, ok = dnswire.Finish(out, 0, &q, true, dnswire.Limit(&q, pick&0x80 != 0))
		if !ok {
			t.Fatalf("Finish refused the reply %x", out)
		}
		var m dns.Msg
		if err := m.Unpack(out); err != nil {
			t.Fatalf("reply does not unpack: %v\n%x", err, out)
		}
		if len(out) > dnswire.Limit(&q, pick&0x80 != 0) {
			t.Fatalf("reply of %d bytes over the limit", len(out))
		}
	})
}

func benchmarkAnswer(b *testing.B, src, name string, qtype uint16, rcode int) {
	r := newTestResolver(b, Options{})
	q := parseQuery(b, name, qtype, true)
	from := addr(src)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		out, ok := r.Answer(buf[:0], q, from)
		if !ok || int(out[3]&0xf) != rcode {
			b.Fatalf("answer ok=%v %x", ok, out)
		}
		if _, ok := dnswire.Finish(out, 0, q, true, int(q.UDPSize)); !ok {
			b.Fatal("Finish refused")
		}
	}
}

func BenchmarkAnswerA(b *testing.B) { benchmarkAnswer(b, client, "web.", dns.TypeA, dns.RcodeSuccess) }

func BenchmarkAnswerZoneA(b *testing.B) {
	benchmarkAnswer(b, client, "web.proj.docker.", dns.TypeA, dns.RcodeSuccess)
}

func BenchmarkAnswerNXDOMAIN(b *testing.B) {
	benchmarkAnswer(b, client, "nope.docker.", dns.TypeA, dns.RcodeNameError)
}

func BenchmarkAnswerEmptyNonTerminal(b *testing.B) {
	benchmarkAnswer(b, client, "_tcp.web.docker.", dns.TypeA, dns.RcodeSuccess)
}

func BenchmarkAnswerSRV(b *testing.B) {
	benchmarkAnswer(b, client, "_http._tcp.web.", dns.TypeSRV, dns.RcodeSuccess)
}
