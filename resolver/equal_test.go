package resolver

import (
	"net/netip"
	"reflect"
	"testing"
)

// EqualTopology stands in for reflect.DeepEqual (dockerwatch and the
// resolver's change checks use it); it must agree with it,
// nil-versus-empty slices included.
func TestEqualTopologyAgreesWithDeepEqual(t *testing.T) {
	edits := map[string]func(*Topology){
		"same":              func(*Topology) {},
		"health":            func(t *Topology) { t.Containers[0].Health = HealthUnhealthy },
		"name":              func(t *Topology) { t.Containers[1].Name = "other" },
		"ttl":               func(t *Topology) { t.Containers[0].TTL = 9 },
		"weight":            func(t *Topology) { t.Containers[0].Weight = 800 },
		"drained":           func(t *Topology) { t.Containers[1].Drained = true },
		"tags":              func(t *Topology) { t.Containers[0].Tags = []string{"canary"} },
		"tags empty":        func(t *Topology) { t.Containers[1].Tags = []string{} },
		"extra names nil":   func(t *Topology) { t.Containers[0].Names = nil },
		"extra names empty": func(t *Topology) { t.Containers[1].Names = []string{} },
		"port":              func(t *Topology) { t.Containers[0].Ports[0].Port = 81 },
		"alias":             func(t *Topology) { t.Containers[0].Endpoints[0].Aliases[0] = "x" },
		"aliases empty":     func(t *Topology) { t.Containers[1].Endpoints[0].Aliases = []string{} },
		"ipv6":              func(t *Topology) { t.Containers[0].Endpoints[0].IPv6 = netip.MustParseAddr("fd00::1") },
		"endpoints nil":     func(t *Topology) { t.Containers[1].Endpoints = nil },
		"one container":     func(t *Topology) { t.Containers = t.Containers[:1] },
		"no containers":     func(t *Topology) { t.Containers = nil },
		"empty containers":  func(t *Topology) { t.Containers = []Container{} },
		"internal":          func(t *Topology) { t.Networks[0].Internal = true },
		"subnet":            func(t *Topology) { t.Networks[0].Subnets[0] = netip.MustParsePrefix("10.9.0.0/16") },
		"subnets empty":     func(t *Topology) { t.Networks[0].Subnets = []netip.Prefix{} },
		"networks empty":    func(t *Topology) { t.Networks = []Network{} },
	}
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			a, b := fixture(), fixture()
			edit(&b)
			if got, want := EqualTopology(a, b), reflect.DeepEqual(a, b); got != want {
				t.Errorf("EqualTopology = %v, reflect.DeepEqual = %v", got, want)
			}
		})
	}
}
