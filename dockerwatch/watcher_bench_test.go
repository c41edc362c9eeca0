package dockerwatch

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"go.uber.org/zap"

	"github.com/sidedns/sidedns/dockerwatch/dockerfake"
	"github.com/sidedns/sidedns/resolver"
)

// BenchmarkWatcherStartToPublish10k times, with 10,000 containers on the fake
// daemon, from StartContainer (which emits the events) to the resolver
// publishing a table that holds the new container. It reports the median
// and worst, as the ns/op mean hides the tail.
func BenchmarkWatcherStartToPublish10k(b *testing.B) {
	e := dockerfake.New(dockerfake.Options{})
	e.Populate(10000)
	sock := filepath.Join(b.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatalf("listen on %s: %v", sock, err)
	}
	go e.Serve(l)
	b.Cleanup(func() { e.Close() })
	cli, err := client.NewClientWithOpts(client.WithHost("unix://"+sock), client.WithAPIVersionNegotiation())
	if err != nil {
		b.Fatalf("create client: %v", err)
	}
	b.Cleanup(func() { cli.Close() })

	res := resolver.New(resolver.Options{})
	published := make(chan resolver.Topology, 1024)
	w := New(cli, func(t resolver.Topology) {
		res.Publish(t)
		published <- t
	}, zap.NewNop(), Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	for !w.Ready() {
		select {
		case <-published:
		case <-time.After(time.Minute):
			b.Fatal("no first sync")
		}
	}
	_, base := res.Size()

	var lat []time.Duration
	for i := 0; b.Loop(); i++ {
		name := fmt.Sprintf("bench-%06d", i)
		start := time.Now()
		e.StartContainer(dockerfake.ContainerSpec{Name: name, Networks: map[string]dockerfake.Endpoint{"net0": {}}})
		for {
			<-published
			if _, n := res.Size(); n == base+i+1 {
				break
			}
		}
		lat = append(lat, time.Since(start))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}
