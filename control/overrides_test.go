package control

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sidedns/sidedns/resolver"
)

func cid(prefix string) string { return (prefix + strings.Repeat("0", 64))[:64] }

func topo(cs ...resolver.Container) resolver.Topology { return resolver.Topology{Containers: cs} }

func TestOverridesApply(t *testing.T) {
	a, b := cid("aa"), cid("bb")
	base := topo(
		resolver.Container{ID: a, Name: "web-1", Weight: 300},
		resolver.Container{ID: b, Name: "web-2", Drained: true}, // sidedns.weight=0
	)
	type want struct {
		weight  uint16
		drained bool
	}
	tests := []struct {
		name string
		ops  func(s *Store)
		want [2]want
	}{
		{"none", func(*Store) {}, [2]want{{300, false}, {0, true}}},
		{"drain", func(s *Store) { s.Drain(a, "web-1") }, [2]want{{300, true}, {0, true}}},
		{"drain then undrain", func(s *Store) { s.Drain(a, "web-1"); s.Undrain(a, "web-1") }, [2]want{{300, false}, {0, true}}},
		{"weight", func(s *Store) { s.SetWeight(a, "web-1", 50) }, [2]want{{50, false}, {0, true}}},
		{"weight lifts a label drain", func(s *Store) { s.SetWeight(b, "web-2", 10) }, [2]want{{300, false}, {10, false}}},
		{"undrain leaves a label drain", func(s *Store) { s.Undrain(b, "web-2") }, [2]want{{300, false}, {0, true}}},
		{"weight 0 drains", func(s *Store) { s.SetWeight(a, "web-1", 0) }, [2]want{{300, true}, {0, true}}},
		{"weight, drain, undrain keeps the weight", func(s *Store) {
			s.SetWeight(a, "web-1", 7)
			s.Drain(a, "web-1")
			s.Undrain(a, "web-1")
		}, [2]want{{7, false}, {0, true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := OpenStore("")
			if err != nil {
				t.Fatal(err)
			}
			tt.ops(s)
			before := topo(base.Containers...)
			got := s.Apply(before)
			for i, w := range tt.want {
				c := got.Containers[i]
				if c.Weight != w.weight || c.Drained != w.drained {
					t.Errorf("%s: weight %d drained %v, want %d %v", c.Name, c.Weight, c.Drained, w.weight, w.drained)
				}
			}
			if !reflect.DeepEqual(before, base) {
				t.Errorf("Apply modified its input: %+v", before)
			}
		})
	}
}

func TestOverridesRejectBadInput(t *testing.T) {
	s, _ := OpenStore("")
	if _, err := s.Drain("web-1", "web-1"); err == nil {
		t.Error("Drain by name accepted; the store keys by full ID")
	}
	if _, err := s.SetWeight(cid("aa"), "web-1", 1001); err == nil {
		t.Error("weight 1001 accepted")
	}
	if len(s.List()) != 0 {
		t.Errorf("store holds %v after bad input", s.List())
	}
}

// Overrides survive a restart (a fresh store on the same file) and are
// dropped with their container.
func TestOverridesPersistAndPrune(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "overrides.json")
	a, b := cid("aa"), cid("bb")
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := s.Drain(a, "web-1"); !changed || err != nil {
		t.Fatalf("Drain = %v, %v", changed, err)
	}
	if changed, err := s.Drain(a, "web-1"); changed || err != nil {
		t.Fatalf("second Drain = %v, %v; want no change", changed, err)
	}
	if _, err := s.SetWeight(b, "web-2", 800); err != nil {
		t.Fatal(err)
	}

	s2, err := OpenStore(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if got, want := s2.List(), s.List(); !reflect.DeepEqual(got, want) {
		t.Fatalf("after restart %+v, want %+v", got, want)
	}
	pruned, err := s2.Prune(topo(resolver.Container{ID: b, Name: "web-2"}))
	if err != nil || len(pruned) != 1 || pruned[0].ID != a {
		t.Fatalf("Prune = %+v, %v; want web-1's override", pruned, err)
	}
	s3, _ := OpenStore(path)
	if got := s3.List(); len(got) != 1 || got[0].ID != b || got[0].Weight != 800 {
		t.Fatalf("after prune and restart: %+v", got)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("state directory holds %d files, want only the state file", len(entries))
	}
}

func TestOpenStoreMalformed(t *testing.T) {
	for name, content := range map[string]string{
		"not json":     "{",
		"version":      `{"version": 2, "overrides": []}`,
		"short id":     `{"version": 1, "overrides": [{"id": "abc", "drained": true}]}`,
		"weight":       `{"version": 1, "overrides": [{"id": "` + cid("a") + `", "weight": 5000}]}`,
		"weight range": `{"version": 1, "overrides": [{"id": "` + cid("a") + `", "weight": 70000}]}`,
		"duplicate":    `{"version": 1, "overrides": [{"id": "` + cid("a") + `"}, {"id": "` + cid("a") + `"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "overrides.json")
			os.WriteFile(path, []byte(content), 0o600)
			s, err := OpenStore(path)
			if s == nil || len(s.List()) != 0 {
				t.Fatalf("store %v, want an empty one", s)
			}
			if name != "weight range" && !errors.Is(err, ErrBadState) {
				t.Errorf("err = %v, want ErrBadState", err)
			}
			if err == nil {
				t.Error("no error")
			}
		})
	}
}

func FuzzParseState(f *testing.F) {
	f.Add(`{"version": 1, "overrides": [{"id": "` + cid("a") + `", "name": "x", "drained": true, "weight": 5}]}`)
	f.Add(`{"version": 1, "overrides": null}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, data string) {
		ovs, err := parseState([]byte(data))
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, o := range ovs {
			if !validID(o.ID) || o.Weight > resolver.MaxWeight || seen[o.ID] {
				t.Fatalf("accepted %+v", o)
			}
			seen[o.ID] = true
		}
	})
}
