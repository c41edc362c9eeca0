package main

import (
	"encoding/binary"
	"strings"

	"github.com/miekg/dns"
)

// tcase is one question asked of both servers. packets returns the packets
// to send, in order, on fresh connections; only the reply to the last one is
// compared (the earlier ones warm a cache). fresh is a name under test. that
// no earlier case or protocol asked, so a miss is really a miss.
type tcase struct {
	id      string
	desc    string
	udpOnly bool
	// pipelined: over TCP only, every packet goes on one connection at once,
	// and the summary is the order of the replies.
	pipelined bool
	packets   func(fresh string) [][]byte
}

// q builds a query with RD set, as stub resolvers send it.
func q(name string, qtype uint16, mods ...func(*dns.Msg)) *dns.Msg {
	m := new(dns.Msg)
	m.Id = dns.Id()
	m.RecursionDesired = true
	m.Question = []dns.Question{{Name: name, Qtype: qtype, Qclass: dns.ClassINET}}
	for _, f := range mods {
		f(m)
	}
	return m
}

func pack(m *dns.Msg) []byte {
	b, err := m.Pack()
	if err != nil {
		panic(err) // cases are fixed data
	}
	return b
}

func one(b []byte) func(string) [][]byte { return func(string) [][]byte { return [][]byte{b} } }

func oneMsg(m *dns.Msg) func(string) [][]byte { return one(pack(m)) }

var (
	noRD   = func(m *dns.Msg) { m.RecursionDesired = false }
	withCD = func(m *dns.Msg) { m.CheckingDisabled = true }
	edns   = func(m *dns.Msg) { m.SetEdns0(1232, false) }
)

func class(c uint16) func(*dns.Msg) { return func(m *dns.Msg) { m.Question[0].Qclass = c } }

func opcode(o int) func(*dns.Msg) { return func(m *dns.Msg) { m.Opcode = o } }

func ednsVersion(v uint8) func(*dns.Msg) {
	return func(m *dns.Msg) {
		m.SetEdns0(1232, false)
		m.IsEdns0().SetVersion(v)
	}
}

// withOPT appends an OPT with the given owner (a second one if the query has one).
func withOPT(owner string) func(*dns.Msg) {
	return func(m *dns.Msg) {
		o := &dns.OPT{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeOPT}}
		o.SetUDPSize(1232)
		m.Extra = append(m.Extra, o)
	}
}

// ixfrSOA puts the client's SOA in the authority section, as an IXFR query carries it.
func ixfrSOA(name string) func(*dns.Msg) {
	return func(m *dns.Msg) {
		m.Ns = []dns.RR{&dns.SOA{
			Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeSOA, Class: dns.ClassINET},
			Ns:  "ns." + name, Mbox: "hostmaster." + name, Serial: 0,
		}}
	}
}

// header is a 12-byte DNS header with RD set and the given counts.
func header(id uint16, qd, an, ns, ar uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, id)
	b = append(b, 0x01, 0x00) // RD
	for _, c := range []uint16{qd, an, ns, ar} {
		b = binary.BigEndian.AppendUint16(b, c)
	}
	return b
}

var qWeb = []byte("\x03web\x06docker\x00\x00\x01\x00\x01") // web.docker. A IN

func cases() []tcase {
	fwd := func(mods ...func(*dns.Msg)) func(string) [][]byte {
		return func(fresh string) [][]byte { return [][]byte{pack(q(fresh, dns.TypeA, mods...))} }
	}
	warmThen := func(mods ...func(*dns.Msg)) func(string) [][]byte {
		return func(fresh string) [][]byte {
			return [][]byte{pack(q(fresh, dns.TypeA)), pack(q(fresh, dns.TypeA, mods...))}
		}
	}
	local := func(name string, qtype uint16, mods ...func(*dns.Msg)) func(string) [][]byte {
		return oneMsg(q(name, qtype, mods...))
	}
	raw := func(b []byte) func(string) [][]byte { return one(b) }
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	setBits := func(b []byte, byte2, byte3 byte) []byte {
		c := append([]byte(nil), b...)
		c[2] |= byte2
		c[3] |= byte3
		return c
	}
	webA := pack(q("web.docker.", dns.TypeA))

	return []tcase{
		// Forwarding and the cache.
		{id: "fwd-a", desc: "forwarded A, a miss", packets: fwd()},
		{id: "fwd-a-cached", desc: "the same A again, from the cache", packets: warmThen()},
		{id: "fwd-a-edns", desc: "forwarded A with EDNS", packets: fwd(edns)},
		{id: "fwd-rd0-cached", desc: "RD=0 for a cached forwarded name", packets: warmThen(noRD)},
		{id: "fwd-rd0-miss", desc: "RD=0 for a forwarded name not in the cache", packets: fwd(noRD)},
		{id: "fwd-cd", desc: "CD=1 on a forwarded miss", packets: fwd(withCD)},
		{id: "fwd-nodata", desc: "forwarded TXT (NODATA upstream)", packets: func(fresh string) [][]byte {
			return [][]byte{pack(q(fresh, dns.TypeTXT))}
		}},
		{id: "fwd-refused-edns", desc: "upstream REFUSED (a fresh name outside test.), EDNS query",
			packets: func(fresh string) [][]byte {
				return [][]byte{pack(q(strings.TrimSuffix(fresh, "test.")+"invalid-tld.", dns.TypeA, edns))}
			}},
		{id: "fwd-0x20", desc: "mixed-case forwarded name echoed", packets: func(fresh string) [][]byte {
			return [][]byte{pack(q(mixCase(fresh), dns.TypeA))}
		}},

		// The local zone.
		{id: "zone-a", desc: "web.docker A", packets: local("web.docker.", dns.TypeA)},
		{id: "zone-a-rd0", desc: "web.docker A with RD=0", packets: local("web.docker.", dns.TypeA, noRD)},
		{id: "zone-nx-rd0", desc: "nope.docker A with RD=0", packets: local("nope.docker.", dns.TypeA, noRD)},
		{id: "zone-a-cd", desc: "web.docker A with CD=1", packets: local("web.docker.", dns.TypeA, withCD)},
		{id: "zone-a-edns", desc: "web.docker A with EDNS", packets: local("web.docker.", dns.TypeA, edns)},
		{id: "zone-0x20", desc: "WeB.DoCkEr A: case echoed", packets: local("WeB.DoCkEr.", dns.TypeA)},
		{id: "zone-net", desc: "web.appnet.docker A", packets: local("web.appnet.docker.", dns.TypeA)},
		{id: "zone-service", desc: "api.shop.docker A (two replicas)", packets: local("api.shop.docker.", dns.TypeA)},
		{id: "zone-aaaa", desc: "web.docker AAAA: NODATA", packets: local("web.docker.", dns.TypeAAAA)},
		{id: "zone-txt", desc: "web.docker TXT: NODATA", packets: local("web.docker.", dns.TypeTXT)},
		{id: "zone-srv", desc: "_http._tcp.web.docker SRV", packets: local("_http._tcp.web.docker.", dns.TypeSRV)},
		{id: "zone-ent-srv", desc: "_tcp.web.docker A: empty non-terminal", packets: local("_tcp.web.docker.", dns.TypeA)},
		{id: "zone-ent-net", desc: "appnet.docker A: empty non-terminal", packets: local("appnet.docker.", dns.TypeA)},
		{id: "zone-ent-project", desc: "shop.docker A: empty non-terminal", packets: local("shop.docker.", dns.TypeA)},
		{id: "zone-nx", desc: "nope.docker A: NXDOMAIN", packets: local("nope.docker.", dns.TypeA)},
		{id: "zone-nx-edns", desc: "nope.docker A with EDNS", packets: local("nope.docker.", dns.TypeA, edns)},
		{id: "zone-nx-deep", desc: "a.b.nope.docker A", packets: local("a.b.nope.docker.", dns.TypeA)},
		{id: "zone-nx-below", desc: "x.web.docker A: below a name", packets: local("x.web.docker.", dns.TypeA)},
		{id: "zone-escaped-dot", desc: `web\.x.docker A (one label "web.x")`, packets: local(`web\.x.docker.`, dns.TypeA)},
		{id: "zone-escaped-dot2", desc: `web\.appnet.docker A`, packets: local(`web\.appnet.docker.`, dns.TypeA)},
		{id: "zone-apex-soa", desc: "docker SOA", packets: local("docker.", dns.TypeSOA)},
		{id: "zone-apex-ns", desc: "docker NS", packets: local("docker.", dns.TypeNS)},
		{id: "zone-ns-name", desc: "ns.docker A: the name server the NS record names", packets: local("ns.docker.", dns.TypeA)},
		{id: "zone-apex-a", desc: "docker A: NODATA", packets: local("docker.", dns.TypeA)},
		{id: "zone-any", desc: "web.docker ANY", packets: local("web.docker.", dns.TypeANY)},
		{id: "fwd-any", desc: "ANY for a forwarded name", packets: func(fresh string) [][]byte {
			return [][]byte{pack(q(fresh, dns.TypeANY))}
		}},

		// EDNS.
		{id: "edns-v1-zone", desc: "EDNS version 1, zone name", packets: local("web.docker.", dns.TypeA, ednsVersion(1))},
		{id: "edns-v1-fwd", desc: "EDNS version 1, forwarded name", packets: fwd(ednsVersion(1))},
		{id: "edns-two-opt", desc: "two OPT records", packets: local("web.docker.", dns.TypeA, edns, withOPT("."))},
		{id: "edns-two-opt-fwd", desc: "two OPT records, forwarded name", packets: fwd(edns, withOPT("."))},
		{id: "edns-opt-owner", desc: "OPT owned by web.docker., not the root", packets: local("web.docker.", dns.TypeA, withOPT("web.docker."))},
		{id: "edns-ch", desc: "EDNS on a REFUSED reply (class CH)", packets: local("web.docker.", dns.TypeA, class(dns.ClassCHAOS), edns)},
		{id: "edns-notimp", desc: "EDNS on a NOTIMP reply (opcode UPDATE)", packets: local("docker.", dns.TypeSOA, opcode(dns.OpcodeUpdate), edns)},
		{id: "edns-meta", desc: "EDNS on a meta-type reply (TSIG)", packets: local("web.docker.", dns.TypeTSIG, edns)},
		{id: "edns-tc", desc: "EDNS with TC=1 in the query", packets: func(string) [][]byte {
			b := pack(q("web.docker.", dns.TypeA, edns))
			b[2] |= 0x02
			return [][]byte{b}
		}},
		{id: "edns-rd0-miss", desc: "EDNS, RD=0, forwarded name not cached", packets: fwd(noRD, edns)},
		{id: "edns-qd2", desc: "EDNS with two questions", packets: oneMsg(func() *dns.Msg {
			m := q("web.docker.", dns.TypeA, edns)
			m.Question = append(m.Question, m.Question[0])
			return m
		}())},
		{id: "edns-do", desc: "DO=1 on a zone name", packets: local("web.docker.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(1232, true) })},

		// Zone transfers.
		{id: "axfr-zone", desc: "AXFR docker.", packets: local("docker.", dns.TypeAXFR)},
		{id: "axfr-ext", desc: "AXFR test. (the upstream's zone)", packets: local("test.", dns.TypeAXFR)},
		{id: "ixfr-zone", desc: "IXFR docker.", packets: local("docker.", dns.TypeIXFR, ixfrSOA("docker."))},
		{id: "ixfr-ext", desc: "IXFR test.", packets: local("test.", dns.TypeIXFR, ixfrSOA("test."))},
		{id: "ixfr-zone-bare", desc: "IXFR docker. without the SOA in authority", packets: local("docker.", dns.TypeIXFR)},
		{id: "ixfr-ext-bare", desc: "IXFR test. without the SOA in authority", packets: local("test.", dns.TypeIXFR)},
		{id: "axfr-edns", desc: "AXFR docker. with EDNS", packets: local("docker.", dns.TypeAXFR, edns)},

		// Classes.
		{id: "ch-version.bind", desc: "CH TXT version.bind", packets: local("version.bind.", dns.TypeTXT, class(dns.ClassCHAOS))},
		{id: "ch-hostname.bind", desc: "CH TXT hostname.bind", packets: local("hostname.bind.", dns.TypeTXT, class(dns.ClassCHAOS))},
		{id: "ch-id.server", desc: "CH TXT id.server", packets: local("id.server.", dns.TypeTXT, class(dns.ClassCHAOS))},
		{id: "ch-version.server", desc: "CH TXT version.server", packets: local("version.server.", dns.TypeTXT, class(dns.ClassCHAOS))},
		{id: "ch-zone", desc: "CH A web.docker", packets: local("web.docker.", dns.TypeA, class(dns.ClassCHAOS))},
		{id: "ch-fwd", desc: "CH A, forwarded name", packets: fwd(class(dns.ClassCHAOS))},
		{id: "hs-zone", desc: "HS A web.docker", packets: local("web.docker.", dns.TypeA, class(dns.ClassHESIOD))},
		{id: "hs-fwd", desc: "HS A, forwarded name", packets: fwd(class(dns.ClassHESIOD))},
		{id: "none-fwd", desc: "class NONE A, forwarded name", packets: fwd(class(dns.ClassNONE))},
		{id: "any-class-zone", desc: "class ANY A web.docker", packets: local("web.docker.", dns.TypeA, class(dns.ClassANY))},
		{id: "any-class-fwd", desc: "class ANY A, forwarded name", packets: fwd(class(dns.ClassANY))},

		// Meta types.
		{id: "type-opt", desc: "qtype OPT (41)", packets: local("web.docker.", dns.TypeOPT)},
		{id: "type-opt-fwd", desc: "qtype OPT (41), forwarded name", packets: metaFwd(dns.TypeOPT)},
		{id: "type-tsig", desc: "qtype TSIG (250)", packets: local("web.docker.", dns.TypeTSIG)},
		{id: "type-tsig-fwd", desc: "qtype TSIG, forwarded name", packets: metaFwd(dns.TypeTSIG)},
		{id: "type-tkey", desc: "qtype TKEY (249)", packets: local("web.docker.", dns.TypeTKEY)},
		{id: "type-tkey-fwd", desc: "qtype TKEY, forwarded name", packets: metaFwd(dns.TypeTKEY)},
		{id: "type-maila", desc: "qtype MAILA (254)", packets: local("web.docker.", dns.TypeMAILA)},
		{id: "type-maila-fwd", desc: "qtype MAILA, forwarded name", packets: metaFwd(dns.TypeMAILA)},
		{id: "type-mailb", desc: "qtype MAILB (253)", packets: local("web.docker.", dns.TypeMAILB)},
		{id: "type-mailb-fwd", desc: "qtype MAILB, forwarded name", packets: metaFwd(dns.TypeMAILB)},

		// RFC 7766 6.2.1.1: a slow forward does not hold up a local answer asked after it on the same connection.
		{id: "tcp-pipeline", desc: "one TCP connection: a forward the upstream answers 300 ms late, then web.docker A",
			pipelined: true, packets: func(fresh string) [][]byte {
				return [][]byte{pack(q(slowPrefix+fresh, dns.TypeA)), pack(q("web.docker.", dns.TypeA))}
			}},

		// Header oddities.
		{id: "opcode-notify", desc: "opcode NOTIFY", packets: local("docker.", dns.TypeSOA, opcode(dns.OpcodeNotify))},
		{id: "opcode-update", desc: "opcode UPDATE", packets: local("docker.", dns.TypeSOA, opcode(dns.OpcodeUpdate))},
		{id: "opcode-status", desc: "opcode STATUS", packets: local("web.docker.", dns.TypeA, opcode(dns.OpcodeStatus))},
		{id: "opcode-iquery", desc: "opcode IQUERY", packets: local("web.docker.", dns.TypeA, opcode(dns.OpcodeIQuery))},
		{id: "opcode-notify-fwd", desc: "opcode NOTIFY, forwarded name", packets: metaFwd(dns.TypeSOA, opcode(dns.OpcodeNotify))},
		{id: "tc-in-query", desc: "TC=1 in the query", packets: raw(setBits(webA, 0x02, 0))},
		{id: "qr-in-query", desc: "QR=1 (a response sent as a query)", udpOnly: true, packets: raw(setBits(webA, 0x80, 0))},
		{id: "z-in-query", desc: "Z bit set in the query", packets: raw(setBits(webA, 0, 0x40))},
		{id: "ad-in-query", desc: "AD=1 in the query", packets: raw(setBits(webA, 0, 0x20))},

		// Malformed questions.
		{id: "qd0", desc: "QDCOUNT 0", packets: raw(header(0x1234, 0, 0, 0, 0))},
		{id: "qd2", desc: "QDCOUNT 2 (two questions)", packets: raw(cat(header(0x1234, 2, 0, 0, 0), qWeb, qWeb))},
		{id: "qd2-short", desc: "QDCOUNT 2, one question present", packets: raw(cat(header(0x1234, 2, 0, 0, 0), qWeb))},
		{id: "cut-name", desc: "question cut inside the name", packets: raw(cat(header(0x1234, 1, 0, 0, 0), qWeb[:6]))},
		{id: "cut-type", desc: "question without type and class", packets: raw(cat(header(0x1234, 1, 0, 0, 0), qWeb[:12]))},
		{id: "an-lie", desc: "ANCOUNT 1 with no answer", packets: raw(cat(header(0x1234, 1, 1, 0, 0), qWeb))},
		{id: "ar-lie", desc: "ARCOUNT 1 with no record", packets: raw(cat(header(0x1234, 1, 0, 0, 1), qWeb))},
		{id: "fwd-pointer", desc: "question name is a forward compression pointer", packets: raw(cat(
			header(0x1234, 1, 0, 0, 0), []byte{0xc0, 18, 0, 1, 0, 1}, []byte("\x03web\x06docker\x00")))},
		{id: "fwd-pointer-ext", desc: "forward pointer to a forwarded name", packets: func(fresh string) [][]byte {
			name := make([]byte, 256)
			off, _ := dns.PackDomainName(fresh, name, 0, nil, false)
			return [][]byte{cat(header(0x1234, 1, 0, 0, 0), []byte{0xc0, 18, 0, 1, 0, 1}, name[:off])}
		}},
		{id: "pointer-loop", desc: "question name points to itself", packets: raw(cat(header(0x1234, 1, 0, 0, 0), []byte{0xc0, 12, 0, 1, 0, 1}))},
		{id: "label-0x40", desc: "extended label type 0x40", packets: raw(cat(header(0x1234, 1, 0, 0, 0), []byte{0x41, 'x', 0, 0, 1, 0, 1}))},
		{id: "trailing", desc: "garbage after the question", packets: raw(cat(webA, []byte{1, 2, 3}))},
		{id: "short-header", desc: "7-byte packet", udpOnly: true, packets: raw(webA[:7])},
	}
}

// metaFwd asks qtype for a fresh forwarded name.
func metaFwd(qtype uint16, mods ...func(*dns.Msg)) func(string) [][]byte {
	return func(fresh string) [][]byte { return [][]byte{pack(q(fresh, qtype, mods...))} }
}

// mixCase alternates the case of the letters: 0x20 bit encoding.
func mixCase(s string) string {
	b := []byte(s)
	up := true
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			if up {
				b[i] = c - 32
			}
			up = !up
		}
	}
	return string(b)
}
