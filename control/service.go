package control

import (
	"cmp"
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sidedns/sidedns/control/controlpb"
	"github.com/sidedns/sidedns/resolver"
)

// Backend is the name table the control API reads and steers; cmd/sidedns
// implements it on the resolver and the Docker watcher.
type Backend interface {
	// Topology returns the containers as Docker reports them, before
	// overrides.
	Topology() resolver.Topology
	// AnswerSet returns name's answer set now, and a channel that is
	// closed at the next change of the table. The channel is taken before
	// the set is read, so no change between two calls goes unseen.
	AnswerSet(name string) ([]resolver.Answer, <-chan struct{})
	// Republish applies the store's overrides to the table; answers follow
	// them when it returns.
	Republish()
	// Remote returns the replicas this host answers for but does not run:
	// other hosts' records (Origin: the host) and --records-file services
	// (Origin "file"). They are listed, never steered from here.
	Remote() []resolver.Container
}

// Service implements the Control gRPC service.
type Service struct {
	controlpb.UnimplementedControlServer
	store   *Store
	backend Backend
	log     *zap.Logger

	stopOnce sync.Once
	stopped  chan struct{} // closed by stop: Watch streams end
}

// NewService returns the control service over store and backend.
func NewService(store *Store, backend Backend, log *zap.Logger) *Service {
	return &Service{store: store, backend: backend, log: log, stopped: make(chan struct{})}
}

// stop ends every Watch stream, so that a graceful server stop need not
// wait for them.
func (s *Service) stop() { s.stopOnce.Do(func() { close(s.stopped) }) }

// maxNameLen is the longest DNS name in text form, without the final dot.
const maxNameLen = 253

func (s *Service) Drain(ctx context.Context, req *controlpb.Target) (*controlpb.ReplicaReply, error) {
	return s.change(req.GetContainer(), "drain", func(id, name string) (bool, error) { return s.store.Drain(id, name) })
}

func (s *Service) Undrain(ctx context.Context, req *controlpb.Target) (*controlpb.ReplicaReply, error) {
	return s.change(req.GetContainer(), "undrain", func(id, name string) (bool, error) { return s.store.Undrain(id, name) })
}

func (s *Service) SetWeight(ctx context.Context, req *controlpb.SetWeightRequest) (*controlpb.ReplicaReply, error) {
	w := req.GetWeight()
	if w > resolver.MaxWeight {
		return nil, status.Errorf(codes.InvalidArgument, "weight %d: want 0 to %d", w, resolver.MaxWeight)
	}
	return s.change(req.GetContainer(), "set weight", func(id, name string) (bool, error) {
		return s.store.SetWeight(id, name, uint16(w))
	})
}

// change finds the target container, applies edit to its override and
// republishes the table when that changed something.
func (s *Service) change(target, what string, edit func(id, name string) (bool, error)) (*controlpb.ReplicaReply, error) {
	t := s.backend.Topology()
	c, err := findContainer(t, target)
	if status.Code(err) == codes.NotFound {
		err = elsewhere(s.backend.Remote(), target, what, err)
	}
	if err != nil {
		return nil, err
	}
	changed, err := edit(c.ID, c.Name)
	if changed {
		s.backend.Republish()
		s.log.Info(what, zap.String("container", c.Name), zap.String("id", c.ID[:12]))
	}
	if err != nil {
		s.log.Error(what, zap.String("container", c.Name), zap.Error(err))
		// The override is in effect; only its persistence failed.
		return nil, status.Errorf(codes.Internal, "%s %s: applied, but will not survive a restart: %v", what, c.Name, err)
	}
	return &controlpb.ReplicaReply{Replica: s.replica(c), Changed: changed}, nil
}

func (s *Service) List(ctx context.Context, req *controlpb.ListRequest) (*controlpb.ListReply, error) {
	t := s.backend.Topology()
	out := &controlpb.ListReply{Replicas: make([]*controlpb.Replica, 0, len(t.Containers))}
	for i := range t.Containers {
		out.Replicas = append(out.Replicas, s.replica(&t.Containers[i]))
	}
	for _, c := range s.backend.Remote() {
		r := s.replica(&c)
		r.Host, r.Overridden = c.Origin, false
		out.Replicas = append(out.Replicas, r)
	}
	slices.SortStableFunc(out.Replicas, func(a, b *controlpb.Replica) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.Host, b.Host))
	})
	return out, nil
}

// elsewhere turns "no container" into where the target is steered instead,
// when it is a replica this host only answers for: a drain is made on the
// replica's own host, whose sidedns publishes it to every host.
func elsewhere(remote []resolver.Container, target, what string, notFound error) error {
	target = strings.TrimPrefix(strings.TrimSpace(target), "/")
	for _, c := range remote {
		switch {
		case c.Name != target && c.ID != target:
		case c.Origin == resolver.OriginRecordsFile:
			return status.Errorf(codes.FailedPrecondition, "%s is a --records-file service, not a container: %s it in the file", c.Name, what)
		default:
			return status.Errorf(codes.FailedPrecondition, "%s runs on host %s: %s it there, and every host follows", c.Name, c.Origin, what)
		}
	}
	return notFound
}

func (s *Service) Watch(req *controlpb.WatchRequest, stream controlpb.Control_WatchServer) error {
	name := strings.TrimSuffix(req.GetName(), ".")
	if name == "" || len(name) > maxNameLen || strings.Contains(name, "..") {
		return status.Errorf(codes.InvalidArgument, "name %q: want a DNS name", req.GetName())
	}
	var last []resolver.Answer
	for first := true; ; first = false {
		set, changed := s.backend.AnswerSet(name)
		if first || !slices.Equal(set, last) {
			if err := stream.Send(answerSet(name, set)); err != nil {
				return err
			}
			last = set
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		case <-s.stopped:
			return status.Error(codes.Unavailable, "sidedns is stopping")
		}
	}
}

func answerSet(name string, set []resolver.Answer) *controlpb.AnswerSet {
	out := &controlpb.AnswerSet{Name: name, Endpoints: make([]*controlpb.Endpoint, len(set))}
	for i, a := range set {
		out.Endpoints[i] = &controlpb.Endpoint{Container: a.Container, Address: a.Addr.String(), Weight: uint32(a.Weight)}
	}
	return out
}

// replica describes c with its override applied.
func (s *Service) replica(c *resolver.Container) *controlpb.Replica {
	o, has := s.store.Get(c.ID)
	eff := *c
	if has {
		eff = apply(resolver.Topology{Containers: []resolver.Container{*c}}, map[string]Override{c.ID: o}).Containers[0]
	}
	w := eff.Weight
	switch {
	case eff.Drained:
		w = 0
	case w == 0:
		w = resolver.DefaultWeight
	}
	r := &controlpb.Replica{
		Id: c.ID, Name: c.Name, Service: c.Service, Project: c.Project, Tags: c.Tags,
		Weight: uint32(w), Drained: eff.Drained, Overridden: has,
		State: c.State.String(), Health: c.Health.String(),
	}
	for _, ep := range c.Endpoints {
		for _, a := range [2]netip.Addr{ep.IPv4, ep.IPv6} {
			if a.IsValid() && !slices.Contains(r.Addresses, a.String()) {
				r.Addresses = append(r.Addresses, a.String())
			}
		}
	}
	return r
}

// findContainer finds target by exact name, full ID, or a unique ID prefix
// of at least 12 hex digits, as the docker CLI does.
func findContainer(t resolver.Topology, target string) (*resolver.Container, error) {
	target = strings.TrimPrefix(strings.TrimSpace(target), "/")
	if target == "" || len(target) > 256 {
		return nil, status.Error(codes.InvalidArgument, "want a container name or ID")
	}
	var byPrefix *resolver.Container
	n := 0
	for i := range t.Containers {
		c := &t.Containers[i]
		if c.Name == target || c.ID == target {
			return c, nil
		}
		if len(target) >= 12 && strings.HasPrefix(c.ID, strings.ToLower(target)) {
			byPrefix = c
			n++
		}
	}
	switch n {
	case 0:
		return nil, status.Errorf(codes.NotFound, "no container %q", target)
	case 1:
		return byPrefix, nil
	}
	return nil, status.Errorf(codes.InvalidArgument, "container ID prefix %q matches %d containers", target, n)
}
