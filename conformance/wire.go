package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// reply is what one server sent back to one packet.
type reply struct {
	none string   // why there is no message: "no reply", "closed", "unparseable: ..."
	msg  *dns.Msg // parsed reply
	size int
	idOK bool
	// echoed is set when the reply's body is the query's malformed body sent
	// back unchanged: the counts of its header ("1/0/0/0").
	echoed string
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

// exchange sends pkt to server over proto ("udp" or "tcp") and waits up to
// timeout for one reply. Replies whose ID does not match are kept: the
// summary says so.
func exchange(proto, server string, pkt []byte, timeout time.Duration) reply {
	conn, err := net.DialTimeout(proto, server, timeout)
	if err != nil {
		return reply{none: "dial: " + err.Error()}
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	var buf []byte
	if proto == "udp" {
		if _, err := conn.Write(pkt); err != nil {
			return reply{none: "write: " + err.Error()}
		}
		buf = make([]byte, 65535)
		n, err := conn.Read(buf)
		if err != nil {
			return reply{none: noReply(err)}
		}
		buf = buf[:n]
	} else {
		out := binary.BigEndian.AppendUint16(nil, uint16(len(pkt)))
		if _, err := conn.Write(append(out, pkt...)); err != nil {
			return reply{none: "write: " + err.Error()}
		}
		var l [2]byte
		if _, err := io.ReadFull(conn, l[:]); err != nil {
			return reply{none: noReply(err)}
		}
		buf = make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(conn, buf); err != nil {
			return reply{none: "short TCP reply: " + err.Error()}
		}
	}
	idOK := len(pkt) >= 2 && len(buf) >= 2 && buf[0] == pkt[0] && buf[1] == pkt[1]
	m := new(dns.Msg)
	if err := m.Unpack(buf); err != nil {
		// A reply that echoes a malformed question does not parse; its header still says what it is.
		if len(buf) < 12 || !bytes.Equal(buf[12:], pkt[min(12, len(pkt)):]) {
			return reply{none: fmt.Sprintf("unparseable (%d bytes): %v", len(buf), err), size: len(buf)}
		}
		h := new(dns.Msg)
		hdr := append([]byte(nil), buf[:12]...)
		clear(hdr[4:12])
		if err := h.Unpack(hdr); err != nil {
			return reply{none: fmt.Sprintf("unparseable header: %v", err)}
		}
		return reply{msg: h, size: len(buf), idOK: idOK, echoed: fmt.Sprintf("%d/%d/%d/%d", be16(buf[4:]), be16(buf[6:]), be16(buf[8:]), be16(buf[10:]))}
	}
	return reply{msg: m, size: len(buf), idOK: idOK}
}

// pipeline sends every packet on one TCP connection at once and says in
// which order the replies came, by question name.
func pipeline(server string, pkts [][]byte, timeout time.Duration) summary {
	conn, err := net.DialTimeout("tcp", server, timeout)
	if err != nil {
		return summary{none: "dial: " + err.Error()}
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	var out []byte
	for _, p := range pkts {
		out = binary.BigEndian.AppendUint16(out, uint16(len(p)))
		out = append(out, p...)
	}
	if _, err := conn.Write(out); err != nil {
		return summary{none: "write: " + err.Error()}
	}
	var order []string
	for range pkts {
		var l [2]byte
		if _, err := io.ReadFull(conn, l[:]); err != nil {
			order = append(order, noReply(err))
			break
		}
		buf := make([]byte, binary.BigEndian.Uint16(l[:]))
		m := new(dns.Msg)
		if _, err := io.ReadFull(conn, buf); err != nil || m.Unpack(buf) != nil || len(m.Question) == 0 {
			order = append(order, "bad reply")
			break
		}
		name := strings.ToLower(m.Question[0].Name)
		if strings.HasPrefix(name, slowPrefix) {
			name = "the slow forward"
		}
		order = append(order, name+" "+dns.RcodeToString[m.Rcode])
	}
	return summary{none: "replies in order: " + strings.Join(order, ", ")}
}

func noReply(err error) string {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "no reply"
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		strings.Contains(err.Error(), "connection reset") {
		return "closed"
	}
	if strings.Contains(err.Error(), "connection refused") {
		return "ICMP port unreachable"
	}
	return err.Error()
}

// summary is a reply with what legitimately differs taken out: the ID (only
// whether it was echoed), TTLs, the SOA's RDATA, the EDNS buffer size, and
// the order of records in a section.
type summary struct {
	none     string
	rcode    string
	flags    string
	opcode   string
	idOK     bool
	question []string
	answer   []string
	ns       []string
	extra    []string
	opt      string // "" without OPT
	upstream bool   // the question reached the server's upstream (compare with recorders only)
}

func summarize(r reply) summary {
	if r.msg == nil {
		return summary{none: r.none}
	}
	m := r.msg
	s := summary{
		rcode:  dns.RcodeToString[m.Rcode],
		opcode: dns.OpcodeToString[m.Opcode],
		idOK:   r.idOK,
	}
	if m.Rcode == dns.RcodeBadVers {
		s.rcode = "BADVERS" // miekg/dns names 16 BADSIG, its TSIG meaning
	}
	if r.echoed != "" {
		s.question = []string{"<query body echoed as sent, counts " + r.echoed + ">"}
	}
	if s.rcode == "" {
		s.rcode = fmt.Sprintf("RCODE%d", m.Rcode)
	}
	var f []string
	for _, b := range []struct {
		on   bool
		name string
	}{
		{m.Response, "qr"}, {m.Authoritative, "aa"}, {m.Truncated, "tc"}, {m.RecursionDesired, "rd"},
		{m.RecursionAvailable, "ra"}, {m.Zero, "z"}, {m.AuthenticatedData, "ad"}, {m.CheckingDisabled, "cd"},
	} {
		if b.on {
			f = append(f, b.name)
		}
	}
	s.flags = strings.Join(f, ",")
	for _, q := range m.Question {
		// The name keeps its case: the 0x20 echo is compared.
		s.question = append(s.question, fmt.Sprintf("%s %s %s", q.Name, dns.ClassToString[q.Qclass], typeString(q.Qtype)))
	}
	s.answer = rrStrings(m.Answer)
	s.ns = rrStrings(m.Ns)
	var opts []string
	for _, rr := range m.Extra {
		if o, ok := rr.(*dns.OPT); ok {
			opts = append(opts, optString(o))
			continue
		}
		s.extra = append(s.extra, rrString(rr))
	}
	slices.Sort(s.extra)
	s.opt = strings.Join(opts, " + ")
	return s
}

func typeString(t uint16) string {
	if s, ok := dns.TypeToString[t]; ok {
		return s
	}
	return fmt.Sprintf("TYPE%d", t)
}

func optString(o *dns.OPT) string {
	s := fmt.Sprintf("OPT v%d", o.Version())
	if o.Hdr.Name != "." {
		s += " owner=" + o.Hdr.Name
	}
	if o.Do() {
		s += " do"
	}
	for _, e := range o.Option {
		s += fmt.Sprintf(" opt%d", e.Option())
	}
	return s
}

func rrStrings(rrs []dns.RR) []string {
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rrString(rr))
	}
	slices.Sort(out)
	return out
}

func rrString(rr dns.RR) string {
	h := rr.Header()
	if _, ok := rr.(*dns.SOA); ok {
		return h.Name + " SOA" // serial, timers and mname legitimately differ
	}
	c := dns.Copy(rr)
	c.Header().Ttl = 0
	// "name.\t0\tIN\tA\t1.2.3.4" -> "name. A 1.2.3.4"
	f := strings.Fields(c.String())
	if len(f) >= 4 {
		f = append([]string{f[0]}, f[3:]...)
		if h.Class != dns.ClassINET {
			f = append([]string{f[0], dns.ClassToString[h.Class]}, f[1:]...)
		}
	}
	return strings.Join(f, " ")
}

// short is the table cell: rcode, flags, section counts, OPT.
func (s summary) short() string {
	if s.none != "" {
		return s.none
	}
	out := fmt.Sprintf("%s %s %d/%d/%d", s.rcode, s.flags, len(s.answer), len(s.ns), len(s.extra))
	if s.opcode != "QUERY" {
		out = s.opcode + " " + out
	}
	if s.opt != "" {
		out += " opt"
		if strings.Contains(s.opt, "+") {
			out += "x2"
		}
	}
	if hasSOA(s.ns) {
		out += " soa"
	}
	if !s.idOK {
		out += " ID!"
	}
	if s.upstream {
		out += " [fwd]"
	}
	return out
}

func hasSOA(rrs []string) bool {
	for _, r := range rrs {
		if strings.HasSuffix(r, " SOA") {
			return true
		}
	}
	return false
}

// long is every compared field, one string.
func (s summary) long() string {
	up := ""
	if s.upstream {
		up = " [forwarded upstream]"
	}
	if s.none != "" {
		return s.none + up
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s flags=[%s] id-echoed=%v", s.opcode, s.rcode, s.flags, s.idOK)
	fmt.Fprintf(&b, " qd=%q", s.question)
	fmt.Fprintf(&b, " an=%q", s.answer)
	fmt.Fprintf(&b, " ns=%q", s.ns)
	fmt.Fprintf(&b, " ar=%q", s.extra)
	if s.opt != "" {
		fmt.Fprintf(&b, " edns=[%s]", s.opt)
	} else {
		b.WriteString(" edns=none")
	}
	return b.String() + up
}
