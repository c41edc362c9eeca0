package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sidedns/sidedns/dockerwatch/dockerfake"
)

// The docker. zone both servers serve: sidedns reads it from a fake Docker
// daemon, unbound gets it as local-data. One table, so the two cannot drift.

const (
	zone    = "docker."
	netName = "appnet"
	subnet  = "10.210.0.0/16"
	// soaData is what sidedns's resolver builds for its zone (resolver.soa),
	// so that unbound's static zone carries the same SOA.
	soaData = "docker. 5 IN SOA ns.docker. hostmaster.docker. 1 3600 600 86400 5"
)

type container struct {
	name    string
	ip      string
	labels  map[string]string
	service string // compose service, in project "shop"
}

var containers = []container{
	{name: "web", ip: "10.210.0.10", labels: map[string]string{"sidedns.srv.http": "80/tcp"}},
	{name: "db", ip: "10.210.0.11"},
	{name: "shop-api-1", ip: "10.210.0.21", service: "api"},
	{name: "shop-api-2", ip: "10.210.0.22", service: "api"},
}

// unboundLocalData is the server-clause part of unbound's config for the zone.
func unboundLocalData() string {
	var b strings.Builder
	line := func(format string, a ...any) { fmt.Fprintf(&b, "  local-data: \""+format+"\"\n", a...) }
	fmt.Fprintf(&b, "  local-zone: %q static\n", zone)
	line("%s", soaData)
	line("docker. 5 IN NS ns.docker.")
	// The name server is sidedns itself, on 127.0.0.1 in conformance runs.
	line("ns.docker. 5 IN A 127.0.0.1")
	for _, c := range containers {
		line("%s.docker. 5 IN A %s", c.name, c.ip)
		line("%s.%s.docker. 5 IN A %s", c.name, netName, c.ip)
		if c.service != "" {
			line("%s.shop.docker. 5 IN A %s", c.service, c.ip)
		}
		if c.labels["sidedns.srv.http"] == "80/tcp" {
			line("_http._tcp.%s.docker. 5 IN SRV 0 0 80 %s.docker.", c.name, c.name)
		}
	}
	return b.String()
}

// serveDocker serves the fake Engine API with the zone's containers on a unix
// socket until SIGTERM. It prints "ready" once it serves.
func serveDocker(socket string) error {
	e := dockerfake.New(dockerfake.Options{Now: time.Now})
	e.AddNetwork(netName, subnet)
	for _, c := range containers {
		labels := map[string]string{}
		for k, v := range c.labels {
			labels[k] = v
		}
		if c.service != "" {
			labels["com.docker.compose.project"] = "shop"
			labels["com.docker.compose.service"] = c.service
		}
		e.StartContainer(dockerfake.ContainerSpec{
			Name:     c.name,
			Labels:   labels,
			Networks: map[string]dockerfake.Endpoint{netName: {IP: c.ip}},
		})
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", socket, err)
	}
	defer os.Remove(socket)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- e.Serve(l) }()
	fmt.Println("ready")
	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("serve fake docker: %w", err)
	}
	if err := e.Close(); err != nil {
		return fmt.Errorf("close fake docker: %w", err)
	}
	return nil
}
