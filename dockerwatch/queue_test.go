package dockerwatch

import (
	"testing"

	"github.com/docker/docker/api/types/container"
)

// Events for one container that arrive in one batch merge into one piece of
// work; a health event must never bring back a container that died.
func TestQueueMergesEvents(t *testing.T) {
	health := op{kind: opHealth, health: container.Unhealthy}
	tests := []struct {
		name   string
		events []op
		want   opKind
	}{
		{"die then health", []op{{kind: opRemove}, health}, opInspect},
		{"start then health", []op{{kind: opInspect}, health}, opInspect},
		{"health then die", []op{health, {kind: opRemove}}, opRemove},
		{"die then start", []op{{kind: opRemove}, {kind: opInspect}}, opInspect},
		{"health alone", []op{health}, opHealth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := &queue{kick: make(chan struct{}, 1)}
			for _, o := range tt.events {
				q.add("c1", o, false)
			}
			ops, _, _ := q.take()
			if got := ops["c1"].kind; got != tt.want {
				t.Fatalf("merged op = %v, want %v", got, tt.want)
			}
		})
	}
}
