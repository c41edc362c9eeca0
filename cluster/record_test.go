package cluster

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/sidedns/sidedns/dockerwatch"
	"github.com/sidedns/sidedns/resolver"
)

func TestDecodeRecord(t *testing.T) {
	big := `{"name":"a","addresses":["10.0.0.1"],"project":"` + strings.Repeat("x", MaxValueSize) + `"}`
	tests := []struct {
		name, key, value string
		wantErr          error // nil: valid
	}{
		{"valid", "api-1", `{"name":"api-1","project":"shop","service":"api","addresses":["10.9.0.5","fd00::5"],"ports":[{"name":"8080","port":49153,"proto":"tcp"}]}`, nil},
		{"name differs from key", "api-2", `{"name":"api-1","addresses":["10.9.0.5"]}`, ErrBadKey},
		{"bad name", "api-1", `{"name":"api_1!","addresses":["10.9.0.5"]}`, dockerwatch.ErrInvalidName},
		{"no name", "api-1", `{"addresses":["10.9.0.5"]}`, ErrNameMissing},
		{"project without service", "api-1", `{"name":"api-1","project":"shop","addresses":["10.9.0.5"]}`, dockerwatch.ErrInvalidName},
		{"bad address", "api-1", `{"name":"api-1","addresses":["10.9.0.300"]}`, ErrBadJSON},
		{"unspecified address", "api-1", `{"name":"api-1","addresses":["0.0.0.0"]}`, ErrBadAddress},
		{"multicast address", "api-1", `{"name":"api-1","addresses":["224.0.0.1"]}`, ErrBadAddress},
		{"no address", "api-1", `{"name":"api-1","addresses":[]}`, ErrBadAddress},
		{"port zero", "api-1", `{"name":"api-1","addresses":["10.0.0.1"],"ports":[{"port":0,"proto":"tcp"}]}`, ErrBadPort},
		{"port proto", "api-1", `{"name":"api-1","addresses":["10.0.0.1"],"ports":[{"port":80,"proto":"sctp"}]}`, ErrBadPort},
		{"port out of range", "api-1", `{"name":"api-1","addresses":["10.0.0.1"],"ports":[{"port":70000,"proto":"tcp"}]}`, ErrBadJSON},
		{"oversized", "a", big, ErrTooLarge},
		{"not JSON", "a", `{`, ErrBadJSON},
		{"ttl too long", "a", `{"name":"a","addresses":["10.0.0.1"],"ttl":90000}`, dockerwatch.ErrInvalidTTL},
		{"traffic control", "a", `{"name":"a","addresses":["10.0.0.1"],"tags":["canary","v2"],"weight":800,"drained":true}`, nil},
		{"weight too high", "a", `{"name":"a","addresses":["10.0.0.1"],"weight":1001}`, ErrBadWeight},
		{"dotted tag", "a", `{"name":"a","addresses":["10.0.0.1"],"tags":["a.b"]}`, ErrBadTag},
		{"bad tag", "a", `{"name":"a","addresses":["10.0.0.1"],"tags":["-x"]}`, ErrBadTag},
		{"empty tag", "a", `{"name":"a","addresses":["10.0.0.1"],"tags":[""]}`, ErrBadTag},
		{"too many tags", "a", `{"name":"a","addresses":["10.0.0.1"],"tags":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}`, ErrBadTag},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeRecord(tt.key, []byte(tt.value))
			if tt.wantErr == nil && err != nil || !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestParseKey(t *testing.T) {
	tests := []struct {
		key        string
		kind       KeyKind
		host, name string
		bad        bool
	}{
		{key: "/sidedns/hosts/10.0.0.1/host", kind: KindHost, host: "10.0.0.1"},
		{key: "/sidedns/hosts/fd00::1/rec/api-1", kind: KindRecord, host: "fd00::1", name: "api-1"},
		{key: "/sidedns/hosts/nothost/host", bad: true},
		{key: "/sidedns/hosts/10.0.0.1/rec/bad name", bad: true},
		{key: "/sidedns/hosts/10.0.0.1/other", bad: true},
		{key: "/sidedns/elsewhere", bad: true},
	}
	for _, tt := range tests {
		kind, host, name, err := ParseKey("/sidedns/", tt.key)
		if (err != nil) != tt.bad || kind != tt.kind || host != tt.host || name != tt.name {
			t.Errorf("ParseKey(%q) = %v %q %q %v", tt.key, kind, host, name, err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	r := Record{Name: "api-1", Project: "shop", Service: "api", TTL: 7,
		Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Ports: []Port{{Name: "http", Port: 80, Proto: "tcp"}}}
	b, err := EncodeRecord(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRecord("api-1", b)
	if err != nil || got.Name != r.Name || got.Ports[0] != r.Ports[0] || got.Addresses[0] != r.Addresses[0] || got.TTL != 7 {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
}

func TestLocalRecords(t *testing.T) {
	adv := netip.MustParseAddr("192.0.2.10")
	topo := resolver.Topology{
		Networks: []resolver.Network{{Name: "bridge"}, {Name: "ov", Spans: true}},
		Containers: []resolver.Container{
			{Name: "pub", Project: "shop", Service: "api",
				Ports: []resolver.Port{{Port: 8080, Proto: "tcp"}, {Name: "http", Port: 8080, Proto: "tcp"}},
				Published: []resolver.Published{
					{Port: 8080, Proto: "tcp", HostPort: 49153, HostIP: netip.IPv4Unspecified()},
					{Port: 8080, Proto: "tcp", HostPort: 49153, HostIP: netip.IPv6Unspecified()},
					{Port: 9090, Proto: "tcp", HostPort: 49154, HostIP: netip.MustParseAddr("127.0.0.1")}, // not reachable
				},
				Endpoints: []resolver.Endpoint{{NetworkName: "bridge", IPv4: netip.MustParseAddr("172.17.0.2")}}},
			{Name: "over", Ports: []resolver.Port{{Port: 53, Proto: "udp"}}, Tags: []string{"canary"}, Weight: 800, Drained: true,
				Endpoints: []resolver.Endpoint{{NetworkName: "ov", IPv4: netip.MustParseAddr("10.0.1.5")}}},
			{Name: "private", Endpoints: []resolver.Endpoint{{NetworkName: "bridge", IPv4: netip.MustParseAddr("172.17.0.3")}}},
			{Name: "sick", Health: resolver.HealthUnhealthy, Published: []resolver.Published{{Port: 1, Proto: "tcp", HostPort: 2}}},
			{Name: "stopped", State: resolver.StateDead, Published: []resolver.Published{{Port: 1, Proto: "tcp", HostPort: 2}}},
			{Name: "remote", Origin: "10.0.0.9", Published: []resolver.Published{{Port: 1, Proto: "tcp", HostPort: 2}}},
		},
	}
	got := LocalRecords(topo, adv)
	if len(got) != 2 {
		t.Fatalf("published %+v, want pub and over", got)
	}
	pub, over := got[0], got[1]
	if pub.Name != "pub" || pub.Addresses[0] != adv || len(pub.Ports) != 2 ||
		pub.Ports[0] != (Port{Name: "8080", Port: 49153, Proto: "tcp"}) || pub.Ports[1] != (Port{Name: "http", Port: 49153, Proto: "tcp"}) {
		t.Errorf("published-port record %+v", pub)
	}
	if over.Name != "over" || over.Addresses[0] != netip.MustParseAddr("10.0.1.5") || over.Ports[0] != (Port{Port: 53, Proto: "udp"}) {
		t.Errorf("overlay record %+v", over)
	}
	// Traffic control travels with the record and comes back on the other side.
	if pub.Weight != 0 || pub.Drained || pub.Tags != nil {
		t.Errorf("record without traffic control carries %+v", pub)
	}
	c := Containers("192.0.2.10", []Record{over})[0]
	if !slices.Equal(c.Tags, []string{"canary"}) || c.Weight != 800 || !c.Drained || c.Origin != "192.0.2.10" {
		t.Errorf("remote container of %+v is %+v", over, c)
	}
}

// FuzzDecodeRecord: whatever another host writes, decoding never panics, and
// what it accepts is valid and encodes back to something it accepts again.
func FuzzDecodeRecord(f *testing.F) {
	f.Add("api-1", []byte(`{"name":"api-1","project":"shop","service":"api","addresses":["10.9.0.5"],"ports":[{"name":"8080","port":49153,"proto":"tcp"}]}`))
	f.Add("a", []byte(`{"name":"a","addresses":["fd00::1"],"ttl":5}`))
	f.Add("a", []byte(`{"name":"a","addresses":["10.0.0.1"],"tags":["canary","v2"],"weight":800,"drained":true}`))
	f.Add("a", []byte(`{"name":"a","addresses":["10.0.0.1%eth0"]}`))
	f.Add("x", []byte(`null`))
	f.Fuzz(func(t *testing.T, key string, b []byte) {
		r, err := DecodeRecord(key, b)
		if err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("accepted an invalid record: %v", err)
		}
		enc, err := EncodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeRecord(key, enc); err != nil && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("re-decode: %v", err)
		}
		_ = Containers("10.0.0.1", []Record{r})
	})
}

func FuzzParseKey(f *testing.F) {
	f.Add("/sidedns/hosts/10.0.0.1/rec/api-1")
	f.Fuzz(func(t *testing.T, key string) {
		kind, host, name, err := ParseKey("/sidedns/", key)
		if err != nil {
			return
		}
		if _, perr := netip.ParseAddr(host); perr != nil || (kind == KindRecord && dockerwatch.ValidName(name) != nil) {
			t.Fatalf("accepted %q", key)
		}
	})
}
