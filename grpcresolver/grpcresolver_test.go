package grpcresolver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/sidedns/sidedns/control"
	"github.com/sidedns/sidedns/control/controlpb"
	"github.com/sidedns/sidedns/resolver"
)

// replicas starts a gRPC health server on each of ips, all on one port,
// standing in for a service's replicas. It returns the port.
func replicas(t *testing.T, ips ...string) string {
	t.Helper()
	for range 20 {
		var ls []net.Listener
		port := "0"
		for _, ip := range ips {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, port))
			if err != nil {
				break
			}
			ls = append(ls, l)
			_, port, _ = net.SplitHostPort(l.Addr().String())
		}
		if len(ls) < len(ips) {
			for _, l := range ls {
				l.Close()
			}
			continue // the port was taken on a later address: try another
		}
		for _, l := range ls {
			srv := grpc.NewServer()
			healthpb.RegisterHealthServer(srv, health.NewServer())
			go srv.Serve(l)
			t.Cleanup(srv.Stop)
		}
		return port
	}
	t.Fatal("no port free on every replica address")
	return ""
}

func container(n int, ip string) resolver.Container {
	return resolver.Container{
		ID: fmt.Sprintf("%064x", n), Name: fmt.Sprintf("shop-api-%d", n), Project: "shop", Service: "api",
		Endpoints: []resolver.Endpoint{{NetworkID: "n", NetworkName: "shopnet", IPv4: netip.MustParseAddr(ip)}},
	}
}

// sidedns is the control API over a real resolver, as cmd/sidedns wires it.
type sidedns struct {
	srv    *control.Server
	pub    *control.Publisher
	socket string
	client controlpb.ControlClient
}

func startSidedns(t *testing.T, socket string, top resolver.Topology) *sidedns {
	t.Helper()
	log := zaptest.NewLogger(t)
	store, err := control.OpenStore("")
	if err != nil {
		t.Fatal(err)
	}
	s := &sidedns{socket: socket}
	s.pub = control.NewPublisher(resolver.New(resolver.Options{}), store, log, nil)
	s.pub.Publish(top)
	s.srv, err = control.Start(control.Config{Socket: s.socket, Logger: log}, control.NewService(store, s.pub, log))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.srv.Stop)
	conn, err := control.Dial(s.socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s.client = controlpb.NewControlClient(conn)
	return s
}

// served sends RPCs and returns which replica addresses answered the last n.
func served(t *testing.T, c healthpb.HealthClient, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		var p peer.Peer
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p), grpc.WaitForReady(true))
		cancel()
		if err != nil {
			t.Fatalf("RPC: %v", err)
		}
		host, _, _ := net.SplitHostPort(p.Addr.String())
		got[host]++
	}
	return got
}

// A client dialled at sidedns:///api.shop.docker follows the replicas: a
// new one gets traffic and a drained one loses it, pushed through Watch.
func TestClientFollowsReplicas(t *testing.T) {
	port := replicas(t, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	c1, c2, c3 := container(1, "127.0.0.2"), container(2, "127.0.0.3"), container(3, "127.0.0.4")
	top := resolver.Topology{Networks: []resolver.Network{{ID: "n", Name: "shopnet"}}, Containers: []resolver.Container{c1, c2}}
	sd := startSidedns(t, filepath.Join(t.TempDir(), "control.sock"), top)

	conn, err := grpc.NewClient("sidedns:///api.shop.docker:"+port,
		grpc.WithResolvers(NewBuilder(sd.socket)),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)

	deadline := time.Now().Add(5 * time.Second)
	for got := served(t, client, 10); got["127.0.0.2"] == 0 || got["127.0.0.3"] == 0; got = served(t, client, 10) {
		if time.Now().After(deadline) {
			t.Fatalf("traffic went to %v, want both replicas", got)
		}
	}

	// A third replica starts and the first is drained.
	start := time.Now()
	top.Containers = append(top.Containers, c3)
	sd.pub.Publish(top)
	if _, err := sd.client.Drain(context.Background(), &controlpb.Target{Container: c1.Name}); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"127.0.0.3": true, "127.0.0.4": true}
	for {
		got := served(t, client, 10)
		if len(got) == 2 && got["127.0.0.3"] > 0 && got["127.0.0.4"] > 0 {
			t.Logf("traffic moved in %v: %v", time.Since(start), got)
			break
		}
		for a := range got {
			if !want[a] && time.Since(start) > 5*time.Second {
				t.Fatalf("5 s after the change, traffic still goes to %s: %v", a, got)
			}
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("5 s after the change, traffic is %v", got)
		}
	}
}

// waitServedBy sends RPCs until exactly the want addresses serve them.
func waitServedBy(t *testing.T, c healthpb.HealthClient, want ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := served(t, c, 10)
		ok := len(got) == len(want)
		for _, a := range want {
			ok = ok && got[a] > 0
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("traffic goes to %v, want %v", got, want)
		}
	}
}

// When sidedns restarts, the client keeps its replicas meanwhile and then
// follows the new sidedns.
func TestClientFollowsAcrossRestart(t *testing.T) {
	port := replicas(t, "127.0.0.6", "127.0.0.7")
	nets := []resolver.Network{{ID: "n", Name: "shopnet"}}
	socket := filepath.Join(t.TempDir(), "control.sock")
	sd := startSidedns(t, socket, resolver.Topology{Networks: nets, Containers: []resolver.Container{container(1, "127.0.0.6")}})
	conn, err := grpc.NewClient("sidedns:///api.shop.docker:"+port,
		grpc.WithResolvers(NewBuilder(socket)), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	waitServedBy(t, client, "127.0.0.6")

	sd.srv.Stop()
	waitServedBy(t, client, "127.0.0.6") // sidedns is away: the last set stands
	startSidedns(t, socket, resolver.Topology{Networks: nets, Containers: []resolver.Container{container(2, "127.0.0.7")}})
	waitServedBy(t, client, "127.0.0.7")
}

// With no control socket the target goes to gRPC's DNS resolver; an IP
// literal needs no DNS query.
func TestFallsBackToDNS(t *testing.T) {
	port := replicas(t, "127.0.0.5")
	conn, err := grpc.NewClient("sidedns:///"+net.JoinHostPort("127.0.0.5", port),
		grpc.WithResolvers(NewBuilder(filepath.Join(t.TempDir(), "missing.sock"))),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := served(t, healthpb.NewHealthClient(conn), 3); got["127.0.0.5"] != 3 {
		t.Errorf("served by %v", got)
	}
}
