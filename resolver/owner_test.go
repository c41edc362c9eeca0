package resolver

import (
	"slices"
	"testing"
	"unsafe"
)

func TestOwners(t *testing.T) {
	r := newTestResolver(t, Options{})
	tests := []struct {
		src, name string // name "" asks QuerierOf
		want      Owner
		ok        bool
	}{
		{"172.20.0.2", "", Owner{Service: "web", Project: "proj", Container: "proj-web-1"}, true},
		{"172.20.0.10", "", Owner{Container: "client"}, true},
		{"127.0.0.1", "", Owner{}, false},
		{"172.20.0.10", "web", Owner{Service: "web", Project: "proj", Container: "proj-web-1"}, true},
		{"172.20.0.10", "web.proj.docker", Owner{Service: "web", Project: "proj", Container: "proj-web-1"}, true},
		{"172.20.0.10", "slow", Owner{Container: "slow"}, true},
		{"172.20.0.10", "extra.name", Owner{Container: "slow"}, true},
		// db in the querier's own project, as answers are scoped.
		{"172.22.0.10", "db", Owner{Service: "db", Project: "p1", Container: "p1-db-1"}, true},
		{"172.22.0.11", "db", Owner{Service: "db", Project: "p1", Container: "p1-db-1"}, true},
		{"172.20.0.10", "nosuch.docker", Owner{}, true},
		{"172.20.0.10", "docker", Owner{}, true},
		{"172.20.0.10", "example.com", Owner{}, false},
		{"172.21.0.10", "web", Owner{}, false}, // not on the querier's network: forwarded
	}
	for _, tc := range tests {
		var got Owner
		var ok bool
		if tc.name == "" {
			got, ok = r.QuerierOf(addr(tc.src))
		} else {
			got, ok = r.NameOwner(addr(tc.src), tc.name)
		}
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s asks %q: %+v %v, want %+v %v", tc.src, tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

// NameOwner reads the answer rules without moving the rotation.
func TestNameOwnerKeepsRotation(t *testing.T) {
	r := newTestResolver(t, Options{})
	s := r.snap.Load()
	rs := s.lookup(s.all, "web")
	before := rs.next.Load()
	r.NameOwner(addr("172.20.0.10"), "web")
	if after := rs.next.Load(); after != before {
		t.Errorf("rotation cursor moved from %d to %d", before, after)
	}
}

// A zone-only record's owner names where it comes from: another host's
// address, or OriginRecordsFile; local replicas of the same name own it first.
func TestOwnerHost(t *testing.T) {
	topo := zoneFixture()
	topo.Containers = append(topo.Containers, Container{ID: "file/ledger", Name: "ledger", Origin: OriginRecordsFile,
		Endpoints: []Endpoint{{NetworkName: OriginRecordsFile, IPv4: addr("10.8.0.9")}}})
	r := New(Options{})
	r.Publish(topo)
	remoteAPI := Owner{Service: "api", Project: "shop", Container: "api-1", Host: "10.9.0.1"}
	tests := []struct {
		name string
		want Owner
	}{
		{"api.shop.docker", remoteAPI},
		{"api-1.docker", remoteAPI},
		{"_8080._tcp.api.shop.docker", remoteAPI},
		{"ledger.docker", Owner{Container: "ledger", Host: OriginRecordsFile}},
		// web.proj has local replicas and one on 10.9.0.1: the local come first.
		{"web.proj.docker", Owner{Service: "web", Project: "proj", Container: "proj-web-1"}},
		{"web", Owner{Service: "web", Project: "proj", Container: "proj-web-1"}},
	}
	for _, tc := range tests {
		got, ok := r.NameOwner(addr("172.20.0.10"), tc.name)
		if got != tc.want || !ok {
			t.Errorf("owner of %q: %+v %v, want %+v true", tc.name, got, ok, tc.want)
		}
	}
	// Host is the topology's own string, not a copy.
	got, _ := r.NameOwner(addr("172.20.0.10"), "api.shop.docker")
	i := slices.IndexFunc(topo.Containers, func(c Container) bool { return c.Name == "api-1" })
	if unsafe.StringData(got.Host) != unsafe.StringData(r.Topology().Containers[i].Origin) {
		t.Errorf("Owner.Host is a copy of the container's Origin")
	}
}
