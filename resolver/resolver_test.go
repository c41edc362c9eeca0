package resolver

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/dnswire"
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func ep(network, ip4 string, aliases ...string) Endpoint {
	e := Endpoint{NetworkID: "id-" + network, NetworkName: network, Aliases: aliases}
	if ip4 != "" {
		e.IPv4 = addr(ip4)
	}
	return e
}

func id(prefix string) string { return (prefix + strings.Repeat("0", 64))[:64] }

// fixture is a host with three networks, compose projects, health states and ports.
func fixture() Topology {
	v6 := ep("appnet", "172.20.0.30", "six")
	v6.IPv6 = addr("fd00::30")
	return Topology{
		Networks: []Network{
			{ID: "id-appnet", Name: "appnet", Subnets: []netip.Prefix{netip.MustParsePrefix("172.20.0.0/16")}},
			{ID: "id-other", Name: "other", Subnets: []netip.Prefix{netip.MustParsePrefix("172.21.0.0/16")}},
			{ID: "id-shared", Name: "shared", Subnets: []netip.Prefix{netip.MustParsePrefix("172.22.0.0/16")}},
		},
		Containers: []Container{
			{ID: id("aaaa01"), Name: "proj-web-1", Hostname: "webhost1", Project: "proj", Service: "web",
				Ports:     []Port{{Port: 8080, Proto: "tcp"}, {Name: "http", Port: 80, Proto: "tcp"}},
				Endpoints: []Endpoint{ep("appnet", "172.20.0.2", "web", "proj-web-1")}},
			{ID: id("aaaa02"), Name: "proj-web-2", Project: "proj", Service: "web",
				Ports:     []Port{{Port: 8080, Proto: "tcp"}, {Name: "http", Port: 80, Proto: "tcp"}},
				Endpoints: []Endpoint{ep("appnet", "172.20.0.3", "web", "proj-web-2")}},
			{ID: id("cccc01"), Name: "client", Endpoints: []Endpoint{ep("appnet", "172.20.0.10")}},
			{ID: id("dddd01"), Name: "outsider", Endpoints: []Endpoint{ep("other", "172.21.0.10")}},
			{ID: id("eeee01"), Name: "v6", Endpoints: []Endpoint{v6}},
			{ID: id("ffff01"), Name: "sick", Health: HealthUnhealthy, Endpoints: []Endpoint{ep("appnet", "172.20.0.40", "flaky")}},
			{ID: id("ffff02"), Name: "fine", Health: HealthHealthy, Endpoints: []Endpoint{ep("appnet", "172.20.0.41", "flaky")}},
			{ID: id("ffff03"), Name: "bad1", Health: HealthUnhealthy, Endpoints: []Endpoint{ep("appnet", "172.20.0.42", "allbad")}},
			{ID: id("ffff04"), Name: "bad2", Health: HealthStarting, Endpoints: []Endpoint{ep("appnet", "172.20.0.43", "allbad")}},
			{ID: id("ffff05"), Name: "napping", State: StatePaused, Endpoints: []Endpoint{ep("appnet", "172.20.0.44", "pz")}},
			{ID: id("abab01"), Name: "multi", Endpoints: []Endpoint{ep("appnet", "172.20.0.50"), ep("other", "172.21.0.50")}},
			{ID: id("1b1b01"), Name: "p1-db-1", Project: "p1", Service: "db", Endpoints: []Endpoint{ep("shared", "172.22.0.2", "db")}},
			{ID: id("2b2b01"), Name: "p2-db-1", Project: "p2", Service: "db", Endpoints: []Endpoint{ep("shared", "172.22.0.3", "db")}},
			{ID: id("1c1c01"), Name: "p1-app-1", Project: "p1", Service: "app", Endpoints: []Endpoint{ep("shared", "172.22.0.10")}},
			{ID: id("3c3c01"), Name: "p3-app-1", Project: "p3", Service: "app", Endpoints: []Endpoint{ep("shared", "172.22.0.11")}},
			{ID: id("7777aa"), Name: "slow", TTL: 60, Names: []string{"extra.name"}, Endpoints: []Endpoint{ep("appnet", "172.20.0.60")}},
		},
	}
}

func newTestResolver(t testing.TB, opts Options) *Resolver {
	t.Helper()
	r := New(opts)
	r.Publish(fixture())
	return r
}

func ask(t testing.TB, r *Resolver, src, name string, qtype uint16) (*dns.Msg, bool) {
	t.Helper()
	req := new(dns.Msg)
	req.SetQuestion(dns.Fqdn(name), qtype)
	return askMsg(t, r, src, req, 512)
}

// askMsg sends req through Answer and Finish, as the server does, and
// unpacks the reply; ok is false when the resolver forwards the query.
func askMsg(t testing.TB, r *Resolver, src string, req *dns.Msg, limit int) (*dns.Msg, bool) {
	t.Helper()
	pkt, err := req.Pack()
	if err != nil {
		t.Fatal(err)
	}
	var q dnswire.Query
	if err := dnswire.Parse(pkt, &q); err != nil {
		t.Fatalf("parse %v: %v", req.Question, err)
	}
	out, ok := r.Answer(nil, &q, addr(src))
	if !ok {
		return nil, false
	}
	if out, ok = dnswire.Finish(out, 0, &q, true, limit); !ok {
		t.Fatalf("Finish refused the reply to %v", req.Question)
	}
	resp := new(dns.Msg)
	if err := resp.Unpack(out); err != nil {
		t.Fatalf("unpack the reply to %v: %v", req.Question, err)
	}
	return resp, true
}

// rdata renders the answer section as sorted "TYPE rdata" strings, ignoring
// the rotation order.
func rdata(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		out = append(out, dns.TypeToString[rr.Header().Rrtype]+" "+strings.TrimPrefix(rr.String(), rr.Header().String()))
	}
	slices.Sort(out)
	return out
}

const (
	host   = "127.0.0.1"   // unknown source: the admin view
	client = "172.20.0.10" // on appnet only
	outer  = "172.21.0.10" // on other only
)

func TestResolveNames(t *testing.T) {
	r := newTestResolver(t, Options{NSAddrs: []netip.Addr{addr("127.0.0.1"), addr("::1")}})
	tests := []struct {
		name    string
		src     string
		qname   string
		qtype   uint16
		forward bool // not ours
		rcode   int
		answer  []string
	}{
		{name: "container name", src: client, qname: "proj-web-1.", qtype: dns.TypeA, answer: []string{"A 172.20.0.2"}},
		{name: "case", src: client, qname: "PROJ-Web-1.", qtype: dns.TypeA, answer: []string{"A 172.20.0.2"}},
		{name: "alias with two replicas", src: client, qname: "web.", qtype: dns.TypeA, answer: []string{"A 172.20.0.2", "A 172.20.0.3"}},
		{name: "short id", src: client, qname: "aaaa01000000.", qtype: dns.TypeA, answer: []string{"A 172.20.0.2"}},
		{name: "hostname", src: client, qname: "webhost1.", qtype: dns.TypeA, answer: []string{"A 172.20.0.2"}},
		{name: "sidedns.names", src: client, qname: "extra.name.", qtype: dns.TypeA, answer: []string{"A 172.20.0.60"}},
		{name: "name.network", src: host, qname: "web.appnet.", qtype: dns.TypeA, answer: []string{"A 172.20.0.2", "A 172.20.0.3"}},
		{name: "name.network picks that network", src: host, qname: "multi.other.", qtype: dns.TypeA, answer: []string{"A 172.21.0.50"}},
		{name: "first network wins, no merging", src: host, qname: "multi.", qtype: dns.TypeA, answer: []string{"A 172.20.0.50"}},
		{name: "other network's view", src: "172.21.0.50", qname: "multi.", qtype: dns.TypeA, answer: []string{"A 172.20.0.50"}},
		{name: "scoped: not on querier's network", src: outer, qname: "web.", qtype: dns.TypeA, forward: true},
		{name: "scoped: name.network of a foreign network", src: outer, qname: "web.appnet.", qtype: dns.TypeA, forward: true},
		{name: "unknown name is forwarded", src: client, qname: "example.test.", qtype: dns.TypeA, forward: true},
		{name: "AAAA for IPv4-only is NODATA", src: client, qname: "web.", qtype: dns.TypeAAAA},
		{name: "AAAA", src: client, qname: "six.", qtype: dns.TypeAAAA, answer: []string{"AAAA fd00::30"}},
		{name: "MX is empty NOERROR", src: client, qname: "web.", qtype: dns.TypeMX},
		{name: "TXT for a known name is forwarded", src: client, qname: "web.", qtype: dns.TypeTXT, forward: true},
		{name: "ANY is minimal", src: client, qname: "web.", qtype: dns.TypeANY, answer: []string{`HINFO "RFC8482" ""`}},
		{name: "PTR", src: client, qname: "2.0.20.172.in-addr.arpa.", qtype: dns.TypePTR, answer: []string{"PTR proj-web-1.appnet."}},
		{name: "PTR IPv6", src: host, qname: "0.3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", qtype: dns.TypePTR, answer: []string{"PTR v6.appnet."}},
		{name: "PTR of a foreign network is forwarded", src: outer, qname: "2.0.20.172.in-addr.arpa.", qtype: dns.TypePTR, forward: true},
		{name: "PTR unknown address is forwarded", src: client, qname: "9.9.9.9.in-addr.arpa.", qtype: dns.TypePTR, forward: true},
		{name: "health: unhealthy left out", src: client, qname: "flaky.", qtype: dns.TypeA, answer: []string{"A 172.20.0.41"}},
		{name: "health: all ineligible fails open", src: client, qname: "allbad.", qtype: dns.TypeA, answer: []string{"A 172.20.0.42", "A 172.20.0.43"}},
		{name: "paused: NODATA", src: client, qname: "pz.", qtype: dns.TypeA},
		{name: "project scoping p1", src: "172.22.0.10", qname: "db.", qtype: dns.TypeA, answer: []string{"A 172.22.0.2"}},
		{name: "project without db sees all", src: "172.22.0.11", qname: "db.", qtype: dns.TypeA, answer: []string{"A 172.22.0.2", "A 172.22.0.3"}},
		{name: "label TTL", src: client, qname: "slow.", qtype: dns.TypeA, answer: []string{"A 172.20.0.60"}},
		{name: "SRV by port", src: client, qname: "_8080._tcp.web.", qtype: dns.TypeSRV,
			answer: []string{"SRV 0 0 8080 proj-web-1.", "SRV 0 0 8080 proj-web-2."}},
		{name: "SRV by label name", src: client, qname: "_http._tcp.proj-web-1.", qtype: dns.TypeSRV, answer: []string{"SRV 0 0 80 proj-web-1."}},
		{name: "SRV for a plain name is forwarded", src: client, qname: "web.", qtype: dns.TypeSRV, forward: true},
		{name: "SRV unknown port is NODATA", src: client, qname: "_9999._tcp.web.", qtype: dns.TypeSRV},
		{name: "zone name", src: client, qname: "web.docker.", qtype: dns.TypeA, answer: []string{"A 172.20.0.2", "A 172.20.0.3"}},
		{name: "zone service.project", src: client, qname: "web.proj.docker.", qtype: dns.TypeA, answer: []string{"A 172.20.0.2", "A 172.20.0.3"}},
		{name: "zone name.network", src: host, qname: "multi.other.docker.", qtype: dns.TypeA, answer: []string{"A 172.21.0.50"}},
		{name: "zone SRV service.project", src: client, qname: "_http._tcp.web.proj.docker.", qtype: dns.TypeSRV,
			answer: []string{"SRV 0 0 80 proj-web-1.docker.", "SRV 0 0 80 proj-web-2.docker."}},
		{name: "zone PTR for a name is NODATA", src: client, qname: "web.docker.", qtype: dns.TypePTR},
		{name: "zone PTR unknown is NXDOMAIN", src: client, qname: "nope.docker.", qtype: dns.TypePTR, rcode: dns.RcodeNameError},
		{name: "PTR for a plain name is forwarded", src: client, qname: "web.", qtype: dns.TypePTR, forward: true},
		{name: "zone unknown is NXDOMAIN", src: client, qname: "nope.docker.", qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{name: "zone scoped is NXDOMAIN", src: outer, qname: "web.docker.", qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{name: "zone TXT is NODATA", src: client, qname: "web.docker.", qtype: dns.TypeTXT},
		{name: "zone apex SOA", src: client, qname: "docker.", qtype: dns.TypeSOA, answer: []string{"SOA ns.docker. hostmaster.docker. 1 3600 600 86400 5"}},
		{name: "zone apex NS", src: client, qname: "docker.", qtype: dns.TypeNS, answer: []string{"NS ns.docker."}},
		{name: "zone apex A is NODATA", src: client, qname: "docker.", qtype: dns.TypeA},
		{name: "zone name, client's case", src: client, qname: "WeB.DocKer.", qtype: dns.TypeA, answer: []string{"A 172.20.0.2", "A 172.20.0.3"}},
		// RFC 8020: names that exist only as parents of names are NODATA.
		{name: "ENT: _tcp of an SRV name", src: client, qname: "_tcp.web.docker.", qtype: dns.TypeA},
		{name: "ENT: _tcp of a service", src: client, qname: "_tcp.web.proj.docker.", qtype: dns.TypeSRV},
		{name: "ENT: _udp without udp ports is NXDOMAIN", src: client, qname: "_udp.web.docker.", qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{name: "ENT: network", src: client, qname: "appnet.docker.", qtype: dns.TypeA},
		{name: "ENT: foreign network is NXDOMAIN", src: client, qname: "other.docker.", qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{name: "ENT: project", src: client, qname: "proj.docker.", qtype: dns.TypeA},
		{name: "ENT: project of another view", src: "172.22.0.10", qname: "p2.docker.", qtype: dns.TypeAAAA},
		{name: "ENT: parent of a dotted name", src: client, qname: "name.docker.", qtype: dns.TypeA},
		{name: "ENT: parent of a dotted name on a network", src: host, qname: "name.appnet.docker.", qtype: dns.TypeTXT},
		{name: "ENT outside the zone is forwarded", src: client, qname: "name.", qtype: dns.TypeA, forward: true},
		{name: "SRV name: other types NODATA", src: client, qname: "_http._tcp.web.docker.", qtype: dns.TypeA},
		{name: "SRV name without the port is NXDOMAIN", src: client, qname: "_9999._tcp.web.docker.", qtype: dns.TypeSRV, rcode: dns.RcodeNameError},
		{name: "zone SRV by port", src: client, qname: "_8080._tcp.proj-web-1.docker.", qtype: dns.TypeSRV, answer: []string{"SRV 0 0 8080 proj-web-1.docker."}},
		// An escaped dot is part of a label: web\.docker is one label.
		{name: "escaped dot is not the zone", src: client, qname: `web\.docker.`, qtype: dns.TypeA, forward: true},
		{name: "escaped dot inside the zone", src: client, qname: `a\.b.web.docker.`, qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{name: "escaped dot is not a name.network", src: host, qname: `web\.appnet.`, qtype: dns.TypeA, forward: true},
		{name: "ns of the zone", src: client, qname: "ns.docker.", qtype: dns.TypeA, answer: []string{"A 127.0.0.1"}},
		{name: "ns of the zone AAAA", src: client, qname: "NS.docker.", qtype: dns.TypeAAAA, answer: []string{"AAAA ::1"}},
		{name: "ns of the zone TXT", src: client, qname: "ns.docker.", qtype: dns.TypeTXT},
		{name: "ANY in the zone", src: client, qname: "web.docker.", qtype: dns.TypeANY, answer: []string{`HINFO "RFC8482" ""`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, ok := ask(t, r, tt.src, tt.qname, tt.qtype)
			if ok == tt.forward {
				t.Fatalf("ours = %v, want %v (resp %v)", ok, !tt.forward, resp)
			}
			if tt.forward {
				return
			}
			if resp.Rcode != tt.rcode {
				t.Errorf("rcode = %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[tt.rcode])
			}
			if !resp.Authoritative || !resp.Response || !resp.RecursionAvailable {
				t.Errorf("want an authoritative response with RA, got %v", resp.MsgHdr)
			}
			// Negative answers from the zone carry its SOA (RFC 2308); others carry nothing.
			inZone := dns.IsSubDomain("docker.", strings.ToLower(tt.qname))
			wantNs := 0
			if inZone && len(resp.Answer) == 0 {
				wantNs = 1
			}
			if len(resp.Ns) != wantNs || wantNs == 1 && (resp.Ns[0].Header().Rrtype != dns.TypeSOA || resp.Ns[0].Header().Name != "docker.") {
				t.Errorf("authority = %v, want %d SOA", resp.Ns, wantNs)
			}
			if got := rdata(resp.Answer); !slices.Equal(got, tt.answer) {
				t.Errorf("answer = %q, want %q", got, tt.answer)
			}
			if resp.Question[0].Name != tt.qname {
				t.Errorf("question name %q, want the client's %q", resp.Question[0].Name, tt.qname)
			}
			for _, rr := range resp.Answer {
				if rr.Header().Rrtype != tt.qtype && tt.qtype != dns.TypeANY {
					t.Errorf("wire type %s in the answer to %s", dns.TypeToString[rr.Header().Rrtype], dns.TypeToString[tt.qtype])
				}
			}
		})
	}
}

// ns.<zone> is the server: the apex NS names it, with its addresses as
// glue; a wildcard listen address names nothing.
func TestResolveNameServer(t *testing.T) {
	r := newTestResolver(t, Options{NSAddrs: []netip.Addr{addr("0.0.0.0"), addr("::ffff:127.0.0.2"), addr("::")}})
	resp, _ := ask(t, r, client, "docker.", dns.TypeNS)
	if got, want := rdata(resp.Extra), []string{"A 127.0.0.2"}; !slices.Equal(got, want) || resp.Extra[0].Header().Name != "ns.docker." {
		t.Errorf("NS glue = %v, want %q for ns.docker.", resp.Extra, want)
	}
	resp, _ = ask(t, r, client, "ns.docker.", dns.TypeA)
	if got, want := rdata(resp.Answer), []string{"A 127.0.0.2"}; !slices.Equal(got, want) {
		t.Errorf("ns.docker. A = %q, want %q", got, want)
	}
	resp, _ = ask(t, r, client, "ns.docker.", dns.TypeAAAA)
	if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 0 || len(resp.Ns) != 1 {
		t.Errorf("ns.docker. AAAA without an IPv6 address: want NODATA with SOA, got %v", resp)
	}
}

func TestResolveTTL(t *testing.T) {
	r := newTestResolver(t, Options{TTL: 7})
	for name, want := range map[string]uint32{"web.": 7, "slow.": 60} {
		resp, _ := ask(t, r, client, name, dns.TypeA)
		if got := resp.Answer[0].Header().Ttl; got != want {
			t.Errorf("%s TTL = %d, want %d", name, got, want)
		}
	}
}

func TestResolveZoneNegativeHasSOA(t *testing.T) {
	r := newTestResolver(t, Options{Domain: "Internal."})
	resp, ok := ask(t, r, client, "nope.internal.", dns.TypeA)
	if !ok || resp.Rcode != dns.RcodeNameError || len(resp.Ns) != 1 || resp.Ns[0].Header().Rrtype != dns.TypeSOA {
		t.Fatalf("want NXDOMAIN with SOA, got ok=%v %v", ok, resp)
	}
	resp, _ = ask(t, r, client, "web.internal.", dns.TypeAAAA)
	if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 0 || len(resp.Ns) != 1 {
		t.Fatalf("want NODATA with SOA, got %v", resp)
	}
}

func TestResolveRotates(t *testing.T) {
	r := newTestResolver(t, Options{})
	seen := map[string]int{}
	for range 10 {
		resp, _ := ask(t, r, client, "web.", dns.TypeA)
		seen[resp.Answer[0].(*dns.A).A.String()]++
	}
	if seen["172.20.0.2"] != 5 || seen["172.20.0.3"] != 5 {
		t.Fatalf("first addresses over 10 answers = %v, want an even split", seen)
	}
}

func TestResolveStrictHealth(t *testing.T) {
	r := newTestResolver(t, Options{StrictHealth: true})
	resp, ok := ask(t, r, client, "allbad.", dns.TypeA)
	if !ok || resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 0 {
		t.Fatalf("strict policy: want NODATA, got ok=%v %v", ok, resp)
	}
	if r.Stats.FailOpen.Load() != 0 {
		t.Fatal("strict policy counted a fail-open")
	}
	fo := newTestResolver(t, Options{})
	if _, ours := ask(t, fo, client, "allbad.", dns.TypeTXT); ours {
		t.Fatal("TXT for a container name was answered, not forwarded")
	}
	ask(t, fo, client, "allbad.", dns.TypeA)
	if fo.Stats.FailOpen.Load() != 1 { // the forwarded TXT is not a fail-open answer
		t.Fatalf("fail-open count = %d, want 1", fo.Stats.FailOpen.Load())
	}
}

func TestResolveSRVAdditional(t *testing.T) {
	r := newTestResolver(t, Options{})
	resp, _ := ask(t, r, client, "_http._tcp.web.", dns.TypeSRV)
	if got, want := rdata(resp.Extra), []string{"A 172.20.0.2", "A 172.20.0.3"}; !slices.Equal(got, want) {
		t.Fatalf("additional = %q, want %q", got, want)
	}
	for _, rr := range resp.Extra {
		if name := rr.Header().Name; name != "proj-web-1." && name != "proj-web-2." {
			t.Errorf("additional owner %q is not an SRV target", name)
		}
	}
	// The wire form must carry type SRV (moby once shipped SRV with PTR's type).
	wire, err := resp.Pack()
	if err != nil {
		t.Fatal(err)
	}
	var back dns.Msg
	if err := back.Unpack(wire); err != nil {
		t.Fatal(err)
	}
	if _, ok := back.Answer[0].(*dns.SRV); !ok {
		t.Fatalf("answer unpacks as %T", back.Answer[0])
	}
}

func TestResolveTruncates(t *testing.T) {
	top := Topology{Networks: []Network{{Name: "big"}}}
	for i := range 40 {
		top.Containers = append(top.Containers, Container{
			ID: id("ab" + itoa2(i)), Name: "rep-" + itoa2(i),
			Endpoints: []Endpoint{ep("big", netip.AddrFrom4([4]byte{10, 9, 0, byte(i + 1)}).String(), "many")},
		})
	}
	r := New(Options{})
	r.Publish(top)
	req := new(dns.Msg)
	req.SetQuestion("many.", dns.TypeA)
	udp, _ := askMsg(t, r, host, req, 512)
	if !udp.Truncated || len(udp.Answer) >= 40 {
		t.Fatalf("UDP 512: TC=%v with %d answers, want truncated", udp.Truncated, len(udp.Answer))
	}
	udp.Compress = true
	if n, _ := udp.Pack(); len(n) > 512 {
		t.Fatalf("UDP answer is %d bytes", len(n))
	}
	tcp, _ := askMsg(t, r, host, req, 65535)
	if tcp.Truncated || len(tcp.Answer) != 40 {
		t.Fatalf("TCP: TC=%v with %d answers, want all 40", tcp.Truncated, len(tcp.Answer))
	}
}

func itoa2(i int) string { return string([]byte{byte('0' + i/10), byte('0' + i%10)}) }

func TestPublishSkipsUnchanged(t *testing.T) {
	r := New(Options{})
	r.Publish(fixture())
	r.Publish(fixture())
	if got := r.Stats.Publishes.Load(); got != 1 {
		t.Fatalf("publishes = %d, want 1", got)
	}
	if !r.IsLocalSource(addr("172.21.9.9")) || r.IsLocalSource(addr("8.8.8.8")) {
		t.Fatal("IsLocalSource does not follow the network subnets")
	}
}

func TestPtrName(t *testing.T) {
	for name, want := range map[string]string{
		"4.3.2.1.in-addr.arpa":   "1.2.3.4",
		"04.3.2.1.in-addr.arpa":  "",
		"3.2.1.in-addr.arpa":     "",
		"256.3.2.1.in-addr.arpa": "",
		"x.in-addr.arpa":         "",
	} {
		a, ok := ptrName(name)
		if ok != (want != "") || (ok && a.String() != want) {
			t.Errorf("ptrName(%q) = %v %v, want %q", name, a, ok, want)
		}
	}
}
