package main

import "testing"

// The rules must explain what issue 9 allows and nothing else: a reply from a
// sidedns that keeps the rules passes, a reply that breaks one does not.
func TestExplain(t *testing.T) {
	q := func(name, class, qtype string) []string { return []string{name + " " + class + " " + qtype} }
	webA := q("web.docker.", "IN", "A")
	formerr := summary{opcode: "QUERY", rcode: "FORMERR", flags: "qr,rd", idOK: true, question: webA}
	tests := []struct {
		name, id string
		u, s     summary
		want     bool
	}{
		{"RA added to FORMERR", "qd0",
			summary{opcode: "QUERY", rcode: "FORMERR", flags: "qr,rd", idOK: true},
			summary{opcode: "QUERY", rcode: "FORMERR", flags: "qr,rd,ra", idOK: true}, true},
		{"RD dropped from a FORMERR", "qd0",
			summary{opcode: "QUERY", rcode: "FORMERR", flags: "qr,rd", idOK: true},
			summary{opcode: "QUERY", rcode: "FORMERR", flags: "qr,ra", idOK: true}, false},
		{"malformed query dropped", "fwd-pointer", formerr, summary{none: "no reply"}, true},
		{"malformed query answered", "fwd-pointer", formerr,
			summary{opcode: "QUERY", rcode: "NOERROR", flags: "qr,aa,rd,ra", idOK: true, question: webA,
				answer: []string{"web.docker. A 10.210.0.10"}}, false},
		{"malformed query dropped but forwarded", "fwd-pointer-ext", formerr, summary{none: "no reply", upstream: true}, false},
		{"meta type REFUSED", "type-tsig",
			summary{opcode: "QUERY", rcode: "FORMERR", flags: "qr,rd", idOK: true, question: q("web.docker.", "IN", "TSIG")},
			summary{opcode: "QUERY", rcode: "REFUSED", flags: "qr,rd,ra", idOK: true, question: q("web.docker.", "IN", "TSIG")}, true},
		{"meta type NODATA", "type-tsig",
			summary{opcode: "QUERY", rcode: "FORMERR", flags: "qr,rd", idOK: true, question: q("web.docker.", "IN", "TSIG")},
			summary{opcode: "QUERY", rcode: "NOERROR", flags: "qr,aa,rd,ra", idOK: true, question: q("web.docker.", "IN", "TSIG"),
				ns: []string{"docker. SOA"}}, false},
		{"class ANY REFUSED where unbound forwards", "any-class-fwd",
			summary{opcode: "QUERY", rcode: "NOERROR", flags: "qr,rd,ra", idOK: true, question: q("x.test.", "ANY", "A"),
				answer: []string{"x.test. A 10.0.0.1"}, upstream: true},
			summary{opcode: "QUERY", rcode: "REFUSED", flags: "qr,rd,ra", idOK: true, question: q("x.test.", "ANY", "A")}, true},
		{"version.bind with sidedns's own TXT", "ch-version.bind",
			summary{opcode: "QUERY", rcode: "NOERROR", flags: "qr,rd,ra", idOK: true, question: q("version.bind.", "CH", "TXT"),
				answer: []string{`version.bind. CH TXT "unbound 1.17.1"`}},
			summary{opcode: "QUERY", rcode: "NOERROR", flags: "qr,rd,ra", idOK: true, question: q("version.bind.", "CH", "TXT"),
				answer: []string{`version.bind. CH TXT "sidedns"`}}, true},
		{"version.bind as IN TXT", "ch-version.bind",
			summary{opcode: "QUERY", rcode: "NOERROR", flags: "qr,rd,ra", idOK: true, question: q("version.bind.", "CH", "TXT"),
				answer: []string{`version.bind. CH TXT "unbound 1.17.1"`}},
			summary{opcode: "QUERY", rcode: "NOERROR", flags: "qr,rd,ra", idOK: true, question: q("version.bind.", "CH", "TXT"),
				answer: []string{`version.bind. TXT "sidedns"`}}, false},
		{"IXFR REFUSED where unbound says FORMERR", "ixfr-zone",
			summary{opcode: "QUERY", rcode: "FORMERR", flags: "qr,rd", idOK: true, question: q("docker.", "IN", "IXFR"), ns: []string{"docker. SOA"}},
			summary{opcode: "QUERY", rcode: "REFUSED", flags: "qr,rd,ra", idOK: true, question: q("docker.", "IN", "IXFR")}, true},
		{"AXFR answered NODATA", "axfr-zone",
			summary{opcode: "QUERY", rcode: "REFUSED", flags: "qr,rd", idOK: true, question: q("docker.", "IN", "AXFR")},
			summary{opcode: "QUERY", rcode: "NOERROR", flags: "qr,aa,rd,ra", idOK: true, question: q("docker.", "IN", "AXFR"),
				ns: []string{"docker. SOA"}}, false},
		{"forwarded answer with AA", "fwd-a",
			summary{opcode: "QUERY", rcode: "NOERROR", flags: "qr,rd,ra", idOK: true, question: q("x.test.", "IN", "A"),
				answer: []string{"x.test. A 10.0.0.1"}, upstream: true},
			summary{opcode: "QUERY", rcode: "NOERROR", flags: "qr,aa,rd,ra", idOK: true, question: q("x.test.", "IN", "A"),
				answer: []string{"x.test. A 10.0.0.1"}, upstream: true}, false},
		{"RD=0 cache hit with RD copied", "fwd-rd0-cached",
			summary{opcode: "QUERY", rcode: "NOERROR", flags: "qr,rd,ra", idOK: true, question: q("x.test.", "IN", "A"),
				answer: []string{"x.test. A 10.0.0.1"}},
			summary{opcode: "QUERY", rcode: "NOERROR", flags: "qr,ra", idOK: true, question: q("x.test.", "IN", "A"),
				answer: []string{"x.test. A 10.0.0.1"}}, true},
		{"RD=0 miss REFUSED", "fwd-rd0-miss",
			summary{opcode: "QUERY", rcode: "SERVFAIL", flags: "qr,ra", idOK: true, question: q("x.test.", "IN", "A")},
			summary{opcode: "QUERY", rcode: "REFUSED", flags: "qr,ra", idOK: true, question: q("x.test.", "IN", "A")}, true},
		{"empty non-terminal NXDOMAIN", "zone-ent-srv",
			summary{opcode: "QUERY", rcode: "NOERROR", flags: "qr,aa,rd,ra", idOK: true, question: q("_tcp.web.docker.", "IN", "A"), ns: []string{"docker. SOA"}},
			summary{opcode: "QUERY", rcode: "NXDOMAIN", flags: "qr,aa,rd,ra", idOK: true, question: q("_tcp.web.docker.", "IN", "A"), ns: []string{"docker. SOA"}}, false},
		{"SRV with glue for its target", "zone-srv",
			summary{opcode: "QUERY", rcode: "NOERROR", flags: "qr,aa,rd,ra", idOK: true, question: q("_http._tcp.web.docker.", "IN", "SRV"),
				answer: []string{"_http._tcp.web.docker. SRV 0 0 80 web.docker."}},
			summary{opcode: "QUERY", rcode: "NOERROR", flags: "qr,aa,rd,ra", idOK: true, question: q("_http._tcp.web.docker.", "IN", "SRV"),
				answer: []string{"_http._tcp.web.docker. SRV 0 0 80 web.docker."}, extra: []string{"web.docker. A 10.210.0.10"}}, true},
		{"SRV with an unrelated additional record", "zone-srv",
			summary{opcode: "QUERY", rcode: "NOERROR", flags: "qr,aa,rd,ra", idOK: true, question: q("_http._tcp.web.docker.", "IN", "SRV"),
				answer: []string{"_http._tcp.web.docker. SRV 0 0 80 web.docker."}},
			summary{opcode: "QUERY", rcode: "NOERROR", flags: "qr,aa,rd,ra", idOK: true, question: q("_http._tcp.web.docker.", "IN", "SRV"),
				answer: []string{"_http._tcp.web.docker. SRV 0 0 80 web.docker."}, extra: []string{"db.docker. A 10.210.0.11"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := explain(tt.id, tt.u, tt.s)
			if (got != "") != tt.want {
				t.Errorf("explain(%s) = %q, want explained=%v\n unbound: %s\n sidedns: %s", tt.id, got, tt.want, tt.u.long(), tt.s.long())
			}
		})
	}
}
