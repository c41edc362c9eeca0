package resolver

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
)

// bigTopology is n containers spread over four networks, like
// bench/fakedocker's layout, with a compose project on every tenth.
func bigTopology(n int) Topology {
	var t Topology
	for k := range 4 {
		t.Networks = append(t.Networks, Network{
			ID: fmt.Sprintf("net%d-id", k), Name: fmt.Sprintf("net%d", k),
			Subnets: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", 100+k))},
		})
	}
	for i := range n {
		k := i % 4
		id := fmt.Sprintf("%016x", uint64(i+1)*0x9E3779B97F4A7C15)
		c := Container{
			ID:       id + id + id + id,
			Name:     fmt.Sprintf("c%04d", i),
			Hostname: id[:12], // Docker's default
			Endpoints: []Endpoint{{
				NetworkID: t.Networks[k].ID, NetworkName: t.Networks[k].Name,
				IPv4: netip.AddrFrom4([4]byte{10, byte(100 + k), byte(i / 4 / 250), byte(i/4%250 + 2)}),
			}},
		}
		if i%10 == 0 {
			c.Project, c.Service = "proj", fmt.Sprintf("svc%d", i%50)
			c.Endpoints[0].Aliases = []string{c.Service}
		}
		t.Containers = append(t.Containers, c)
	}
	return t
}

func BenchmarkBuildSnapshot10k(b *testing.B) {
	t := bigTopology(10000)
	o := Options{}.withDefaults()
	b.ReportAllocs()
	for b.Loop() {
		buildSnapshot(t, o)
	}
}

// BenchmarkPublish10kOneChanged is the cost of one container event: a
// topology that differs from the published one in a single container.
func BenchmarkPublish10kOneChanged(b *testing.B) {
	t1 := bigTopology(10000)
	t2 := t1
	t2.Containers = append([]Container(nil), t1.Containers...)
	t2.Containers[5000].Health = HealthUnhealthy
	benchmarkAlternate(b, t1, t2)
}

// BenchmarkPublish10kStartStop is a container starting in the middle of the
// sorted topology (every later container shifts by one) and stopping again.
func BenchmarkPublish10kStartStop(b *testing.B) {
	t1 := bigTopology(10000)
	t2 := t1
	extra := bigTopology(10001).Containers[10000]
	extra.Name = "c5000a"
	t2.Containers = slices.Insert(slices.Clone(t1.Containers), 5001, extra)
	benchmarkAlternate(b, t1, t2)
}

// benchmarkAlternate publishes t2 and t1 in turn, after a first full build of
// t1 that is not measured, so each operation is one event.
func benchmarkAlternate(b *testing.B, t1, t2 Topology) {
	r := New(Options{})
	r.Publish(t1)
	b.ReportAllocs()
	next := [2]Topology{t2, t1}
	i := 0
	for b.Loop() {
		r.Publish(next[i%2])
		i++
	}
}
