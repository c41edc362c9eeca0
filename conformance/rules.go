package main

import (
	"slices"
	"strings"
)

// The differences between unbound and sidedns that sidedns's rules (issue 9,
// docs/ARCHITECTURE.md) allow, in one place. A rule applies to some cases (nil:
// every case); it turns unbound's reply into the reply the rule allows,
// choosing among the allowed alternatives by looking at sidedns's reply. A
// difference is explained when unbound's reply, after every rule that applies,
// is sidedns's reply. A rule that cannot make the two meet changes nothing.
type rule struct {
	id     string
	reason string
	cases  []string
	adjust func(u, s summary) summary
}

var (
	malformed = []string{"qd0", "qd2", "qd2-short", "cut-name", "cut-type", "an-lie", "ar-lie", "fwd-pointer",
		"fwd-pointer-ext", "pointer-loop", "label-0x40", "short-header", "qr-in-query", "edns-qd2"}
	nonIN    = []string{"ch-zone", "ch-fwd", "hs-zone", "hs-fwd", "none-fwd", "any-class-zone", "any-class-fwd", "edns-ch"}
	chaosID  = []string{"ch-version.bind", "ch-hostname.bind", "ch-id.server", "ch-version.server"}
	metaType = []string{"type-opt", "type-opt-fwd", "type-tsig", "type-tsig-fwd", "type-tkey", "type-tkey-fwd",
		"type-maila", "type-maila-fwd", "type-mailb", "type-mailb-fwd", "edns-meta"}
	transfer = []string{"axfr-zone", "axfr-ext", "ixfr-zone", "ixfr-ext", "ixfr-zone-bare", "ixfr-ext-bare", "axfr-edns"}
	opcodes  = []string{"opcode-notify", "opcode-notify-fwd", "opcode-update", "opcode-status", "opcode-iquery", "edns-notimp"}
)

var rules = []rule{
	{
		id: "ra-always",
		reason: "sidedns sets RA on every reply (issue 9, Header); unbound leaves it out of the replies of its early " +
			"request checks (FORMERR, NOTIMP, REFUSED for AXFR/IXFR)",
		adjust: func(u, s summary) summary {
			if u.none == "" && !hasFlag(u, "ra") {
				u.flags = addFlag(u.flags, "ra")
			}
			return u
		},
	},
	{
		id: "rd-copied",
		reason: "RD is copied from the query (issue 9, Header); unbound 1.17.1 sets RD=1 on a cache hit asked " +
			"with RD=0 (the cached message's flag)",
		cases: []string{"fwd-rd0-cached"},
		adjust: func(u, s summary) summary {
			u.flags = dropFlag(u.flags, "rd")
			return u
		},
	},
	{
		id: "rd0-miss",
		reason: "RD=0 for a name in neither the zone nor the cache is never recursed (RFC 1034 4.3.1); unbound " +
			"(allow_snoop) says SERVFAIL, unbound (allow) REFUSED: either will do",
		cases: []string{"fwd-rd0-miss", "edns-rd0-miss"},
		adjust: func(u, s summary) summary {
			return withRcode(u, s, "SERVFAIL", "REFUSED")
		},
	},
	{
		id: "formerr-body",
		reason: "a FORMERR reply carries the question when it parses (or none) and one OPT when the query had EDNS; " +
			"unbound sends back the query's own sections (two OPTs, an IXFR's SOA, a question that does not parse)",
		adjust: func(u, s summary) summary {
			if u.rcode != "FORMERR" || s.rcode != "FORMERR" || len(s.answer)+len(s.ns)+len(s.extra) > 0 {
				return u
			}
			if len(s.question) == 0 || (len(s.question) == 1 && slices.Equal(s.question, u.question[:min(1, len(u.question))])) {
				u.question = s.question
			}
			if strings.Contains(u.opt, "+") && (s.opt == "" || s.opt == "OPT v0") {
				u.opt = s.opt // two OPTs: no valid EDNS to answer with
			}
			u.answer, u.ns, u.extra = nil, nil, nil
			return u
		},
	},
	{
		id:     "formerr-no-opt",
		reason: "a query whose ARCOUNT lies has no OPT to answer: its FORMERR may leave the OPT out (unbound adds one)",
		cases:  []string{"ar-lie"},
		adjust: func(u, s summary) summary {
			if u.rcode == "FORMERR" && s.rcode == "FORMERR" && s.opt == "" {
				u.opt = ""
			}
			return u
		},
	},
	{
		id:     "malformed-drop",
		reason: "a question that does not parse, or whose counts lie, gets FORMERR or is dropped (issue 9)",
		cases:  malformed,
		adjust: func(u, s summary) summary {
			if s.none == "no reply" || s.none == "closed" {
				return s
			}
			return u
		},
	},
	{
		id: "non-in-class",
		reason: "classes other than IN get REFUSED or NOTIMP and are never forwarded (issue 9); unbound says " +
			"SERVFAIL for class ANY on a local name and forwards class ANY for others",
		cases: nonIN,
		adjust: func(u, s summary) summary {
			if r := withRcode(u, s, "REFUSED", "NOTIMP"); r.rcode == s.rcode {
				r.answer, r.ns, r.extra = nil, nil, nil
				return r
			}
			return u
		},
	},
	{
		id:     "chaos-identity",
		reason: "CH TXT version.bind, hostname.bind, id.server (and version.server) are answered by sidedns with its own TXT, or REFUSED (issue 9)",
		cases:  chaosID,
		adjust: func(u, s summary) summary {
			if s.rcode == "REFUSED" && len(s.answer) == 0 {
				u.rcode, u.answer = "REFUSED", nil
			}
			if s.rcode == "NOERROR" && len(s.answer) == 1 && len(u.answer) == 1 &&
				strings.HasPrefix(s.answer[0], strings.Split(u.question[0], " ")[0]+" CH TXT ") {
				u.answer = s.answer
			}
			return u
		},
	},
	{
		id:     "meta-type",
		reason: "meta qtypes (OPT, TSIG, TKEY, MAILA, MAILB) get REFUSED or NOTIMP (issue 9), or FORMERR as unbound says; never forwarded",
		cases:  metaType,
		adjust: func(u, s summary) summary { return withRcode(u, s, "REFUSED", "NOTIMP") },
	},
	{
		id: "transfer",
		reason: "AXFR and IXFR get REFUSED for every name, never forwarded (issue 9); unbound says FORMERR to an " +
			"IXFR that carries the client's SOA (its NSCOUNT check) and echoes that SOA",
		cases: transfer,
		adjust: func(u, s summary) summary {
			if u.rcode == "FORMERR" && s.rcode == "REFUSED" && len(s.ns) == 0 {
				u.rcode, u.ns = "REFUSED", nil
			}
			return u
		},
	},
	{
		id:     "opcode",
		reason: "NOTIFY may get NOTIMP (unbound: REFUSED); a NOTIMP reply may leave out the question",
		cases:  opcodes,
		adjust: func(u, s summary) summary {
			if s.rcode == "NOTIMP" && (u.rcode == "REFUSED" || u.rcode == "NOTIMP") {
				u.rcode = "NOTIMP"
				if len(s.question) == 0 {
					u.question = nil
				}
			}
			return u
		},
	},
	{
		id:     "any-rfc8482",
		reason: "ANY gets the RFC 8482 minimal answer, one HINFO \"RFC8482\" (docs/ARCHITECTURE.md); unbound's static zone says NODATA",
		cases:  []string{"zone-any", "fwd-any"},
		adjust: func(u, s summary) summary {
			if u.rcode == "NOERROR" && s.rcode == "NOERROR" && len(s.answer) == 1 && len(s.ns) == 0 &&
				strings.Contains(s.answer[0], ` HINFO "RFC8482" `) {
				u.answer, u.ns = s.answer, nil
			}
			return u
		},
	},
	{
		id:     "srv-glue",
		reason: "sidedns adds the SRV target's address records to the additional section; unbound's local-data does not",
		cases:  []string{"zone-srv"},
		adjust: func(u, s summary) summary {
			for _, rr := range s.extra {
				f := strings.Fields(rr)
				if len(f) < 3 || (f[1] != "A" && f[1] != "AAAA") || !srvTarget(u.answer, f[0]) {
					return u
				}
			}
			u.extra = s.extra
			return u
		},
	},
	{
		id:     "ns-glue",
		reason: "sidedns adds the address of ns.<zone>, the name its NS record gives, to the additional section (glue); unbound's local-data has no such record to add",
		cases:  []string{"zone-apex-ns"},
		adjust: func(u, s summary) summary {
			for _, rr := range s.extra {
				f := strings.Fields(rr)
				if len(f) < 3 || (f[1] != "A" && f[1] != "AAAA") || f[0] != "ns.docker." {
					return u
				}
			}
			u.extra = s.extra
			return u
		},
	},
	{
		id:     "tc-in-query",
		reason: "TC=1 in a query means nothing (RFC 1035 defines it for replies): sidedns may answer as if it were clear; unbound says FORMERR",
		cases:  []string{"tc-in-query", "edns-tc"},
		adjust: func(u, s summary) summary {
			if u.rcode == "FORMERR" && s.rcode == "NOERROR" && len(s.answer) == 1 && s.answer[0] == "web.docker. A 10.210.0.10" {
				u.rcode, u.answer = s.rcode, s.answer
				u.flags = addFlag(u.flags, "aa")
			}
			return u
		},
	},
}

// neverForwarded are the cases whose question sidedns must not send upstream,
// whatever unbound does (unbound forwards class ANY, as class IN, even for a
// zone name): issue 9 says so for each kind.
var neverForwarded = slices.Concat(transfer, nonIN, chaosID, metaType, malformed,
	[]string{"fwd-rd0-miss", "edns-rd0-miss", "fwd-rd0-cached", "opcode-notify-fwd", "edns-v1-fwd", "edns-two-opt-fwd"})

// explain returns the ids of the rules that turn unbound's reply u into
// sidedns's reply s for this case, or "" when they do not.
func explain(caseID string, u, s summary) string {
	applies := func(r rule) bool { return r.cases == nil || slices.Contains(r.cases, caseID) }
	apply := func(skip string) (summary, []string) {
		a, used := u, []string(nil)
		for _, r := range rules {
			if r.id == skip || !applies(r) {
				continue
			}
			b := r.adjust(a, s)
			// A rule may allow a question not to be forwarded, never to be forwarded.
			b.upstream = b.upstream && a.upstream
			if b.long() != a.long() {
				a = b
				used = append(used, r.id)
			}
		}
		return a, used
	}
	a, used := apply("")
	if a.long() != s.long() || len(used) == 0 {
		return ""
	}
	// Name only the rules the explanation needs.
	var need []string
	for _, id := range used {
		if b, _ := apply(id); b.long() != s.long() {
			need = append(need, id)
		}
	}
	if len(need) == 0 {
		need = used[:1]
	}
	return strings.Join(need, "+")
}

func hasFlag(s summary, f string) bool { return slices.Contains(strings.Split(s.flags, ","), f) }

// flagOrder is the order summarize writes flags in.
var flagOrder = []string{"qr", "aa", "tc", "rd", "ra", "z", "ad", "cd"}

func addFlag(flags, f string) string {
	set := strings.Split(flags, ",")
	var out []string
	for _, o := range flagOrder {
		if o == f || slices.Contains(set, o) {
			out = append(out, o)
		}
	}
	return strings.Join(out, ",")
}

func dropFlag(flags, f string) string {
	var out []string
	for _, o := range strings.Split(flags, ",") {
		if o != f {
			out = append(out, o)
		}
	}
	return strings.Join(out, ",")
}

// withRcode gives u sidedns's rcode, and no forward, when that rcode is one
// of the allowed ones and sidedns's sections are empty.
func withRcode(u, s summary, allowed ...string) summary {
	if u.none == "" && slices.Contains(allowed, s.rcode) && len(s.answer)+len(s.ns)+len(s.extra) == 0 {
		u.rcode = s.rcode
		u.answer, u.ns, u.extra = nil, nil, nil
		u.upstream = false // these answers are all sidedns's own
	}
	return u
}

// srvTarget reports whether one of the SRV records in answer points at name.
func srvTarget(answer []string, name string) bool {
	for _, rr := range answer {
		f := strings.Fields(rr)
		if len(f) == 6 && f[1] == "SRV" && strings.EqualFold(f[5], name) {
			return true
		}
	}
	return false
}
