package resolver

import (
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// zoneFixture adds records from another host to the fixture: a replica of the
// local compose service proj/web, a remote-only name with a published port,
// and an unhealthy-looking name that clashes with nothing.
func zoneFixture() Topology {
	t := fixture()
	t.Containers = append(t.Containers,
		Container{ID: "10.9.0.1/web-9", Name: "web-9", Project: "proj", Service: "web", Origin: "10.9.0.1",
			Endpoints: []Endpoint{{NetworkName: "10.9.0.1", IPv4: addr("10.9.0.1")}}},
		Container{ID: "10.9.0.1/api-1", Name: "api-1", Project: "shop", Service: "api", Origin: "10.9.0.1",
			Tags:      []string{"canary"},
			Ports:     []Port{{Name: "8080", Port: 49153, Proto: "tcp"}},
			Endpoints: []Endpoint{{NetworkName: "10.9.0.1", IPv4: addr("10.9.0.1")}}},
		Container{ID: "file/proj-web-1", Name: "proj-web-1", Origin: "file",
			Endpoints: []Endpoint{{NetworkName: "file", IPv4: addr("10.8.0.7")}}},
	)
	return t
}

func TestZoneRecords(t *testing.T) {
	r := New(Options{})
	r.Publish(zoneFixture())
	tests := []struct {
		name, src, q string
		qtype        uint16
		want         []string // in answer order; nil with ok=false for a forward
		ok           bool
	}{
		{"remote name in the zone", "10.1.1.1", "api-1.docker.", dns.TypeA, []string{"A 10.9.0.1"}, true},
		{"remote service in the zone", "10.1.1.1", "api.shop.docker.", dns.TypeA, []string{"A 10.9.0.1"}, true},
		{"remote name bare is not ours", "10.1.1.1", "api-1.", dns.TypeA, nil, false},
		{"remote tag of a service", "10.1.1.1", "canary.api.shop.docker.", dns.TypeA, []string{"A 10.9.0.1"}, true},
		{"remote tag of a name", "10.1.1.1", "canary.api-1.docker.", dns.TypeA, []string{"A 10.9.0.1"}, true},
		{"SRV on the published host port", "10.1.1.1", "_8080._tcp.api.shop.docker.", dns.TypeSRV,
			[]string{"SRV 0 0 49153 api-1.docker."}, true},
		{"local replicas first", "172.20.0.10", "web.proj.docker.", dns.TypeA,
			[]string{"A 172.20.0.2", "A 172.20.0.3", "A 10.9.0.1"}, true},
		{"file record after the local container of its name", "172.20.0.10", "proj-web-1.docker.", dns.TypeA,
			[]string{"A 172.20.0.2", "A 10.8.0.7"}, true},
		{"bare local name unchanged", "172.20.0.10", "proj-web-1.", dns.TypeA, []string{"A 172.20.0.2"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, ok := ask(t, r, tt.src, tt.q, tt.qtype)
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if !ok {
				return
			}
			var got []string
			for _, rr := range resp.Answer {
				got = append(got, dns.TypeToString[rr.Header().Rrtype]+" "+rr.String()[len(rr.Header().String()):])
			}
			// Answers rotate: compare as sets, and check the local-first order
			// on the first answer of a fresh cursor only.
			if !sameSet(got, tt.want) {
				t.Fatalf("answer %v, want %v", got, tt.want)
			}
		})
	}
	// Local replicas come first in every answer; each group rotates on its own.
	firsts := map[string]bool{}
	for range 4 {
		resp, _ := ask(t, r, "172.20.0.10", "web.proj.docker.", dns.TypeA)
		if a, ok := resp.Answer[2].(*dns.A); !ok || a.A.String() != "10.9.0.1" {
			t.Fatalf("answer %v: the remote replica is not last", resp.Answer)
		}
		firsts[resp.Answer[0].(*dns.A).A.String()] = true
	}
	if len(firsts) != 2 {
		t.Fatalf("local replicas did not rotate: first answers %v", firsts)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// Names that exist only as ancestors of other hosts' records are empty
// non-terminals: NODATA with the SOA, not NXDOMAIN (RFC 8020).
func TestZoneRecordsEmptyNonTerminals(t *testing.T) {
	r := New(Options{})
	r.Publish(zoneFixture())
	tests := []struct {
		q     string
		rcode int
	}{
		{"shop.docker.", dns.RcodeSuccess},          // parent of api.shop
		{"_tcp.api.shop.docker.", dns.RcodeSuccess}, // parent of _8080._tcp.api.shop
		{"_tcp.api-1.docker.", dns.RcodeSuccess},    // parent of _8080._tcp.api-1
		{"_udp.api-1.docker.", dns.RcodeNameError},  // no udp port
		{"nope.shop.docker.", dns.RcodeNameError},   // below an empty non-terminal
	}
	for _, tt := range tests {
		resp, ok := ask(t, r, "10.1.1.1", tt.q, dns.TypeA)
		if !ok {
			t.Fatalf("%s: not answered in the zone", tt.q)
		}
		if resp.Rcode != tt.rcode || len(resp.Answer) != 0 || len(resp.Ns) != 1 || resp.Ns[0].Header().Rrtype != dns.TypeSOA {
			t.Errorf("%s: rcode %s, %d answers, authority %v; want %s with the SOA", tt.q,
				dns.RcodeToString[resp.Rcode], len(resp.Answer), resp.Ns, dns.RcodeToString[tt.rcode])
		}
	}
}
