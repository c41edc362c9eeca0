package dnswire

import "github.com/miekg/dns"

// Header flag bits.
const (
	flagQR = 0x8000
	FlagAA = 0x0400
	flagTC = 0x0200
	flagRD = 0x0100
	flagRA = 0x0080
	flagAD = 0x0020
	flagCD = 0x0010
)

// AppendHeader appends a reply header for q with the given rcode and section
// counts, followed by q's question exactly as the client sent it. The flags
// are Finish's to set.
func AppendHeader(dst []byte, q *Query, rcode int, an, ns, ar uint16) []byte {
	dst = AppendUint16(dst, q.ID)
	dst = AppendUint16(dst, flagQR|uint16(rcode&0xf))
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

// AppendRecordHeader appends the fixed part of an IN record whose owner is
// the question name.
func AppendRecordHeader(dst []byte, rrtype uint16, ttl uint32, rdlen uint16) []byte {
	dst = AppendUint16(dst, QuestionPointer)
	dst = AppendUint16(dst, rrtype)
	dst = AppendUint16(dst, dns.ClassINET)
	dst = AppendUint32(dst, ttl)
	return AppendUint16(dst, rdlen)
}

// OPTLen is the size of the OPT record appendOPT writes.
const OPTLen = 11

// appendOPT appends an EDNS0 OPT record with no options; extRcode is the
// upper eight bits of a 12-bit rcode.
func appendOPT(dst []byte, extRcode uint8, do bool) []byte {
	dst = append(dst, 0)                 // root owner
	dst = AppendUint16(dst, dns.TypeOPT) // type
	dst = AppendUint16(dst, MaxUDPSize)  // class: our UDP payload size
	dst = append(dst, extRcode, 0)       // extended rcode, version 0
	if do {
		dst = append(dst, 0x80, 0)
	} else {
		dst = append(dst, 0, 0)
	}
	return AppendUint16(dst, 0) // no options
}

// Limit is the largest reply q may get: its UDP size, or 65535 over TCP.
func Limit(q *Query, tcp bool) int {
	if tcp {
		return dns.MaxMsgSize
	}
	return int(q.UDPSize)
}

// Finish turns msg, a reply for q that starts at msg[start:] (header,
// question, records, and no OPT), into what the client gets, in place:
//   - the client's ID, RD and CD, RA always, AA only when authoritative
//     (sidedns's own data; never for forwarded or cached answers), QR set,
//     opcode and Z cleared; AD and TC as the reply had them;
//   - the question name exactly as the client wrote it (0x20 case);
//   - cut to limit with TC set when answer or authority records had to go;
//   - an OPT record exactly when the query had one (RFC 6891 7).
//
// It returns msg unchanged in length when the reply is unusable (no
// question of q's length), and ok false; the caller answers SERVFAIL.
func Finish(msg []byte, start int, q *Query, authoritative bool, limit int) (out []byte, ok bool) {
	r := msg[start:]
	if len(r) < headerLen+len(q.Raw)+4 || be16(r[4:]) != 1 {
		return msg, false
	}
	if end, ok := SkipName(r, headerLen); !ok || end != headerLen+len(q.Raw) {
		return msg, false
	}
	flags := be16(r[2:])&(flagTC|flagAD|0xf) | flagQR | flagRA
	if q.RD {
		flags |= flagRD
	}
	if q.CD {
		flags |= flagCD
	}
	if authoritative {
		flags |= FlagAA
	}
	r[0], r[1] = byte(q.ID>>8), byte(q.ID)
	r[2], r[3] = byte(flags>>8), byte(flags)
	copy(r[headerLen:], q.Raw)

	room := limit
	if q.EDNS {
		room -= OPTLen
	}
	if len(r) > room {
		msg = msg[:start+truncate(r, room)]
	}
	if q.EDNS {
		msg = appendOPT(msg, 0, q.DO)
		r = msg[start:]
		ar := be16(r[10:]) + 1
		r[10], r[11] = byte(ar>>8), byte(ar)
	}
	return msg, true
}

// truncate cuts the reply r to whole records within room bytes and returns
// its new length. Compression pointers only point backwards, so the records
// kept stay valid. TC is set when an answer or authority record went;
// losing only additional records does not need it (RFC 2181 9).
func truncate(r []byte, room int) int {
	counts := [3]uint16{be16(r[6:]), be16(r[8:]), be16(r[10:])}
	off, _ := SkipName(r, headerLen)
	off += 4
	var kept [3]uint16
	cut := false
	for sec := range counts {
		for range counts[sec] {
			end, ok := SkipName(r, off)
			if !ok || end+10 > len(r) {
				cut = true
				break
			}
			end += 10 + int(be16(r[end+8:]))
			if end > room || end > len(r) {
				cut = true
				break
			}
			off = end
			kept[sec]++
		}
		if cut {
			if sec < 2 {
				r[2] |= flagTC >> 8
			}
			break
		}
	}
	if off > room { // not even the question fits: cannot happen above 512
		off = room
	}
	for sec, n := range kept {
		r[6+2*sec], r[7+2*sec] = byte(n>>8), byte(n)
	}
	return off
}

// AppendError appends the reply to q with rcode and no records: the question
// when q has one, and an OPT when the query had EDNS. An extended rcode
// (BADVERS) goes into the OPT, as RFC 6891 6.1.3 says.
func AppendError(dst []byte, q *Query, rcode int) []byte {
	start := len(dst)
	var qd uint16
	if q.HasQuestion {
		qd = 1
	}
	// The opcode is copied back (RFC 1035 4.1.1), NOTIMP replies included.
	flags := flagQR | flagRA | uint16(q.Opcode&0xf)<<11 | uint16(rcode&0xf)
	if q.RD {
		flags |= flagRD
	}
	if q.CD {
		flags |= flagCD
	}
	dst = AppendUint16(dst, q.ID)
	dst = AppendUint16(dst, flags)
	dst = AppendUint16(dst, qd)
	dst = AppendUint16(dst, 0)
	dst = AppendUint16(dst, 0)
	dst = AppendUint16(dst, 0)
	if q.HasQuestion {
		dst = append(dst, q.Raw...)
		dst = AppendUint16(dst, q.Type)
		dst = AppendUint16(dst, q.Class)
	}
	if q.EDNS {
		dst = appendOPT(dst, uint8(rcode>>4), q.DO)
		dst[start+11] = 1
	}
	return dst
}

// AppendTruncated appends an empty NOERROR reply to q with TC set: "ask again
// over TCP". The rate limiter's slip sends it.
func AppendTruncated(dst []byte, q *Query) []byte {
	start := len(dst)
	dst = AppendError(dst, q, 0)
	dst[start+2] |= flagTC >> 8
	return dst
}
