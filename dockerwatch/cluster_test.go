package dockerwatch

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/docker/go-connections/nat"

	"github.com/sidedns/sidedns/resolver"
)

func TestPublished(t *testing.T) {
	got := published(nat.PortMap{
		"8080/tcp": {{HostIP: "0.0.0.0", HostPort: "49153"}, {HostIP: "::", HostPort: "49153"}},
		"53/udp":   {{HostIP: "127.0.0.1", HostPort: "5353"}},
		"9000/tcp": nil,                             // exposed, not published
		"7/sctp":   {{HostIP: "", HostPort: "7"}},   // no SRV use
		"1/tcp":    {{HostIP: "", HostPort: "bad"}}, // malformed
		"2/tcp":    {{HostIP: "", HostPort: "2"}},   // every address
	})
	want := []resolver.Published{
		{Port: 2, Proto: "tcp", HostPort: 2, HostIP: netip.IPv4Unspecified()},
		{Port: 53, Proto: "udp", HostPort: 5353, HostIP: netip.MustParseAddr("127.0.0.1")},
		{Port: 8080, Proto: "tcp", HostPort: 49153, HostIP: netip.IPv4Unspecified()},
		{Port: 8080, Proto: "tcp", HostPort: 49153, HostIP: netip.IPv6Unspecified()},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("published:\n got %v\nwant %v", got, want)
	}
}

func TestSpansHosts(t *testing.T) {
	for _, tt := range []struct {
		driver string
		labels map[string]string
		want   bool
	}{
		{"overlay", nil, true},
		{"macvlan", nil, true},
		{"ipvlan", nil, true},
		{"bridge", nil, false},
		{"bridge", map[string]string{LabelCluster: "true"}, true},
		{"bridge", map[string]string{LabelCluster: "no"}, false},
	} {
		if got := spansHosts(tt.driver, tt.labels); got != tt.want {
			t.Errorf("spansHosts(%q, %v) = %v", tt.driver, tt.labels, got)
		}
	}
}
