package dnswire

import (
	"errors"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func pack(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParse(t *testing.T) {
	plain := new(dns.Msg).SetQuestion("Web.AppNet.", dns.TypeA)
	edns := new(dns.Msg).SetQuestion("web.", dns.TypeAAAA)
	edns.SetEdns0(4096, true)
	small := new(dns.Msg).SetQuestion("web.", dns.TypeA)
	small.SetEdns0(100, false)
	twoQ := new(dns.Msg).SetQuestion("a.", dns.TypeA)
	twoQ.Question = append(twoQ.Question, twoQ.Question[0])
	notify := new(dns.Msg).SetNotify("a.")
	resp := new(dns.Msg).SetQuestion("a.", dns.TypeA)
	resp.Response = true
	root := new(dns.Msg).SetQuestion(".", dns.TypeNS)
	dotted := new(dns.Msg).SetQuestion(`a\.b.`, dns.TypeA)
	badvers := new(dns.Msg).SetQuestion("a.", dns.TypeA)
	badvers.SetEdns0(1232, false)
	badvers.IsEdns0().SetVersion(1)
	twoOPT := new(dns.Msg).SetQuestion("a.", dns.TypeA)
	twoOPT.SetEdns0(1232, false)
	twoOPT.Extra = append(twoOPT.Extra, twoOPT.Extra[0])
	ownedOPT := new(dns.Msg).SetQuestion("a.", dns.TypeA)
	ownedOPT.SetEdns0(1232, false)
	ownedOPT.Extra[0].Header().Name = "a."
	lyingAN := pack(t, plain)
	lyingAN[7] = 1
	forward := []byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 20, 0, 1, 0, 1, 0, 0, 0, 0}

	tests := []struct {
		name    string
		pkt     []byte
		err     error
		qname   string
		qtype   uint16
		udpSize uint16
		do      bool
	}{
		{name: "plain", pkt: pack(t, plain), qname: "web.appnet", qtype: dns.TypeA, udpSize: 512},
		{name: "edns capped", pkt: pack(t, edns), qname: "web", qtype: dns.TypeAAAA, udpSize: MaxUDPSize, do: true},
		{name: "edns below 512", pkt: pack(t, small), qname: "web", qtype: dns.TypeA, udpSize: 512},
		{name: "root", pkt: pack(t, root), qname: "", qtype: dns.TypeNS, udpSize: 512},
		{name: "escaped dot reads as one odd label", pkt: pack(t, dotted), qname: "a\xffb", qtype: dns.TypeA, udpSize: 512},
		{name: "two questions", pkt: pack(t, twoQ), err: ErrFormat},
		{name: "notify", pkt: pack(t, notify), err: ErrNotImplemented},
		{name: "edns version 1", pkt: pack(t, badvers), err: ErrBadVersion},
		{name: "two OPTs", pkt: pack(t, twoOPT), err: ErrFormat},
		{name: "OPT not at the root", pkt: pack(t, ownedOPT), err: ErrFormat},
		{name: "answer count lies", pkt: lyingAN, err: ErrFormat},
		{name: "forward pointer in the question", pkt: forward, err: ErrFormat},
		{name: "response", pkt: pack(t, resp), err: ErrNotQuery},
		{name: "short", pkt: []byte{1, 2, 3}, err: ErrNotQuery},
		{name: "trailing garbage is ignored", pkt: append(pack(t, plain), 0), qname: "web.appnet", qtype: dns.TypeA, udpSize: 512},
		{name: "TC set in a query", pkt: func() []byte { b := pack(t, plain); b[2] |= 2; return b }(), err: ErrFormat},
		{name: "cut question", pkt: pack(t, plain)[:20], err: ErrFormat},
		{name: "name over 255 octets", pkt: longName(4, 63), err: ErrFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q Query
			err := Parse(tt.pkt, &q)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if string(q.Name()) != tt.qname || q.Type != tt.qtype || q.UDPSize != tt.udpSize || q.DO != tt.do {
				t.Fatalf("got name %q type %d size %d do %v", q.Name(), q.Type, q.UDPSize, q.DO)
			}
		})
	}
}

func TestAppendHeaderRoundTrips(t *testing.T) {
	req := new(dns.Msg).SetQuestion("wEb.", dns.TypeA)
	req.Id = 777
	req.SetEdns0(1232, true)
	var q Query
	if err := Parse(pack(t, req), &q); err != nil {
		t.Fatal(err)
	}
	b := AppendHeader(nil, &q, dns.RcodeSuccess, 1, 0, 0)
	b = AppendRecordHeader(b, dns.TypeA, 5, 4)
	b = append(b, 10, 0, 0, 1)
	b, ok := Finish(b, 0, &q, true, Limit(&q, false))
	if !ok {
		t.Fatal("Finish refused its own header")
	}
	var m dns.Msg
	if err := m.Unpack(b); err != nil {
		t.Fatal(err)
	}
	if m.Id != 777 || !m.Response || !m.Authoritative || !m.RecursionDesired || !m.RecursionAvailable || m.Question[0].Name != "wEb." {
		t.Fatalf("header %v question %v", m.MsgHdr, m.Question)
	}
	if a, ok := m.Answer[0].(*dns.A); !ok || a.A.String() != "10.0.0.1" || a.Hdr.Name != "wEb." || a.Hdr.Ttl != 5 {
		t.Fatalf("answer %v", m.Answer)
	}
	if opt := m.IsEdns0(); opt == nil || !opt.Do() || opt.UDPSize() != 1232 {
		t.Fatalf("opt %v", opt)
	}
}

// FuzzParse checks that Parse never panics and agrees with miekg/dns on
// every packet it accepts.
func FuzzParse(f *testing.F) {
	for _, m := range []*dns.Msg{
		new(dns.Msg).SetQuestion("web.appnet.", dns.TypeA),
		new(dns.Msg).SetQuestion("_http._tcp.web.docker.", dns.TypeSRV),
		new(dns.Msg).SetQuestion("2.0.17.172.in-addr.arpa.", dns.TypePTR),
	} {
		f.Add(pack(f, m))
		m.SetEdns0(1232, true)
		f.Add(pack(f, m))
	}
	f.Add(longName(4, 63))
	f.Add(longName(4, 62))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var q Query
		err := Parse(pkt, &q)
		if err != nil {
			if errors.Is(err, ErrNotQuery) {
				return
			}
			// Every other error gets a reply, which must be a valid message.
			var m dns.Msg
			if uerr := m.Unpack(AppendError(nil, &q, dns.RcodeFormatError)); uerr != nil {
				t.Fatalf("error reply does not unpack: %v", uerr)
			}
			return
		}
		var m dns.Msg
		if m.Unpack(pkt) != nil {
			// Parse skips additional records it has no use for, without
			// reading their rdata as miekg/dns does.
			return
		}
		want := oddName(m.Question[0].Name)
		if len(q.Raw) > maxNameWire {
			t.Fatalf("accepted a %d-octet name", len(q.Raw))
		}
		if string(q.Name()) != want || q.Type != m.Question[0].Qtype || q.ID != m.Id {
			t.Fatalf("Parse: %q %d %d, miekg: %q %d %d", q.Name(), q.Type, q.ID, want, m.Question[0].Qtype, m.Id)
		}
	})
}

// longName packs a query whose name has n labels of l octets, by hand, since
// miekg/dns refuses to pack names over 255 octets.
func longName(n, l int) []byte {
	b := []byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	for range n {
		b = append(b, byte(l))
		b = append(b, strings.Repeat("a", l)...)
	}
	return append(b, 0, 0, 1, 0, 1)
}

func TestParseNameLengthLimit(t *testing.T) {
	var q Query
	// 4 labels of 62 octets: 4*63 + 1 = 253 octets, the longest that fits with room.
	if err := Parse(longName(4, 62), &q); err != nil {
		t.Fatalf("253-octet name: %v", err)
	}
	// 4 labels of 63 octets: 257 octets, over RFC 1035's 255.
	if err := Parse(longName(4, 63), &q); !errors.Is(err, ErrFormat) {
		t.Fatalf("257-octet name: err = %v, want ErrFormat", err)
	}
}

// oddName is what Name should give for a presentation name from miekg/dns.
func oddName(name string) string {
	var b []byte
	labels := dns.SplitDomainName(name)
	for i, l := range labels {
		if i > 0 {
			b = append(b, '.')
		}
		raw := make([]byte, 64)
		n, err := dns.PackDomainName(l+".", raw, 0, nil, false)
		if err != nil || n < 2 {
			return "?"
		}
		for _, c := range raw[1 : n-1] {
			switch {
			case c >= 'A' && c <= 'Z':
				c += 'a' - 'A'
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_', c == '*':
			default:
				c = OddByte
			}
			b = append(b, c)
		}
	}
	return string(b)
}

func TestFinish(t *testing.T) {
	// A forwarded reply with the upstream's ID, AA and no RA, 40 A records.
	req := new(dns.Msg).SetQuestion("Big.Example.", dns.TypeA)
	req.Id = 4242
	req.CheckingDisabled = true
	up := new(dns.Msg).SetReply(req)
	up.Id, up.Authoritative, up.RecursionAvailable, up.CheckingDisabled = 1, true, false, false
	up.Question[0].Name = "big.example."
	for i := range 40 {
		up.Answer = append(up.Answer, &dns.A{Hdr: dns.RR_Header{Name: "big.example.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: []byte{192, 0, 2, byte(i)}})
	}
	up.Extra = append(up.Extra, &dns.A{Hdr: dns.RR_Header{Name: "extra.example.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: []byte{192, 0, 2, 1}})
	up.Compress = true
	body := pack(t, up)

	tests := []struct {
		name    string
		edns    bool
		tcp     bool
		answers int
		tc      bool
	}{
		{name: "udp 512", answers: 30, tc: true},
		{name: "udp edns", edns: true, answers: 40, tc: false},
		{name: "tcp", tcp: true, answers: 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := req.Copy()
			if tt.edns {
				r.SetEdns0(4096, false)
			}
			var q Query
			if err := Parse(pack(t, r), &q); err != nil {
				t.Fatal(err)
			}
			prefix := []byte("xx")
			out, ok := Finish(append(prefix, body...), len(prefix), &q, false, Limit(&q, tt.tcp))
			if !ok {
				t.Fatal("Finish refused a good reply")
			}
			if len(out)-len(prefix) > Limit(&q, tt.tcp) {
				t.Fatalf("reply of %d bytes over the limit %d", len(out)-len(prefix), Limit(&q, tt.tcp))
			}
			var m dns.Msg
			if err := m.Unpack(out[len(prefix):]); err != nil {
				t.Fatal(err)
			}
			if m.Id != 4242 || m.Authoritative || !m.RecursionAvailable || !m.CheckingDisabled || !m.RecursionDesired || m.Question[0].Name != "Big.Example." {
				t.Fatalf("header %+v question %v", m.MsgHdr, m.Question)
			}
			if len(m.Answer) != tt.answers || m.Truncated != tt.tc {
				t.Fatalf("%d answers, TC %v; want %d, %v", len(m.Answer), m.Truncated, tt.answers, tt.tc)
			}
			if (m.IsEdns0() != nil) != tt.edns {
				t.Fatalf("OPT present %v, want %v", m.IsEdns0() != nil, tt.edns)
			}
		})
	}
}

func TestAppendError(t *testing.T) {
	bad := new(dns.Msg).SetQuestion("a.", dns.TypeA)
	bad.SetEdns0(1232, true)
	bad.IsEdns0().SetVersion(1)
	var q Query
	if err := Parse(pack(t, bad), &q); !errors.Is(err, ErrBadVersion) {
		t.Fatalf("err = %v", err)
	}
	var m dns.Msg
	if err := m.Unpack(AppendError(nil, &q, dns.RcodeBadVers)); err != nil {
		t.Fatal(err)
	}
	if m.Rcode != dns.RcodeBadVers || m.IsEdns0() == nil || !m.RecursionAvailable || len(m.Question) != 1 {
		t.Fatalf("reply %v", &m)
	}
}
