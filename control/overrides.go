// Package control holds the runtime traffic overrides (drain and weight by
// container) and serves the gRPC control API that sets them and streams
// answer sets (DESIGN 8).
package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/moby/sys/atomicwriter"

	"github.com/sidedns/sidedns/resolver"
)

// stateVersion is the state file's format version.
const stateVersion = 1

// Override is what an operator set for one container. It lasts as long as
// the container: Prune drops it once the container is gone.
type Override struct {
	ID      string `json:"id"`   // full container ID: names can be reused, IDs cannot
	Name    string `json:"name"` // the container's name when set, for people
	Drained bool   `json:"drained,omitempty"`
	Weight  uint16 `json:"weight,omitempty"` // 0: the label's weight stands
}

// stateFile is the JSON the store persists.
type stateFile struct {
	Version   int        `json:"version"`
	Overrides []Override `json:"overrides"`
}

// Store holds the overrides and persists each change to a state file, so
// they survive a restart. Its methods are safe for concurrent use.
type Store struct {
	path string // "" keeps overrides in memory only

	mu   sync.Mutex
	byID map[string]Override
}

// ErrBadState is wrapped by OpenStore when the state file cannot be parsed.
var ErrBadState = errors.New("malformed state file")

// OpenStore reads the state file at path; a missing file is an empty store.
// On a malformed file it returns an empty store that will overwrite the file
// at the first change, and an error wrapping ErrBadState for the log.
func OpenStore(path string) (*Store, error) {
	s := &Store{path: path, byID: map[string]Override{}}
	if path == "" {
		return s, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("read state file: %w", err)
	}
	ovs, err := parseState(data)
	if err != nil {
		return s, fmt.Errorf("read state file %s: %w", path, err)
	}
	for _, o := range ovs {
		s.byID[o.ID] = o
	}
	return s, nil
}

// parseState decodes a state file and checks every entry.
func parseState(data []byte) ([]Override, error) {
	var st stateFile
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadState, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrBadState, st.Version, stateVersion)
	}
	seen := map[string]bool{}
	for _, o := range st.Overrides {
		switch {
		case !validID(o.ID):
			return nil, fmt.Errorf("%w: container ID %q", ErrBadState, o.ID)
		case o.Weight > resolver.MaxWeight:
			return nil, fmt.Errorf("%w: weight %d above %d", ErrBadState, o.Weight, resolver.MaxWeight)
		case seen[o.ID]:
			return nil, fmt.Errorf("%w: container %s twice", ErrBadState, o.ID)
		}
		seen[o.ID] = true
	}
	return st.Overrides, nil
}

// validID reports whether id looks like a full Docker container ID.
func validID(id string) bool {
	if len(id) != 64 {
		return false
	}
	return strings.IndexFunc(id, func(r rune) bool { return !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') }) < 0
}

// List returns the overrides, by container name then ID.
func (s *Store) List() []Override {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Override, 0, len(s.byID))
	for _, o := range s.byID {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b Override) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Get returns the override of the container with ID id.
func (s *Store) Get(id string) (Override, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.byID[id]
	return o, ok
}

// Drain takes the container out of answers (while others are left).
func (s *Store) Drain(id, name string) (changed bool, err error) {
	return s.edit(id, name, func(o *Override) { o.Drained = true })
}

// Undrain lifts a drain. A container drained by its label
// (sidedns.weight=0) stays drained until it is given a weight.
func (s *Store) Undrain(id, name string) (changed bool, err error) {
	return s.edit(id, name, func(o *Override) { o.Drained = false })
}

// SetWeight sets the container's weight, which also lifts a drain; weight 0
// drains it.
func (s *Store) SetWeight(id, name string, w uint16) (changed bool, err error) {
	if w > resolver.MaxWeight {
		return false, fmt.Errorf("weight %d above %d", w, resolver.MaxWeight)
	}
	return s.edit(id, name, func(o *Override) {
		if w == 0 {
			o.Drained = true
			return
		}
		o.Weight, o.Drained = w, false
	})
}

// edit applies f to the container's override and persists the result when
// it changed. On a failed write the change is kept in memory and reported.
func (s *Store) edit(id, name string, f func(*Override)) (bool, error) {
	if !validID(id) {
		return false, fmt.Errorf("container ID %q: want 64 hex digits", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.byID[id]
	o := old
	o.ID, o.Name = id, name
	f(&o)
	switch {
	case !o.Drained && o.Weight == 0:
		if !had {
			return false, nil
		}
		delete(s.byID, id)
	case had && o == old:
		return false, nil
	default:
		s.byID[id] = o
	}
	return true, s.saveLocked()
}

// Prune drops the overrides of containers that are not in t (destroyed),
// and persists the result when something was dropped. t must be a full
// topology, as the Docker watcher publishes it.
func (s *Store) Prune(t resolver.Topology) (pruned []Override, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.byID) == 0 {
		return nil, nil
	}
	live := make(map[string]bool, len(t.Containers))
	for i := range t.Containers {
		live[t.Containers[i].ID] = true
	}
	for id, o := range s.byID {
		if !live[id] {
			pruned = append(pruned, o)
			delete(s.byID, id)
		}
	}
	if len(pruned) == 0 {
		return nil, nil
	}
	return pruned, s.saveLocked()
}

// Apply returns t with the overrides applied to its containers. t is not
// modified: containers with an override are copied into a new slice.
func (s *Store) Apply(t resolver.Topology) resolver.Topology {
	s.mu.Lock()
	defer s.mu.Unlock()
	return apply(t, s.byID)
}

// apply is Apply over a given set of overrides.
func apply(t resolver.Topology, byID map[string]Override) resolver.Topology {
	if len(byID) == 0 {
		return t
	}
	var cs []resolver.Container
	for i := range t.Containers {
		o, ok := byID[t.Containers[i].ID]
		if !ok {
			continue
		}
		if cs == nil {
			cs = slices.Clone(t.Containers)
		}
		c := &cs[i]
		if o.Weight > 0 {
			// A weight set at run time outranks the label's, drain included.
			c.Weight, c.Drained = o.Weight, false
		}
		c.Drained = c.Drained || o.Drained
	}
	if cs != nil {
		t.Containers = cs
	}
	return t
}

// saveLocked writes the state file atomically (a temporary file renamed
// over it), creating its directory. s.mu must be held.
func (s *Store) saveLocked() error {
	if s.path == "" {
		return nil
	}
	st := stateFile{Version: stateVersion, Overrides: make([]Override, 0, len(s.byID))}
	for _, o := range s.byID {
		st.Overrides = append(st.Overrides, o)
	}
	slices.SortFunc(st.Overrides, func(a, b Override) int { return strings.Compare(a.ID, b.ID) })
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o750); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	if err := atomicwriter.WriteFile(s.path, append(data, '\n'), 0o640); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	return nil
}
