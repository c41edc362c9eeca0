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
		{name: "two questions", pkt: pack(t, twoQ), err: ErrUnsupported},
		{name: "notify", pkt: pack(t, notify), err: ErrUnsupported},
		{name: "escaped dot", pkt: pack(t, dotted), err: ErrUnsupported},
		{name: "response", pkt: pack(t, resp), err: ErrMalformed},
		{name: "short", pkt: []byte{1, 2, 3}, err: ErrMalformed},
		{name: "trailing garbage", pkt: append(pack(t, plain), 0), err: ErrMalformed},
		{name: "cut question", pkt: pack(t, plain)[:20], err: ErrMalformed},
		{name: "name over 255 octets", pkt: longName(4, 63), err: ErrMalformed},
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
	b := AppendHeader(nil, &q, FlagAA|FlagRA, dns.RcodeSuccess, 1, 0, 1)
	b = AppendRecordHeader(b, dns.TypeA, 5, 4)
	b = append(b, 10, 0, 0, 1)
	b = AppendOPT(b, 1232, true)
	var m dns.Msg
	if err := m.Unpack(b); err != nil {
		t.Fatal(err)
	}
	if m.Id != 777 || !m.Response || !m.Authoritative || !m.RecursionDesired || m.Question[0].Name != "wEb." {
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
		if Parse(pkt, &q) != nil {
			return
		}
		var m dns.Msg
		if err := m.Unpack(pkt); err != nil {
			t.Fatalf("Parse accepted what miekg/dns rejects: %v", err)
		}
		want := strings.ToLower(strings.TrimSuffix(m.Question[0].Name, "."))
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
	if err := Parse(longName(4, 63), &q); !errors.Is(err, ErrMalformed) {
		t.Fatalf("257-octet name: err = %v, want ErrMalformed", err)
	}
}
