package dnsserver

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// exchangeRaw sends pkt over network and returns the raw reply, or nil when
// none came within a short wait.
func exchangeRaw(tb testing.TB, addr, network string, pkt []byte) []byte {
	tb.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if network == "tcp" {
		framed := binary.BigEndian.AppendUint16(nil, uint16(len(pkt)))
		if _, err := c.Write(append(framed, pkt...)); err != nil {
			tb.Fatal(err)
		}
		var size [2]byte
		if _, err := io.ReadFull(c, size[:]); err != nil {
			return nil
		}
		reply := make([]byte, binary.BigEndian.Uint16(size[:]))
		if _, err := io.ReadFull(c, reply); err != nil {
			tb.Fatalf("read tcp reply: %v", err)
		}
		return reply
	}
	if _, err := c.Write(pkt); err != nil {
		tb.Fatal(err)
	}
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func packMsg(tb testing.TB, m *dns.Msg) []byte {
	tb.Helper()
	b, err := m.Pack()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// ruleCases are queries with the reply the rules give them. upstream says
// whether the query may reach the upstream.
func ruleCases(tb testing.TB) []struct {
	name     string
	pkt      []byte
	rcode    int
	answers  int
	aa, opt  bool
	upstream bool
} {
	q := func(name string, qtype uint16, edit func(*dns.Msg)) []byte {
		m := new(dns.Msg).SetQuestion(name, qtype)
		m.Id = 4321
		if edit != nil {
			edit(m)
		}
		return packMsg(tb, m)
	}
	edns := func(m *dns.Msg) { m.SetEdns0(1232, false) }
	plain := q("example.test.", dns.TypeA, nil)
	lying := bytes.Clone(plain)
	lying[7] = 2 // ANCOUNT 2, no answers follow
	cut := plain[:len(plain)-3]
	forwardPtr := []byte{0x10, 0xe1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 20, 0, 1, 0, 1, 0, 0, 0, 0}
	twoOPT := q("example.test.", dns.TypeA, func(m *dns.Msg) { edns(m); m.Extra = append(m.Extra, m.Extra[0]) })
	ownedOPT := q("example.test.", dns.TypeA, func(m *dns.Msg) { edns(m); m.Extra[0].Header().Name = "example.test." })

	return []struct {
		name     string
		pkt      []byte
		rcode    int
		answers  int
		aa, opt  bool
		upstream bool
	}{
		{name: "local", pkt: q("web.docker.", dns.TypeA, nil), answers: 1, aa: true},
		{name: "local edns", pkt: q("web.docker.", dns.TypeA, edns), answers: 1, aa: true, opt: true},
		{name: "forwarded", pkt: q("example.test.", dns.TypeA, nil), answers: 1, upstream: true},
		{name: "forwarded edns cd", pkt: q("example.test.", dns.TypeA, func(m *dns.Msg) { edns(m); m.CheckingDisabled = true }), answers: 1, opt: true, upstream: true},
		{name: "rd=0 local", pkt: q("web.docker.", dns.TypeA, func(m *dns.Msg) { m.RecursionDesired = false }), answers: 1, aa: true},
		{name: "rd=0 not cached", pkt: q("example.test.", dns.TypeA, func(m *dns.Msg) { m.RecursionDesired = false }), rcode: dns.RcodeRefused},
		{name: "edns version 1", pkt: q("example.test.", dns.TypeA, func(m *dns.Msg) { edns(m); m.IsEdns0().SetVersion(1) }), rcode: dns.RcodeBadVers, opt: true},
		{name: "two OPTs", pkt: twoOPT, rcode: dns.RcodeFormatError, opt: true},
		{name: "OPT not at the root", pkt: ownedOPT, rcode: dns.RcodeFormatError, opt: true},
		{name: "TC set in the query", pkt: q("example.test.", dns.TypeA, func(m *dns.Msg) { edns(m); m.Truncated = true }), rcode: dns.RcodeFormatError, opt: true},
		{name: "two questions with EDNS", pkt: q("example.test.", dns.TypeA, func(m *dns.Msg) { edns(m); m.Question = append(m.Question, m.Question[0]) }), rcode: dns.RcodeFormatError, opt: true},
		{name: "AXFR", pkt: q("example.test.", dns.TypeAXFR, nil), rcode: dns.RcodeRefused},
		{name: "AXFR of the zone", pkt: q("docker.", dns.TypeAXFR, nil), rcode: dns.RcodeRefused},
		{name: "IXFR", pkt: q("example.test.", dns.TypeIXFR, edns), rcode: dns.RcodeRefused, opt: true},
		{name: "CHAOS version.bind", pkt: q("version.bind.", dns.TypeTXT, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }), rcode: dns.RcodeRefused},
		{name: "zone name in class HS", pkt: q("web.docker.", dns.TypeA, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassHESIOD }), rcode: dns.RcodeRefused},
		{name: "class ANY", pkt: q("example.test.", dns.TypeA, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassANY }), rcode: dns.RcodeRefused},
		{name: "qtype OPT", pkt: q("example.test.", dns.TypeOPT, nil), rcode: dns.RcodeNotImplemented},
		{name: "qtype TSIG", pkt: q("example.test.", dns.TypeTSIG, nil), rcode: dns.RcodeNotImplemented},
		{name: "qtype TKEY", pkt: q("example.test.", dns.TypeTKEY, nil), rcode: dns.RcodeNotImplemented},
		{name: "qtype MAILA", pkt: q("example.test.", dns.TypeMAILA, nil), rcode: dns.RcodeNotImplemented},
		{name: "qtype MAILB", pkt: q("example.test.", dns.TypeMAILB, nil), rcode: dns.RcodeNotImplemented},
		{name: "NOTIFY", pkt: q("example.test.", dns.TypeSOA, func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }), rcode: dns.RcodeNotImplemented},
		{name: "question cut short", pkt: cut, rcode: dns.RcodeFormatError},
		{name: "answer count lies", pkt: lying, rcode: dns.RcodeFormatError},
		{name: "forward compression pointer", pkt: forwardPtr, rcode: dns.RcodeFormatError},
		{name: "two questions", pkt: q("example.test.", dns.TypeA, func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }), rcode: dns.RcodeFormatError},
		{name: "no question", pkt: q("example.test.", dns.TypeA, func(m *dns.Msg) { m.Question = nil }), rcode: dns.RcodeFormatError},
	}
}

// The protocol rules, over UDP and TCP: the header a client gets back, what
// is refused, and what never reaches the upstream.
func TestProtocolRules(t *testing.T) {
	for _, tt := range ruleCases(t) {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tt.name+"/"+network, func(t *testing.T) {
				up := answerA(1)
				_, addr := startServer(t, Config{Upstream: through(t, up)})
				reply := exchangeRaw(t, addr, network, tt.pkt)
				if reply == nil {
					t.Fatal("no reply")
				}
				var r dns.Msg
				if err := r.Unpack(reply); err != nil {
					t.Fatalf("reply does not unpack: %v", err)
				}
				var id uint16
				var rd, cd bool
				if len(tt.pkt) >= 12 {
					id, rd, cd = binary.BigEndian.Uint16(tt.pkt), tt.pkt[2]&1 != 0, tt.pkt[3]&0x10 != 0
				}
				if r.Rcode != tt.rcode || len(r.Answer) != tt.answers {
					t.Errorf("rcode %s with %d answers, want %s with %d", dns.RcodeToString[r.Rcode], len(r.Answer), dns.RcodeToString[tt.rcode], tt.answers)
				}
				if r.Id != id || !r.Response || !r.RecursionAvailable || r.RecursionDesired != rd || r.CheckingDisabled != cd || r.Authoritative != tt.aa {
					t.Errorf("header id %d qr %v ra %v rd %v cd %v aa %v; want id %d, QR, RA, RD %v, CD %v, AA %v",
						r.Id, r.Response, r.RecursionAvailable, r.RecursionDesired, r.CheckingDisabled, r.Authoritative, id, rd, cd, tt.aa)
				}
				if (r.IsEdns0() != nil) != tt.opt {
					t.Errorf("OPT in reply: %v, want %v", r.IsEdns0() != nil, tt.opt)
				}
				if got := up.calls.Load() > 0; got != tt.upstream {
					t.Errorf("reached the upstream: %v, want %v", got, tt.upstream)
				}
			})
		}
	}
}

// UDP and TCP run the same rules: the same packet gets byte-identical
// replies over both, when the reply fits in UDP.
func TestUDPAndTCPAnswerAlike(t *testing.T) {
	_, addr := startServer(t, Config{Upstream: through(t, answerA(3))})
	for _, tt := range ruleCases(t) {
		u, c := exchangeRaw(t, addr, "udp", tt.pkt), exchangeRaw(t, addr, "tcp", tt.pkt)
		if !bytes.Equal(u, c) {
			t.Errorf("%s: udp reply\n%x\ntcp reply\n%x", tt.name, u, c)
		}
	}
}

// A slow forward does not hold up the local answer queued behind it on the
// same TCP connection (RFC 7766 pipelining).
func TestTCPPipelining(t *testing.T) {
	release := make(chan struct{})
	up := answerA(1)
	inner := up.fn
	up.fn = func(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
		<-release
		return inner(ctx, m)
	}
	_, addr := startServer(t, Config{Upstream: through(t, up)})
	c, err := dns.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	slow := new(dns.Msg).SetQuestion("slow.test.", dns.TypeA)
	fast := new(dns.Msg).SetQuestion("web.docker.", dns.TypeA)
	fast.Id = slow.Id + 1
	for _, m := range []*dns.Msg{slow, fast} {
		if err := c.WriteMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	first, err := c.ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	if first.Id != fast.Id {
		t.Fatalf("first reply is for ID %d, want the local answer (%d) before the slow forward", first.Id, fast.Id)
	}
	close(release)
	second, err := c.ReadMsg()
	if err != nil || second.Id != slow.Id || len(second.Answer) != 1 {
		t.Fatalf("second reply %v, %v; want the forwarded answer", second, err)
	}
}

// overlongQuery is a query for a name of four 63-octet labels (257 octets).
func overlongQuery() []byte {
	b := []byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	for range 4 {
		b = append(b, 63)
		b = append(b, strings.Repeat("a", 63)...)
	}
	return append(b, 0, 0, 1, 0, 1)
}
