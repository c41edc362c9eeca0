// Package dnswire reads DNS queries and writes replies straight in wire form,
// without allocating. Every query, over UDP or TCP, is read by Parse, and
// every reply is completed by Finish: the rules for what a query may look
// like and for the header a client gets back live here and nowhere else.
// See docs/ARCHITECTURE.md.
package dnswire

import (
	"errors"

	"github.com/miekg/dns"
)

// Parse errors, from "send nothing" to "send this rcode". The Query is
// filled as far as parsing got: ID, flags and EDNS always when the header
// was read, the question when HasQuestion.
var (
	// ErrNotQuery: shorter than a header, or a response. Dropped unanswered,
	// so that two servers cannot bounce packets at each other.
	ErrNotQuery = errors.New("not a query")
	// ErrFormat: the question or a record count is broken (cut short, a
	// count that lies, a compression pointer in the question, two OPTs, an
	// OPT not owned by the root). FORMERR.
	ErrFormat = errors.New("malformed query")
	// ErrNotImplemented: an opcode other than QUERY. NOTIMP.
	ErrNotImplemented = errors.New("opcode not implemented")
	// ErrBadVersion: an EDNS version above 0 (RFC 6891 6.1.3). BADVERS.
	ErrBadVersion = errors.New("unsupported EDNS version")
)

const (
	headerLen   = 12
	maxNameWire = 255
	// OddByte stands in Name for any octet that no table name can hold,
	// an escaped dot included, so such a label never matches a name and
	// never splits into two.
	OddByte = 0xff
)

// Query is the parsed head of a query. Raw points into the packet.
type Query struct {
	ID     uint16
	Opcode uint8
	RD     bool
	CD     bool // checking disabled (RFC 4035)
	Type   uint16
	Class  uint16
	// Raw is the question name in wire form, as received (0x20 case intact).
	Raw []byte
	// HasQuestion is set once exactly one question was read whole.
	HasQuestion bool

	EDNS        bool
	EDNSVersion uint8
	UDPSize     uint16 // the client's EDNS size capped at MaxUDPSize, or 512 without EDNS
	DO          bool

	nameBuf [255]byte
	nameLen int
}

// Name is the lower-cased presentation form of the question name without the
// trailing dot ("web.appnet"); empty for the root. Octets other than letters,
// digits, '-', '_' and '*' read as OddByte. It is valid until the next Parse
// into q. (A method, not a field: a field pointing into q itself would make
// every Query escape to the heap.)
func (q *Query) Name() []byte { return q.nameBuf[:q.nameLen] }

// Parse reads pkt into q. A query has one question, no answer or authority
// records, TC clear, and in the additional section at most one OPT, owned by
// the root; other additional records are skipped, and so are bytes after
// the last record.
func Parse(pkt []byte, q *Query) error {
	*q = Query{ID: q.ID} // keeps nameBuf's storage; every field is set below
	q.nameLen, q.UDPSize = 0, 512
	if len(pkt) < headerLen || pkt[2]&0x80 != 0 {
		return ErrNotQuery
	}
	q.ID = be16(pkt)
	q.Opcode = pkt[2] >> 3 & 0xf
	q.RD = pkt[2]&0x01 != 0
	q.CD = pkt[3]&0x10 != 0
	qd, an, ns, ar := be16(pkt[4:]), be16(pkt[6:]), be16(pkt[8:]), be16(pkt[10:])
	// Walk every section even when the query is already known to be bad,
	// so that the error reply carries an OPT when the query had one (RFC
	// 6891 7). A section that cannot be walked ends the walk.
	var err error
	off := headerLen
	if qd == 1 {
		if off, err = q.readQuestion(pkt, off); err != nil {
			off = -1
		}
	} else {
		err = ErrFormat // one question, no more, no fewer
		off = skipQuestions(pkt, off, int(qd))
	}
	off = skipRecords(pkt, off, int(an)+int(ns))
	if off >= 0 {
		if aerr := q.readAdditional(pkt, off, int(ar)); err == nil {
			err = aerr
		}
	} else if err == nil {
		err = ErrFormat // the counts lie
	}
	// A query with TC set, answers or authority records is not one we
	// know how to read (unbound: FORMERR too).
	if err == nil && (an != 0 || ns != 0 || pkt[2]&0x02 != 0) {
		err = ErrFormat
	}
	if q.Opcode != dns.OpcodeQuery {
		return ErrNotImplemented
	}
	if err != nil {
		return err
	}
	if q.EDNS && q.EDNSVersion != 0 {
		return ErrBadVersion
	}
	return nil
}

// readQuestion reads one uncompressed question at off.
func (q *Query) readQuestion(pkt []byte, off int) (int, error) {
	start, n := off, 0
	for {
		if off >= len(pkt) {
			return 0, ErrFormat
		}
		l := int(pkt[off])
		off++
		if l == 0 {
			break
		}
		if l > 63 { // a compression pointer has no place in a question
			return 0, ErrFormat
		}
		// RFC 1035 2.3.4: at most 255 octets in wire form, the root included.
		if off+l > len(pkt) || off+l+1-start > maxNameWire {
			return 0, ErrFormat
		}
		if n > 0 {
			q.nameBuf[n] = '.'
			n++
		}
		for _, c := range pkt[off : off+l] {
			switch {
			case c >= 'A' && c <= 'Z':
				c += 'a' - 'A'
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_', c == '*':
			default:
				c = OddByte
			}
			q.nameBuf[n] = c
			n++
		}
		off += l
	}
	if off+4 > len(pkt) {
		return 0, ErrFormat
	}
	q.Raw = pkt[start:off]
	q.nameLen = n
	q.Type, q.Class = be16(pkt[off:]), be16(pkt[off+2:])
	q.HasQuestion = true
	return off + 4, nil
}

// readAdditional walks ar records from off, taking EDNS from the OPT record.
func (q *Query) readAdditional(pkt []byte, off, ar int) error {
	var err error
	for range ar {
		owner := off
		end, ok := SkipName(pkt, off)
		if !ok || end+10 > len(pkt) {
			return ErrFormat
		}
		rrtype, rdlen := be16(pkt[end:]), int(be16(pkt[end+8:]))
		rdata := end + 10
		if rdata+rdlen > len(pkt) {
			return ErrFormat
		}
		if rrtype == dns.TypeOPT {
			// RFC 6891 6.1.1: one OPT at most, owned by the root. A bad one
			// still makes the FORMERR an EDNS reply.
			if q.EDNS {
				return ErrFormat
			}
			if end != owner+1 {
				err = ErrFormat
			}
			q.EDNS = true
			q.UDPSize = ReplySize(be16(pkt[end+2:]))
			q.EDNSVersion = pkt[end+5]
			q.DO = pkt[end+6]&0x80 != 0
			for opts := pkt[rdata : rdata+rdlen]; len(opts) > 0; {
				if len(opts) < 4 || 4+int(be16(opts[2:])) > len(opts) {
					return ErrFormat
				}
				opts = opts[4+int(be16(opts[2:])):]
			}
		}
		off = rdata + rdlen
	}
	// Bytes after the last record are ignored, as unbound and BIND do.
	return err
}

// skipQuestions returns the offset past n questions at off, or -1.
func skipQuestions(pkt []byte, off, n int) int {
	for range n {
		end, ok := SkipName(pkt, off)
		if !ok || end+4 > len(pkt) {
			return -1
		}
		off = end + 4
	}
	return off
}

// skipRecords returns the offset past n records at off, or -1 (also when off
// is -1 already).
func skipRecords(pkt []byte, off, n int) int {
	for range n {
		if off < 0 {
			return -1
		}
		end, ok := SkipName(pkt, off)
		if !ok || end+10 > len(pkt) {
			return -1
		}
		off = end + 10 + int(be16(pkt[end+8:]))
		if off > len(pkt) {
			return -1
		}
	}
	return off
}

// SkipName returns the offset just past the name at off, following no
// pointer (a pointer ends a name).
func SkipName(w []byte, off int) (int, bool) {
	for off < len(w) {
		l := w[off]
		switch {
		case l == 0:
			return off + 1, true
		case l&0xC0 == 0xC0:
			return off + 2, off+2 <= len(w)
		case l&0xC0 != 0:
			return 0, false
		}
		off += 1 + int(l)
	}
	return 0, false
}

func be16(b []byte) uint16 { return uint16(b[0])<<8 | uint16(b[1]) }

// AppendUint16 appends v in network order.
func AppendUint16(b []byte, v uint16) []byte { return append(b, byte(v>>8), byte(v)) }

// AppendUint32 appends v in network order.
func AppendUint32(b []byte, v uint32) []byte {
	return append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// MaxUDPSize caps UDP replies whatever buffer the client claims: larger
// replies fragment (DNS flag day 2020) and would make us a better amplifier.
// A client that needs more is told TC and retries over TCP. It is also the
// buffer size sidedns advertises, to clients and to upstreams.
const MaxUDPSize = 1232

// ReplySize is the largest UDP reply for a client that advertised size:
// at least 512 (RFC 6891), at most MaxUDPSize.
func ReplySize(size uint16) uint16 { return min(max(size, 512), MaxUDPSize) }
