package dockerwatch

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"go.uber.org/zap"

	"github.com/sidedns/sidedns/resolver"
)

// Options configure a Watcher. The zero value of a field means its default.
type Options struct {
	// ResyncInterval is the period of the full list-and-inspect safety net;
	// default 5m. Events keep the table current in between.
	ResyncInterval time.Duration
	// MinBackoff and MaxBackoff bound the reconnect delay, which doubles
	// after each failure; defaults 100ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// CallTimeout bounds each list or inspect call; default 10s.
	CallTimeout time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

const (
	defaultResync      = 5 * time.Minute
	defaultMinBackoff  = 100 * time.Millisecond
	defaultMaxBackoff  = 30 * time.Second
	defaultCallTimeout = 10 * time.Second
	// The daemon flushes the /events response headers before it registers
	// the subscriber, so an event can slip between Events returning and the
	// list. Asking for events since a moment before the subscribe replays
	// them from the daemon's buffer; replays are harmless (re-inspect).
	sinceSlack = time.Second
	// Parallel inspects on a full sync: enough to hide the round trips
	// without flooding the daemon.
	inspectWorkers = 8
)

// Stats are counters the ops surface exports.
type Stats struct {
	Events    atomic.Uint64 // table-relevant events received
	Resyncs   atomic.Uint64 // full list-and-inspect passes started
	Errors    atomic.Uint64 // failed sessions: unreachable daemon, broken stream, failed calls
	Publishes atomic.Uint64 // topologies handed to publish
}

// Watcher mirrors Docker into resolver.Topology values. It subscribes to
// events first, then lists and inspects everything, publishes, and then
// follows events, re-inspecting only the containers they name. Bursts of
// events coalesce into one rebuild. Any stream or API failure ends the
// session; the next one starts from a full resync after a backoff.
type Watcher struct {
	cli     Client
	publish func(resolver.Topology)
	log     *zap.Logger
	opts    Options

	Stats     Stats
	ready     atomic.Bool
	connected atomic.Bool

	q queue

	// Owned by the Run goroutine.
	containers map[string]container.InspectResponse // by full ID; live ones only
	networks   []network.Summary
	last       resolver.Topology
	published  bool
	reported   map[string]map[string]struct{} // container ID -> problems already logged
	failing    bool                           // a failure was logged and no session has synced since
}

// New returns a Watcher that calls publish from its Run goroutine with every
// changed topology. publish must not modify the topology.
func New(cli Client, publish func(resolver.Topology), log *zap.Logger, opts Options) *Watcher {
	if opts.ResyncInterval <= 0 {
		opts.ResyncInterval = defaultResync
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = defaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(defaultMaxBackoff, opts.MinBackoff)
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = defaultCallTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Watcher{
		cli:        cli,
		publish:    publish,
		log:        log,
		opts:       opts,
		q:          queue{kick: make(chan struct{}, 1)},
		containers: map[string]container.InspectResponse{},
		reported:   map[string]map[string]struct{}{},
	}
}

// Ready reports whether the first full sync has been published.
func (w *Watcher) Ready() bool { return w.ready.Load() }

// Connected reports whether the watcher is synced and following events now.
func (w *Watcher) Connected() bool { return w.connected.Load() }

// Run follows Docker until ctx ends, then returns nil. It never gives up on
// an unreachable daemon: it logs the reason once and keeps retrying with
// backoff, while the last published topology keeps serving.
func (w *Watcher) Run(ctx context.Context) error {
	backoff := w.opts.MinBackoff
	for {
		synced, err := w.session(ctx)
		w.connected.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		if synced {
			backoff = w.opts.MinBackoff
		}
		w.Stats.Errors.Add(1)
		if !w.failing {
			w.failing = true
			w.log.Warn("docker watch interrupted, retrying", zap.Error(err), zap.Duration("backoff", backoff))
		} else {
			w.log.Debug("docker still unreachable", zap.Error(err), zap.Duration("backoff", backoff))
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, w.opts.MaxBackoff)
	}
}

// session subscribes, resyncs and follows events until an error. synced
// reports whether it got as far as publishing a full sync.
func (w *Watcher) session(ctx context.Context) (synced bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	w.q.reset()
	since := w.opts.Now().Add(-sinceSlack)
	// Subscribe before listing, so nothing that happens during the list is lost.
	msgs, errs := w.cli.Events(sctx, events.ListOptions{
		Since:   fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()),
		Filters: eventFilters(),
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.read(sctx, msgs, errs)
	}()
	defer func() {
		cancel()
		<-done // no stale events from this stream reach the next session
	}()

	if err := w.resync(sctx); err != nil {
		return false, err
	}
	w.connected.Store(true)
	if !w.ready.Swap(true) {
		w.log.Info("docker sync complete", zap.Int("containers", len(w.containers)), zap.Int("networks", len(w.networks)))
	} else if w.failing {
		w.log.Info("docker watch restored", zap.Int("containers", len(w.containers)))
	}
	w.failing = false

	tick := time.NewTicker(w.opts.ResyncInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-tick.C:
			if err := w.resync(sctx); err != nil {
				return true, err
			}
		case <-w.q.kick:
			ops, nets, streamErr := w.q.take()
			if streamErr != nil {
				return true, fmt.Errorf("read docker events: %w", streamErr)
			}
			if err := w.apply(sctx, ops, nets); err != nil {
				return true, err
			}
		}
	}
}

// eventFilters lets through only the events that change the table. With
// health_status in the list the daemon prefix-matches actions, so
// "health_status: healthy" passes; exec_* (one set per healthcheck run) never
// arrive.
func eventFilters() filters.Args {
	return filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("type", string(events.NetworkEventType)),
		filters.Arg("event", string(events.ActionStart)),
		filters.Arg("event", string(events.ActionDie)),
		filters.Arg("event", string(events.ActionDestroy)),
		filters.Arg("event", string(events.ActionRename)),
		filters.Arg("event", string(events.ActionPause)),
		filters.Arg("event", string(events.ActionUnPause)),
		filters.Arg("event", string(events.ActionHealthStatus)),
		filters.Arg("event", string(events.ActionConnect)),
		filters.Arg("event", string(events.ActionDisconnect)),
	)
}

// read moves events from the stream into the queue until the stream ends.
func (w *Watcher) read(ctx context.Context, msgs <-chan events.Message, errs <-chan error) {
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-msgs:
			if !ok {
				w.q.fail(errors.New("event stream closed"))
				return
			}
			if id, o, nets, ok := classify(m); ok {
				w.Stats.Events.Add(1)
				w.q.add(id, o, nets)
			}
		case err, ok := <-errs:
			if !ok || err == nil {
				err = errors.New("event stream closed")
			}
			w.q.fail(err)
			return
		}
	}
}

type opKind uint8

const (
	opInspect opKind = iota // re-read the container
	opRemove                // it stopped or is gone
	opHealth                // only its health changed
)

type op struct {
	kind   opKind
	health container.HealthStatus // for opHealth
}

// classify turns an event into work: a container to refresh and/or a network
// list to refresh. ok is false for events that do not change the table.
func classify(m events.Message) (id string, o op, nets, ok bool) {
	switch m.Type {
	case events.ContainerEventType:
		id = m.Actor.ID
		switch a := m.Action; {
		case a == events.ActionStart, a == events.ActionRename, a == events.ActionPause, a == events.ActionUnPause:
			o = op{kind: opInspect}
		case a == events.ActionDie, a == events.ActionDestroy:
			o = op{kind: opRemove}
		case strings.HasPrefix(string(a), string(events.ActionHealthStatus)):
			o = op{kind: opInspect}
			if s, found := strings.CutPrefix(string(a), string(events.ActionHealthStatus)+": "); found {
				switch hs := container.HealthStatus(s); hs {
				case container.Starting, container.Healthy, container.Unhealthy:
					o = op{kind: opHealth, health: hs}
				}
			}
		default:
			return "", op{}, false, false
		}
		return id, o, false, id != ""
	case events.NetworkEventType:
		switch m.Action {
		case events.ActionConnect, events.ActionDisconnect:
			return m.Actor.Attributes["container"], op{kind: opInspect}, true, true
		case events.ActionDestroy:
			return "", op{}, true, true
		}
	}
	return "", op{}, false, false
}

// queue carries work from the event reader to the Run goroutine. The
// one-slot kick channel means a burst becomes one wake-up; per-container ops
// merge so each container is handled once per rebuild.
type queue struct {
	mu   sync.Mutex
	ops  map[string]op
	nets bool
	err  error
	kick chan struct{}
}

func (q *queue) add(id string, o op, nets bool) {
	q.mu.Lock()
	q.nets = q.nets || nets
	if id != "" {
		if q.ops == nil {
			q.ops = map[string]op{}
		}
		// A pending inspect will read the new health anyway; otherwise the
		// latest event decides (die then start is a restart: inspect).
		if prev, had := q.ops[id]; !(o.kind == opHealth && had && prev.kind == opInspect) {
			q.ops[id] = o
		}
	}
	q.mu.Unlock()
	q.wake()
}

func (q *queue) fail(err error) {
	q.mu.Lock()
	q.err = err
	q.mu.Unlock()
	q.wake()
}

func (q *queue) wake() {
	select {
	case q.kick <- struct{}{}:
	default: // a wake-up is already pending; it will see this work too
	}
}

func (q *queue) take() (ops map[string]op, nets bool, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	ops, nets, err = q.ops, q.nets, q.err
	q.ops, q.nets, q.err = nil, false, nil
	return ops, nets, err
}

func (q *queue) reset() {
	q.take()
	select {
	case <-q.kick:
	default:
	}
}

// resync replaces the cached state with a full list and inspect.
func (w *Watcher) resync(ctx context.Context) error {
	w.Stats.Resyncs.Add(1)
	cctx, cancel := context.WithTimeout(ctx, w.opts.CallTimeout)
	list, err := w.cli.ContainerList(cctx, container.ListOptions{}) // running, paused and restarting
	cancel()
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	ids := make([]string, 0, len(list))
	for _, c := range list {
		ids = append(ids, c.ID)
	}
	found, err := w.inspect(ctx, ids)
	if err != nil {
		return err
	}
	nets, err := w.listNetworks(ctx)
	if err != nil {
		return err
	}
	w.containers, w.networks = found, nets
	w.rebuild()
	return nil
}

// apply folds one batch of event work into the cache and rebuilds.
func (w *Watcher) apply(ctx context.Context, ops map[string]op, nets bool) error {
	var ids []string
	for id, o := range ops {
		switch o.kind {
		case opRemove:
			delete(w.containers, id)
		case opHealth:
			if c, ok := w.containers[id]; ok && c.ContainerJSONBase != nil && c.State != nil {
				w.containers[id] = withHealth(c, o.health)
				continue
			}
			ids = append(ids, id) // not cached: we missed its start
		default:
			ids = append(ids, id)
		}
	}
	if len(ids) > 0 {
		found, err := w.inspect(ctx, ids)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if c, ok := found[id]; ok {
				w.containers[id] = c
			} else {
				delete(w.containers, id)
			}
		}
	}
	if nets {
		n, err := w.listNetworks(ctx)
		if err != nil {
			return err
		}
		w.networks = n
	}
	w.rebuild()
	return nil
}

// withHealth returns c with a new health status, copying what it changes so
// earlier values stay untouched.
func withHealth(c container.InspectResponse, s container.HealthStatus) container.InspectResponse {
	base := *c.ContainerJSONBase
	st := *base.State
	h := container.Health{}
	if st.Health != nil {
		h = *st.Health
	}
	h.Status = s
	st.Health = &h
	base.State = &st
	c.ContainerJSONBase = &base
	return c
}

// inspect inspects ids in parallel and returns the live ones by ID.
// Containers that are gone or no longer running, paused or restarting are
// left out; any other failure fails the whole call.
func (w *Watcher) inspect(ctx context.Context, ids []string) (map[string]container.InspectResponse, error) {
	var (
		mu    sync.Mutex
		found = make(map[string]container.InspectResponse, len(ids))
		first error
		wg    sync.WaitGroup
		sem   = make(chan struct{}, inspectWorkers)
	)
	for _, id := range ids {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			cctx, cancel := context.WithTimeout(ctx, w.opts.CallTimeout)
			c, err := w.cli.ContainerInspect(cctx, id)
			cancel()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case cerrdefs.IsNotFound(err):
			case err != nil:
				if first == nil {
					first = fmt.Errorf("inspect container %.12s: %w", id, err)
				}
			case live(c):
				found[id] = c
			}
		}()
	}
	wg.Wait()
	return found, first
}

// live reports whether a container belongs in the table at all.
func live(c container.InspectResponse) bool {
	return c.ContainerJSONBase != nil && c.State != nil && (c.State.Running || c.State.Paused || c.State.Restarting)
}

func (w *Watcher) listNetworks(ctx context.Context) ([]network.Summary, error) {
	cctx, cancel := context.WithTimeout(ctx, w.opts.CallTimeout)
	defer cancel()
	nets, err := w.cli.NetworkList(cctx, network.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	return nets, nil
}

// rebuild builds a topology from the cache and publishes it if it changed.
func (w *Watcher) rebuild() {
	list := make([]container.InspectResponse, 0, len(w.containers))
	for _, c := range w.containers {
		list = append(list, c)
	}
	topo, problems := Build(list, w.networks)
	w.report(problems)
	if w.published && reflect.DeepEqual(topo, w.last) {
		return
	}
	w.last, w.published = topo, true
	w.Stats.Publishes.Add(1)
	w.publish(topo)
}

// report logs each problem once per container. Labels cannot change on a
// container, so once is enough; the entries go when the container goes.
func (w *Watcher) report(problems []Problem) {
	for id := range w.reported {
		if _, ok := w.containers[id]; !ok && id != "" {
			delete(w.reported, id)
		}
	}
	for _, p := range problems {
		// Two bad entries in one label are two problems; each is logged once.
		key, subject := p.ContainerID, p.Subject+"\x00"+p.Err.Error()
		if key == "" { // network problem
			subject = p.Container + "\x00" + subject
		}
		seen := w.reported[key]
		if seen == nil {
			seen = map[string]struct{}{}
			w.reported[key] = seen
		}
		if _, dup := seen[subject]; dup {
			continue
		}
		seen[subject] = struct{}{}
		if p.ContainerID == "" {
			w.log.Warn("ignoring bad network data", zap.String("network", p.Container), zap.String("subject", p.Subject), zap.Error(p.Err))
			continue
		}
		w.log.Warn("ignoring malformed container setting",
			zap.String("container", p.Container), zap.String("id", shortID(p.ContainerID)),
			zap.String("label", p.Subject), zap.Error(p.Err))
	}
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
