package main

import (
	"net/netip"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sidedns/sidedns/resolver"
)

func TestLoopbackOnlyWarning(t *testing.T) {
	onUser := resolver.Container{Name: "web", Endpoints: []resolver.Endpoint{
		{NetworkName: "proj_default", IPv4: netip.MustParseAddr("172.20.0.2")}}}
	onBridge := resolver.Container{Name: "b1", Endpoints: []resolver.Endpoint{
		{NetworkName: "bridge", IPv4: netip.MustParseAddr("172.17.0.2")}}}
	tests := []struct {
		name            string
		loopback, other bool
		containers      []resolver.Container
		warn            bool
	}{
		{"only loopback, user network", true, false, []resolver.Container{onBridge, onUser}, true},
		{"containers ask too", true, true, []resolver.Container{onUser}, false},
		{"no queries yet", false, false, []resolver.Container{onUser}, false},
		{"only the default bridge", true, false, []resolver.Container{onBridge}, false},
		{"no containers", true, false, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.WarnLevel)
			c := loopbackOnly{
				sources: func() (bool, bool) { return tc.loopback, tc.other },
				table:   func() resolver.Topology { return resolver.Topology{Containers: tc.containers} },
				log:     zap.New(core),
			}
			if got := c.check(); got != tc.warn {
				t.Fatalf("check() = %v, want %v", got, tc.warn)
			}
			if n := logs.Len(); n != map[bool]int{true: 1, false: 0}[tc.warn] {
				t.Fatalf("%d warnings logged: %v", n, logs.All())
			}
			if tc.warn {
				if names := logs.All()[0].ContextMap()["for_example"]; len(names.([]any)) != 1 {
					t.Errorf("for_example = %v, want only the user-network container", names)
				}
			}
		})
	}
}
