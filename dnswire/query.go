// Package dnswire reads the header and question of a DNS query straight from
// its wire bytes, without allocating, for the UDP fast path. Anything it does
// not fully understand is reported as unsupported, and the caller falls back
// to miekg/dns.
package dnswire

import "errors"

// ErrUnsupported means the packet is valid enough to hand to the slow path but
// is not a plain query the fast path can answer.
var ErrUnsupported = errors.New("not a plain query")

// ErrMalformed means the packet cannot be a DNS query at all.
var ErrMalformed = errors.New("malformed query")

const (
	headerLen   = 12
	maxNameWire = 255
)

// Query is the parsed head of a query. Name and Raw point into the packet.
type Query struct {
	ID    uint16
	RD    bool
	CD    bool // checking disabled (RFC 4035)
	Type  uint16
	Class uint16
	// Raw is the question name in wire form, as received (0x20 case intact).
	Raw []byte

	EDNS    bool
	UDPSize uint16 // the client's EDNS size capped at MaxUDPSize, or 512 without EDNS
	DO      bool

	nameBuf [255]byte
	nameLen int
}

// Name is the lower-cased presentation form of the question name without the
// trailing dot ("web.appnet"); empty for the root. It is valid until the next
// Parse into q. (A method, not a field: a field pointing into q itself would
// make every Query escape to the heap.)
func (q *Query) Name() []byte { return q.nameBuf[:q.nameLen] }

// ARCount is the additional-record count of a reply that echoes EDNS when
// the query had it.
func (q *Query) ARCount() uint16 {
	if q.EDNS {
		return 1
	}
	return 0
}

// Parse reads pkt into q. It accepts one question and at most one additional
// record, which must be an OPT for the root.
func Parse(pkt []byte, q *Query) error {
	if len(pkt) < headerLen {
		return ErrMalformed
	}
	q.ID = uint16(pkt[0])<<8 | uint16(pkt[1])
	flags := uint16(pkt[2])<<8 | uint16(pkt[3])
	if flags&0x8000 != 0 { // a response, not a query
		return ErrMalformed
	}
	if flags&0x7800 != 0 || flags&0x0200 != 0 { // opcode other than QUERY, or TC
		return ErrUnsupported
	}
	q.RD = flags&0x0100 != 0
	q.CD = flags&0x0010 != 0
	qd, an, ns, ar := be16(pkt[4:]), be16(pkt[6:]), be16(pkt[8:]), be16(pkt[10:])
	if qd != 1 || an != 0 || ns != 0 || ar > 1 {
		return ErrUnsupported
	}
	off, err := q.readName(pkt, headerLen)
	if err != nil {
		return err
	}
	if off+4 > len(pkt) {
		return ErrMalformed
	}
	q.Type, q.Class = be16(pkt[off:]), be16(pkt[off+2:])
	off += 4
	q.EDNS, q.UDPSize, q.DO = false, 512, false
	if ar == 1 {
		// OPT: root name, type 41, class = UDP size, TTL = ext-rcode/version/flags.
		if off+11 > len(pkt) || pkt[off] != 0 || be16(pkt[off+1:]) != 41 {
			return ErrUnsupported
		}
		q.EDNS = true
		q.UDPSize = ReplySize(be16(pkt[off+3:]))
		if pkt[off+6] != 0 { // EDNS version other than 0
			return ErrUnsupported
		}
		q.DO = pkt[off+7]&0x80 != 0
		rdlen := int(be16(pkt[off+9:]))
		off += 11
		if off+rdlen != len(pkt) {
			return ErrMalformed
		}
		for opts := pkt[off:]; len(opts) > 0; {
			if len(opts) < 4 || 4+int(be16(opts[2:])) > len(opts) {
				return ErrMalformed
			}
			opts = opts[4+int(be16(opts[2:])):]
		}
		off += rdlen
	}
	if off != len(pkt) {
		return ErrMalformed
	}
	return nil
}

// readName reads an uncompressed question name starting at off.
func (q *Query) readName(pkt []byte, off int) (int, error) {
	start, n := off, 0
	for {
		if off >= len(pkt) {
			return 0, ErrMalformed
		}
		l := int(pkt[off])
		off++
		if l == 0 {
			break
		}
		if l > 63 { // a compression pointer has no place in a question
			return 0, ErrMalformed
		}
		// RFC 1035 2.3.4: at most 255 octets in wire form, the root included.
		if off+l > len(pkt) || off+l+1-start > maxNameWire {
			return 0, ErrMalformed
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
				// Anything else needs care in presentation form: leave it to miekg/dns.
				return 0, ErrUnsupported
			}
			q.nameBuf[n] = c
			n++
		}
		off += l
	}
	q.Raw = pkt[start:off]
	q.nameLen = n
	return off, nil
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
// A client that needs more is told TC and retries over TCP.
const MaxUDPSize = 1232

// EDNSSize is the buffer size sidedns advertises, to clients and upstreams.
const EDNSSize = 1232

// ReplySize is the largest UDP reply for a client that advertised size:
// at least 512 (RFC 6891), at most MaxUDPSize.
func ReplySize(size uint16) uint16 { return min(max(size, 512), MaxUDPSize) }

// Header flag bits for AppendHeader.
const (
	FlagAA = 0x0400
	FlagRA = 0x0080
)

// AppendHeader appends a response header for q, with the given flags, rcode
// and section counts, followed by q's question exactly as the client sent it.
func AppendHeader(dst []byte, q *Query, flags uint16, rcode int, an, ns, ar uint16) []byte {
	f := 0x8000 | flags | uint16(rcode&0xf)
	if q.RD {
		f |= 0x0100
	}
	dst = AppendUint16(dst, q.ID)
	dst = AppendUint16(dst, f)
	dst = AppendUint16(dst, 1)
	dst = AppendUint16(dst, an)
	dst = AppendUint16(dst, ns)
	dst = AppendUint16(dst, ar)
	dst = append(dst, q.Raw...)
	dst = AppendUint16(dst, q.Type)
	return AppendUint16(dst, q.Class)
}

// QuestionPointer is a compression pointer to the question name, which always
// starts right after the header.
const QuestionPointer = 0xC000 | headerLen

// AppendRecordHeader appends an answer record's fixed part whose owner is
// the question name.
func AppendRecordHeader(dst []byte, rrtype uint16, ttl uint32, rdlen uint16) []byte {
	dst = AppendUint16(dst, QuestionPointer)
	dst = AppendUint16(dst, rrtype)
	dst = AppendUint16(dst, 1) // class IN
	dst = AppendUint32(dst, ttl)
	return AppendUint16(dst, rdlen)
}

// OPTLen is the size of the OPT record AppendOPT writes.
const OPTLen = 11

// AppendOPT appends an EDNS0 OPT record with no options.
func AppendOPT(dst []byte, udpSize uint16, do bool) []byte {
	dst = append(dst, 0)             // root owner
	dst = AppendUint16(dst, 41)      // OPT
	dst = AppendUint16(dst, udpSize) // class: UDP payload size
	dst = append(dst, 0, 0)          // extended rcode, version
	if do {
		dst = append(dst, 0x80, 0)
	} else {
		dst = append(dst, 0, 0)
	}
	return AppendUint16(dst, 0) // no options
}
