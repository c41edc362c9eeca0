package resolver

import (
	"slices"
	"testing"

	"github.com/miekg/dns"
	"github.com/sidedns/sidedns/dnswire"
)

// The fast path must give the same answers as Resolve, or decline.
func TestAppendAnswerMatchesResolve(t *testing.T) {
	tests := []struct {
		src, name string
		qtype     uint16
		edns      bool
		fast      bool // whether the fast path answers
	}{
		{client, "web.", dns.TypeA, false, true},
		{client, "WeB.", dns.TypeA, true, true},
		{client, "six.", dns.TypeAAAA, false, true},
		{client, "web.", dns.TypeAAAA, false, false}, // NODATA
		{client, "flaky.", dns.TypeA, false, true},
		{client, "allbad.", dns.TypeA, false, true},
		{"172.22.0.10", "db.", dns.TypeA, false, true},
		{client, "web.proj.docker.", dns.TypeA, true, true},
		{host, "multi.other.", dns.TypeA, false, true},
		{client, "nope.docker.", dns.TypeA, false, false}, // NXDOMAIN
		{client, "example.test.", dns.TypeA, false, false},
		{outer, "web.", dns.TypeA, false, false},
		{client, "web.", dns.TypeMX, false, false},
	}
	r := newTestResolver(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name+dns.TypeToString[tt.qtype], func(t *testing.T) {
			req := new(dns.Msg)
			req.SetQuestion(tt.name, tt.qtype)
			req.Id = 4242
			if tt.edns {
				req.SetEdns0(1232, true)
			}
			pkt, _ := req.Pack()
			var q dnswire.Query
			if err := dnswire.Parse(pkt, &q); err != nil {
				t.Fatal(err)
			}
			out, ok := r.AppendAnswer(nil, &q, addr(tt.src))
			if ok != tt.fast {
				t.Fatalf("fast path answered = %v, want %v", ok, tt.fast)
			}
			if !ok {
				return
			}
			var fast dns.Msg
			if err := fast.Unpack(out); err != nil {
				t.Fatalf("unpack fast reply: %v", err)
			}
			slow, _ := r.Resolve(req, addr(tt.src), 512)
			if fast.Id != 4242 || fast.Rcode != slow.Rcode || fast.Authoritative != slow.Authoritative ||
				fast.RecursionDesired != slow.RecursionDesired || fast.Question[0] != req.Question[0] {
				t.Errorf("header/question differ:\nfast %v\nslow %v", fast.MsgHdr, slow.MsgHdr)
			}
			if got, want := rdata(fast.Answer), rdata(slow.Answer); !slices.Equal(got, want) {
				t.Errorf("answers differ: fast %q slow %q", got, want)
			}
			for i := range fast.Answer {
				if fast.Answer[i].Header().Ttl != slow.Answer[0].Header().Ttl || fast.Answer[i].Header().Name != tt.name {
					t.Errorf("record header %v", fast.Answer[i].Header())
				}
			}
			if (fast.IsEdns0() != nil) != tt.edns {
				t.Errorf("EDNS in reply = %v, want %v", fast.IsEdns0() != nil, tt.edns)
			}
		})
	}
}

func TestAppendAnswerDeclinesOversize(t *testing.T) {
	r := New(Options{})
	top := Topology{}
	for i := range 40 {
		top.Containers = append(top.Containers, Container{ID: id("cd" + itoa2(i)), Name: "r" + itoa2(i),
			Endpoints: []Endpoint{ep("big", "10.9.0."+itoa2(i+10), "many")}})
	}
	r.Publish(top)
	req := new(dns.Msg)
	req.SetQuestion("many.", dns.TypeA)
	pkt, _ := req.Pack()
	var q dnswire.Query
	if err := dnswire.Parse(pkt, &q); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.AppendAnswer(nil, &q, addr(host)); ok {
		t.Fatal("fast path answered 40 A records in 512 bytes; it must leave truncation to Resolve")
	}
}

func BenchmarkAppendAnswer(b *testing.B) {
	r := newTestResolver(b, Options{})
	req := new(dns.Msg)
	req.SetQuestion("web.", dns.TypeA)
	pkt, _ := req.Pack()
	src := addr(client)
	var q dnswire.Query
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		if err := dnswire.Parse(pkt, &q); err != nil {
			b.Fatal(err)
		}
		if _, ok := r.AppendAnswer(buf[:0], &q, src); !ok {
			b.Fatal("not answered")
		}
	}
}
