package dockerwatch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"go.uber.org/zap"
)

// The watcher patches the last topology per event instead of rebuilding it;
// after every batch of a random event sequence the table it published must
// be exactly what buildTopology gives for the daemon's state.
func TestWatcherIncrementalMatchesBuild(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { checkIncremental(t, seed) })
	}
}

func checkIncremental(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	f := newFake()
	internal := network.Summary{ID: "n2", Name: "net2", Internal: true, IPAM: network.IPAM{Config: []network.IPAMConfig{{Subnet: "10.2.0.0/16"}}}}
	other := network.Summary{ID: "n3", Name: "net3", IPAM: network.IPAM{Config: []network.IPAMConfig{{Subnet: "10.3.0.0/16"}}}}
	f.networks = append(f.networks, internal, other)
	rec := newRecorder()
	w := New(f, rec.publish, zap.NewNop(), Options{})
	ctx := context.Background()

	random := func(id string) container.InspectResponse {
		opts := []func(*container.InspectResponse){endpointOn(fmt.Sprintf("10.1.0.%d", rng.IntN(200)+2))}
		if rng.IntN(2) == 0 {
			opts = append(opts, withEndpoint("net2", "n2", network.EndpointSettings{IPAddress: fmt.Sprintf("10.2.0.%d", rng.IntN(200)+2)}))
		}
		if rng.IntN(3) == 0 {
			opts = append(opts, withEndpoint("net3", "n3", network.EndpointSettings{IPAddress: fmt.Sprintf("10.3.0.%d", rng.IntN(200)+2), Aliases: []string{"svc"}}))
		}
		switch rng.IntN(8) {
		case 0:
			opts = append(opts, withLabel("sidedns.enable", "false"))
		case 1:
			opts = append(opts, withState(container.State{Running: true, Paused: true}))
		case 2:
			opts = append(opts, withState(container.State{Running: false})) // not live
		case 3:
			opts = append(opts, withHealthStatus(container.Starting))
		}
		// A small name pool: renames, and names shared by two IDs.
		return ctr(id, fmt.Sprintf("c%d", rng.IntN(12)), opts...)
	}
	for i := range 10 {
		f.set(random(fmt.Sprintf("id-%02d", i)))
	}
	if err := w.resync(ctx); err != nil {
		t.Fatal(err)
	}
	check := func(step int) {
		t.Helper()
		var cs []container.InspectResponse
		for _, c := range f.containers {
			if live(c) {
				cs = append(cs, c)
			}
		}
		want, _ := buildTopology(cs, f.networks)
		if !reflect.DeepEqual(w.last, want) {
			t.Fatalf("step %d: published\n%+v\nwant\n%+v", step, w.last, want)
		}
		if n := len(rec.topos); n == 0 || !reflect.DeepEqual(rec.topos[n-1], want) {
			t.Fatalf("step %d: the last published topology is not the table", step)
		}
	}
	check(0)

	for step := 1; step <= 200; step++ {
		ops := map[string]op{}
		nets := false
		for range rng.IntN(4) + 1 {
			id := fmt.Sprintf("id-%02d", rng.IntN(30))
			c, exists := f.containers[id]
			switch k := rng.IntN(10); {
			case k < 5:
				f.set(random(id))
				ops[id] = op{kind: opInspect}
			case k < 7:
				delete(f.containers, id)
				ops[id] = op{kind: opRemove}
			case k < 9 && exists && c.State != nil:
				hs := []container.HealthStatus{container.Starting, container.Healthy, container.Unhealthy}[rng.IntN(3)]
				withHealthStatus(hs)(&c)
				f.set(c)
				if prev, had := ops[id]; !had || prev.kind != opInspect {
					ops[id] = op{kind: opHealth, health: hs}
				}
			default:
				// The internal network comes and goes: endpoint orders change.
				if len(f.networks) == 3 {
					f.networks = []network.Summary{f.networks[0], other}
				} else {
					f.networks = append(f.networks, internal)
				}
				nets = true
			}
		}
		if err := w.apply(ctx, ops, nets); err != nil {
			t.Fatal(err)
		}
		check(step)
		if step%50 == 0 {
			if err := w.resync(ctx); err != nil {
				t.Fatal(err)
			}
			check(step)
		}
	}
}
