package control

import (
	"sync"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sidedns/sidedns/resolver"
)

// Publisher sits between the Docker watcher and the resolver. It applies the
// overrides to every topology it publishes, drops the overrides of destroyed
// containers, and wakes Watch streams after each change. It is the Backend
// of the control service.
// Target is where a Publisher publishes: the resolver, or cmd's layers,
// which add the records file and the cluster before the resolver.
type Target interface {
	Publish(resolver.Topology)
	AnswerSet(name string) []resolver.Answer
	// Topology is the table as last published, other hosts' records
	// included.
	Topology() resolver.Topology
}

type Publisher struct {
	res   Target
	store *Store
	log   *zap.Logger
	after func() // runs after each publish, e.g. to refresh the live page

	mu      sync.Mutex // orders publishes: the watcher's and the API's
	raw     resolver.Topology
	changed chan struct{} // closed and replaced at each change
}

// NewPublisher returns a Publisher onto res. after, if not nil, runs after
// every publish.
func NewPublisher(res Target, store *Store, log *zap.Logger, after func()) *Publisher {
	return &Publisher{res: res, store: store, log: log, after: after, changed: make(chan struct{})}
}

// Publish takes a full topology from the Docker watcher.
func (p *Publisher) Publish(t resolver.Topology) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.raw = t
	pruned, err := p.store.Prune(t)
	for _, o := range pruned {
		p.log.Info("container gone; override dropped", zap.String("container", o.Name), zap.String("id", o.ID[:12]))
	}
	if err != nil {
		p.log.Error("save overrides", zap.Error(err))
	}
	p.publishLocked()
}

// Republish publishes the last topology again with the current overrides.
func (p *Publisher) Republish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.publishLocked()
}

func (p *Publisher) publishLocked() {
	p.res.Publish(p.store.Apply(p.raw))
	if p.after != nil {
		p.after()
	}
	p.notifyLocked()
}

// Changed wakes Watch streams after a change the Publisher did not make,
// such as new resolver options on reload.
func (p *Publisher) Changed() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.notifyLocked()
}

func (p *Publisher) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Topology returns the last topology from the watcher, before overrides.
func (p *Publisher) Topology() resolver.Topology {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.raw
}

// Remote returns the replicas in the table that are not this host's
// containers: other hosts' records and --records-file services.
func (p *Publisher) Remote() []resolver.Container {
	var out []resolver.Container
	for _, c := range p.res.Topology().Containers {
		if c.Origin != "" {
			out = append(out, c)
		}
	}
	return out
}

// AnswerSet implements Backend.
func (p *Publisher) AnswerSet(name string) ([]resolver.Answer, <-chan struct{}) {
	p.mu.Lock()
	ch := p.changed
	p.mu.Unlock()
	return p.res.AnswerSet(name), ch
}

// Dial connects to the control API on the unix socket at path. The
// connection is made lazily, at the first call.
func Dial(path string) (*grpc.ClientConn, error) {
	return grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
}
