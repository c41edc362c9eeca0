package upstream

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// Transports an upstream can be reached over.
const (
	ProtoUDP = "udp" // UDP, with TCP for truncated replies and TCP clients
	ProtoTCP = "tcp" // TCP only
	ProtoTLS = "tls" // DNS over TLS (RFC 7858) only
)

// Default ports per transport.
const (
	defaultPort    = 53
	defaultTLSPort = 853
)

// dockerDNS is Docker's embedded resolver; forwarding to it from the host
// would at best fail and at worst loop back to us.
var dockerDNS = netip.MustParseAddr("127.0.0.11")

// Spec says where an upstream is and how to reach it.
type Spec struct {
	Proto string // ProtoUDP, ProtoTCP or ProtoTLS
	// Addr is host:port to dial. The host is an IP literal, except for tls,
	// where a host name is allowed.
	Addr string
	// AddrPort is Addr parsed when its host is an IP literal; zero otherwise.
	AddrPort netip.AddrPort
	// ServerName is the name verified in the TLS certificate (tls only).
	// Empty means the host part of Addr.
	ServerName string
}

// String gives the spec in the form ParseSpec accepts, for logs and metrics.
func (s Spec) String() string {
	var b strings.Builder
	if s.Proto != ProtoUDP && s.Proto != "" {
		b.WriteString(s.Proto)
		b.WriteString("://")
	}
	b.WriteString(s.Addr)
	if s.ServerName != "" {
		b.WriteByte('#')
		b.WriteString(s.ServerName)
	}
	return b.String()
}

// tlsServerName is the name the certificate must carry.
func (s Spec) tlsServerName() string {
	if s.ServerName != "" {
		return s.ServerName
	}
	host, _, err := net.SplitHostPort(s.Addr)
	if err != nil {
		return s.Addr
	}
	return host
}

// ParseSpec parses an upstream as given to --upstream:
//
//	1.2.3.4  1.2.3.4:5353  ::1  [::1]:53  udp://1.2.3.4
//	tcp://1.2.3.4[:53]
//	tls://1.2.3.4:853  tls://dns.example[:853]  tls://1.2.3.4:853#server.name
//
// Plain DNS needs an IP literal, since resolving a name would need DNS.
func ParseSpec(s string) (Spec, error) {
	spec, err := parseSpec(strings.TrimSpace(s))
	if err != nil {
		return Spec{}, fmt.Errorf("parse upstream %q: %w", s, err)
	}
	return spec, nil
}

func parseSpec(s string) (Spec, error) {
	if s == "" {
		return Spec{}, errors.New("empty")
	}
	spec := Spec{Proto: ProtoUDP}
	if scheme, rest, ok := strings.Cut(s, "://"); ok {
		switch strings.ToLower(scheme) {
		case "udp", "dns":
			spec.Proto = ProtoUDP
		case "tcp":
			spec.Proto = ProtoTCP
		case "tls":
			spec.Proto = ProtoTLS
		default:
			return Spec{}, fmt.Errorf("unknown scheme %q (want udp, tcp or tls)", scheme)
		}
		s = rest
	}
	if hostport, name, ok := strings.Cut(s, "#"); ok {
		if spec.Proto != ProtoTLS {
			return Spec{}, errors.New("#server.name is only valid with tls://")
		}
		name = strings.TrimSuffix(name, ".")
		if !validHostName(name) {
			return Spec{}, fmt.Errorf("bad TLS server name %q", name)
		}
		spec.ServerName = name
		s = hostport
	}
	if s == "" {
		return Spec{}, errors.New("missing address")
	}
	if strings.ContainsAny(s, "/?@ ") {
		return Spec{}, errors.New("unexpected character in address")
	}
	port := uint16(defaultPort)
	if spec.Proto == ProtoTLS {
		port = defaultTLSPort
	}

	// An IP literal, with or without a port.
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return spec.withIP(ap)
	}
	bare := s
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		bare = s[1 : len(s)-1] // [::1] without a port
	}
	if ip, err := netip.ParseAddr(bare); err == nil {
		return spec.withIP(netip.AddrPortFrom(ip, port))
	}

	// host:port or a bare host.
	host := s
	if h, p, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return Spec{}, fmt.Errorf("bad port %q", p)
		}
		host, port = h, uint16(n)
		if ip, err := netip.ParseAddr(host); err == nil {
			return spec.withIP(netip.AddrPortFrom(ip, port))
		}
	} else if strings.Contains(s, "]") || strings.Count(s, ":") > 0 {
		return Spec{}, fmt.Errorf("bad address %q", s)
	}
	if spec.Proto != ProtoTLS {
		return Spec{}, fmt.Errorf("%q is not an IP address (host names are only allowed with tls://)", host)
	}
	host = strings.TrimSuffix(host, ".")
	if !validHostName(host) {
		return Spec{}, fmt.Errorf("bad host name %q", host)
	}
	spec.Addr = net.JoinHostPort(host, strconv.Itoa(int(port)))
	return spec, nil
}

func (s Spec) withIP(ap netip.AddrPort) (Spec, error) {
	if ap.Port() == 0 {
		return Spec{}, errors.New("port 0")
	}
	if !ap.Addr().IsValid() || ap.Addr().IsUnspecified() {
		return Spec{}, fmt.Errorf("unusable address %s", ap.Addr())
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	s.AddrPort = ap
	s.Addr = ap.String()
	return s, nil
}

// validHostName accepts LDH host names (underscores too, which some
// internal names carry).
func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// FromResolvConf reads the nameservers of a resolv.conf file. It skips
// Docker's 127.0.0.11 and every address in skip (sidedns's own listen
// addresses), so that sidedns never forwards to itself. A skip entry with an
// unspecified IP (0.0.0.0 or ::) matches any local address on its port.
func FromResolvConf(path string, skip []netip.AddrPort) ([]Spec, error) {
	cfg, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("read resolv.conf %s: %w", path, err)
	}
	port, err := strconv.ParseUint(cfg.Port, 10, 16)
	if err != nil || port == 0 {
		port = defaultPort
	}
	var local map[netip.Addr]bool // filled on first need
	isLocal := func(ip netip.Addr) bool {
		if ip.IsLoopback() || ip.IsUnspecified() {
			return true
		}
		if local == nil {
			local = localAddrs()
		}
		return local[ip.WithZone("")]
	}

	var specs []Spec
	for _, ns := range cfg.Servers {
		ip, err := netip.ParseAddr(ns)
		if err != nil {
			continue // resolv.conf allows only IPs; ignore junk like libc does
		}
		ip = ip.Unmap()
		ap := netip.AddrPortFrom(ip, uint16(port))
		if ip == dockerDNS || skipped(ap, skip, isLocal) {
			continue
		}
		spec, err := Spec{Proto: ProtoUDP}.withIP(ap)
		if err != nil {
			continue
		}
		specs = append(specs, spec)
	}
	if len(specs) == 0 {
		return nil, fmt.Errorf("read resolv.conf %s: no usable nameserver (found %d, all skipped)", path, len(cfg.Servers))
	}
	return specs, nil
}

func skipped(ap netip.AddrPort, skip []netip.AddrPort, isLocal func(netip.Addr) bool) bool {
	ip := ap.Addr().WithZone("")
	for _, s := range skip {
		if s.Port() != ap.Port() {
			continue
		}
		sip := s.Addr().Unmap().WithZone("")
		if sip == ip {
			return true
		}
		// A wildcard listener answers on every local address of its port.
		// Both families match: a [::] socket on Linux takes IPv4 too.
		if sip.IsUnspecified() && isLocal(ip) {
			return true
		}
	}
	return false
}

// localAddrs lists the addresses of this host's interfaces.
func localAddrs() map[netip.Addr]bool {
	m := map[netip.Addr]bool{}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return m
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			m[p.Addr().Unmap()] = true
		}
	}
	return m
}
