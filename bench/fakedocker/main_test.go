package main

import (
	"context"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"go.uber.org/zap"

	"github.com/sidedns/sidedns/dnsserver"
	"github.com/sidedns/sidedns/dockerwatch"
	"github.com/sidedns/sidedns/dockerwatch/dockerfake"
	"github.com/sidedns/sidedns/resolver"
)

func TestSummary(t *testing.T) {
	var lat []time.Duration
	for i := 100; i >= 1; i-- {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	got := summary(lat, 2)
	want := "start->resolvable: n=100 unresolved=2 p50=50.00ms p90=90.00ms p99=99.00ms max=100.00ms"
	if got != want {
		t.Errorf("summary\n got %q\nwant %q", got, want)
	}
	if got := summary(nil, 3); got != "start->resolvable: n=0 unresolved=3" {
		t.Errorf("summary of nothing = %q", got)
	}
}

func TestRejectsBadFlags(t *testing.T) {
	quiet := log.New(io.Discard, "", 0)
	for _, args := range [][]string{
		{"-probe", "192.0.2.1:53", "-churn", "1"}, // not loopback
		{"-probe", "127.0.0.1:53"},                // no churn
		{"-networks", "0"},
		{"-containers", "-1"},
		{"-services", "1", "-weights", "100,0"}, // drained: the check does not model it
		{"-services", "1", "-weights", "100,1001"},
		{"-services", "1", "-weights", "100,x"},
		{"-services", "1", "-canary", "4"}, // 3 replicas
		{"-services", "1", "-project", "a.b"},
	} {
		err := run(quiet, append(args, "-socket", t.TempDir()+"/d.sock"))
		if err == nil || strings.Contains(err.Error(), "listen") {
			t.Errorf("run(%q) = %v, want a flag error", args, err)
		}
	}
}

// The hosts file of a weighted layout: each service's bare name and
// <service>.<project>.<domain> with every replica, the canary name with the
// tagged replica only.
func TestHostsOfServices(t *testing.T) {
	e := dockerfake.New(dockerfake.Options{Networks: 2})
	recs, err := populate(e, config{containers: 1, networks: 2, services: 2, project: "shop", domain: "docker.",
		weights: []string{"", "300"}, canary: 2})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "hosts")
	if err := writeHosts(path, recs); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := `10.100.0.2 c0000
10.100.0.3 s0000
10.100.0.4 s0000
10.100.0.3 s0000.shop.docker
10.100.0.4 s0000.shop.docker
10.100.0.4 canary.s0000.shop.docker
10.101.0.2 s0001
10.101.0.3 s0001
10.101.0.2 s0001.shop.docker
10.101.0.3 s0001.shop.docker
10.101.0.3 canary.s0001.shop.docker
`
	if string(got) != want {
		t.Errorf("hosts file\n got:\n%s\nwant:\n%s", got, want)
	}
	resp, ok := e.Inspect("shop-s0001-2")
	if !ok {
		t.Fatal("no container shop-s0001-2")
	}
	labels := resp.Config.Labels
	if labels["sidedns.weight"] != "300" || labels["sidedns.tags"] != "canary" ||
		labels["com.docker.compose.project"] != "shop" || labels["com.docker.compose.service"] != "s0001" {
		t.Errorf("labels of shop-s0001-2: %v", labels)
	}
	if resp, _ := e.Inspect("shop-s0001-1"); resp.Config.Labels["sidedns.weight"] != "" {
		t.Errorf("shop-s0001-1 has sidedns.weight=%q, want none", resp.Config.Labels["sidedns.weight"])
	}
}

// What -check and -check-weights see from sidedns's own watcher, table and
// DNS server over the weighted layout: every name with its replicas'
// addresses, and first places in proportion to the weights.
func TestCheckWeightedThroughSidedns(t *testing.T) {
	c := config{containers: 3, networks: 2, services: 3, project: "bench", domain: "docker.",
		weights: []string{"100", "100", "800"}, canary: 1}
	e := dockerfake.New(dockerfake.Options{Networks: c.networks})
	recs, err := populate(e, c)
	if err != nil {
		t.Fatal(err)
	}
	sock := dockerfake.ServeTemp(t, e)
	cli, err := client.NewClientWithOpts(client.WithHost("unix://"+sock), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })

	res := resolver.New(resolver.Options{})
	w := dockerwatch.New(cli, res.Publish, zap.NewNop(), dockerwatch.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	srv, err := dnsserver.New(dnsserver.Config{Listen: []string{"127.0.0.1:0"}, Local: res})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	deadline := time.Now().Add(time.Minute)
	for !w.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("no first sync from the fake daemon")
		}
		time.Sleep(10 * time.Millisecond)
	}

	var logs strings.Builder
	addr := srv.Addrs()[0].String()
	if err := check(log.New(&logs, "", 0), addr, recs, true, 100); err != nil {
		t.Errorf("check: %v\n%s", err, logs.String())
	}

	// The check fails when the weights are not what the server follows.
	for i := range recs {
		if recs[i].weights != nil {
			recs[i].weights = []int{800, 100, 100}
		}
	}
	if err := check(log.New(io.Discard, "", 0), addr, recs, true, 100); err == nil || !strings.Contains(err.Error(), "weights") {
		t.Errorf("check with the weights reversed = %v, want a weights error", err)
	}
}
