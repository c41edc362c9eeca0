package dockerwatch

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	// default DefaultResyncInterval. Events keep the table current in between.
	ResyncInterval time.Duration
	// MinBackoff and MaxBackoff bound the reconnect delay, which doubles
	// after each failure; defaults 100ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// CallTimeout bounds each list or inspect call; default 10s.
	CallTimeout time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// OnEvent, when set, is told of every table-relevant event as it
	// arrives (the live page lists them). It must not block.
	OnEvent func(Event)
}

// Event is a table-relevant Docker event, for people to read.
type Event struct {
	Time   time.Time
	Kind   string // "container", "health" or "network"
	Action string // e.g. "start", "health_status: unhealthy", "connect"
	Name   string // the container's or network's name
}

func toEvent(m events.Message) Event {
	kind := string(m.Type)
	if strings.HasPrefix(string(m.Action), string(events.ActionHealthStatus)) {
		kind = "health"
	}
	name := m.Actor.Attributes["name"]
	if m.Type == events.NetworkEventType && m.Actor.Attributes["container"] != "" {
		name = m.Actor.Attributes["name"] + " ← " + shortID(m.Actor.Attributes["container"])
	}
	return Event{Time: time.Unix(0, m.TimeNano), Kind: kind, Action: string(m.Action), Name: name}
}

// DefaultResyncInterval is the period of the full resync unless
// Options.ResyncInterval says otherwise.
const DefaultResyncInterval = 5 * time.Minute

const (
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
	Events  atomic.Uint64 // table-relevant events received
	Resyncs atomic.Uint64 // full list-and-inspect passes started
	Errors  atomic.Uint64 // failed sessions: unreachable daemon, broken stream, failed calls
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

	// Owned by the Run goroutine. Only the built form of each container is
	// kept, not its inspect response: an event rebuilds just the containers
	// it names, and the topology is patched from the last one.
	containers map[string]*entry // by full ID; live ones only
	networks   []resolver.Network
	internal   map[string]bool // network ID -> internal, for SortEndpoints
	last       resolver.Topology
	published  bool
	reported   map[string]map[string]struct{} // container ID -> problems already logged
	failing    bool                           // a failure was logged and no session has synced since
}

// New returns a Watcher that calls publish from its Run goroutine with every
// changed topology. publish must not modify the topology.
func New(cli Client, publish func(resolver.Topology), log *zap.Logger, opts Options) *Watcher {
	if opts.ResyncInterval <= 0 {
		opts.ResyncInterval = DefaultResyncInterval
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
		containers: map[string]*entry{},
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

	first := !w.ready.Load()
	if err := w.resync(sctx); err != nil {
		return false, err
	}
	if !first && w.failing { // the first sync logs itself, in resync
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
				if w.opts.OnEvent != nil {
					w.opts.OnEvent(toEvent(m))
				}
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
		// The latest event decides (die then start is a restart: inspect),
		// except that a health change never hides a pending inspect or
		// removal: an inspect reads the new health anyway, and a removed
		// container must not come back as "running, unhealthy".
		prev, had := q.ops[id]
		switch {
		case o.kind == opHealth && had && prev.kind == opRemove:
			q.ops[id] = op{kind: opInspect}
		case o.kind == opHealth && had && prev.kind == opInspect:
		default:
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

// entry is one live container as the table needs it. Entries are never
// modified once stored: the published topology shares their slices.
type entry struct {
	c      resolver.Container // Endpoints in Docker's order
	hidden bool               // sidedns.enable=false: kept so its problems stay logged once
}

func (e *entry) visible() bool { return e != nil && !e.hidden }

// newEntry builds an entry from an inspect result. Its endpoints are sorted
// later, once the network list they depend on is known.
func newEntry(in *container.InspectResponse) (*entry, []Problem) {
	c, ok, problems := buildContainer(in)
	if !ok {
		return &entry{hidden: true}, problems
	}
	return &entry{c: c}, problems
}

func (w *Watcher) sortEndpoints(e *entry) {
	if len(e.c.Endpoints) > 1 {
		SortEndpoints(e.c.Endpoints, func(id string) bool { return w.internal[id] })
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
	found, problems, err := w.inspect(ctx, ids)
	if err != nil {
		return err
	}
	nets, err := w.listNetworks(ctx)
	if err != nil {
		return err
	}
	netProblems := w.setNetworks(nets)
	for id, e := range found {
		w.sortEndpoints(e)
		if old := w.containers[id]; old != nil && e.visible() && old.visible() && resolver.EqualContainer(&old.c, &e.c) {
			found[id] = old // share the published copy; the new one is garbage
		}
	}
	w.containers = found
	for id := range w.reported {
		if _, ok := w.containers[id]; !ok && id != "" {
			delete(w.reported, id)
		}
	}
	w.report(append(netProblems, problems...))
	// Ready before the publish, so whoever the publish wakes (the live page)
	// already sees the watcher as synced.
	w.connected.Store(true)
	if !w.ready.Swap(true) {
		w.log.Info("docker sync complete", zap.Int("containers", len(w.containers)), zap.Int("networks", len(w.networks)))
	}
	w.publishAll()
	return nil
}

// setNetworks installs a new network list and returns its problems. When
// the set of internal networks changes, every endpoint order may change, so
// all entries are re-sorted (on copies: the old ones are published).
func (w *Watcher) setNetworks(list []network.Summary) []Problem {
	nets, internal, problems := buildNetworks(list)
	changed := !sameInternal(w.internal, internal)
	w.networks, w.internal = nets, internal
	if changed {
		for id, e := range w.containers {
			if len(e.c.Endpoints) > 1 {
				cp := *e
				cp.c.Endpoints = slices.Clone(e.c.Endpoints)
				w.sortEndpoints(&cp)
				w.containers[id] = &cp
			}
		}
	}
	return problems
}

// sameInternal reports whether a and b mark the same networks internal; an
// unknown network counts as not internal.
func sameInternal(a, b map[string]bool) bool {
	for id, in := range a {
		if in && !b[id] {
			return false
		}
	}
	for id, in := range b {
		if in && !a[id] {
			return false
		}
	}
	return true
}

// change is one container an event batch touched: its entry before and after.
type change struct {
	old, new *entry
}

// apply folds one batch of event work into the cache and publishes. It does
// its I/O first, so a failed call leaves the cache as it was.
func (w *Watcher) apply(ctx context.Context, ops map[string]op, nets bool) error {
	var ids []string
	for id, o := range ops {
		if o.kind == opInspect || (o.kind == opHealth && w.containers[id] == nil) {
			ids = append(ids, id) // a health event for an unknown container: we missed its start
		}
	}
	var (
		found    map[string]*entry
		problems []Problem
		list     []network.Summary
		err      error
	)
	if len(ids) > 0 {
		if found, problems, err = w.inspect(ctx, ids); err != nil {
			return err
		}
	}
	if nets {
		if list, err = w.listNetworks(ctx); err != nil {
			return err
		}
	}

	full := false
	netsChanged := false
	if nets {
		before, internal := w.networks, w.internal
		problems = append(w.setNetworks(list), problems...)
		netsChanged = !resolver.EqualTopology(resolver.Topology{Networks: before}, resolver.Topology{Networks: w.networks})
		full = !sameInternal(internal, w.internal) // every container may have moved
	}
	changes := make([]change, 0, len(ops))
	for id, o := range ops {
		old := w.containers[id]
		var e *entry
		switch {
		case o.kind == opRemove:
		case o.kind == opHealth && old != nil:
			cp := *old
			cp.c.Health = healthOf(o.health)
			e = &cp
		default:
			if e = found[id]; e != nil {
				w.sortEndpoints(e)
			}
		}
		if e == nil {
			delete(w.containers, id)
			delete(w.reported, id)
		} else {
			w.containers[id] = e
		}
		if old.visible() != e.visible() || (e.visible() && !resolver.EqualContainer(&old.c, &e.c)) {
			changes = append(changes, change{old: old, new: e})
		}
	}
	w.report(problems)
	switch {
	case full || !w.published:
		w.publishAll()
	case len(changes) > 0 || netsChanged:
		w.publishChanges(changes)
	}
	return nil
}

// maxPatch is the largest batch patched into the last topology; a bigger
// one is assembled and sorted afresh, which costs about the same.
const maxPatch = 64

// publishChanges publishes the last topology with changes applied: each
// old entry is cut out and each new one inserted at its sorted place.
func (w *Watcher) publishChanges(changes []change) {
	if len(changes) > maxPatch {
		w.publishAll()
		return
	}
	cs := make([]resolver.Container, len(w.last.Containers), len(w.last.Containers)+len(changes))
	copy(cs, w.last.Containers)
	for _, ch := range changes {
		if ch.old.visible() {
			if i, ok := slices.BinarySearchFunc(cs, &ch.old.c, cmpTo); ok {
				cs = slices.Delete(cs, i, i+1)
			}
		}
		if ch.new.visible() {
			i, _ := slices.BinarySearchFunc(cs, &ch.new.c, cmpTo)
			cs = slices.Insert(cs, i, ch.new.c)
		}
	}
	if len(cs) == 0 {
		cs = nil // as a full build leaves it (buildTopology in the tests)
	}
	w.send(resolver.Topology{Networks: w.networks, Containers: cs})
}

func cmpTo(a resolver.Container, b *resolver.Container) int { return compareContainers(&a, b) }

// publishAll assembles the topology from every entry and publishes it if it
// changed: the full resync path.
func (w *Watcher) publishAll() {
	var cs []resolver.Container
	for _, e := range w.containers {
		if e.visible() {
			if cs == nil {
				cs = make([]resolver.Container, 0, len(w.containers))
			}
			cs = append(cs, e.c)
		}
	}
	slices.SortFunc(cs, func(a, b resolver.Container) int { return compareContainers(&a, &b) })
	topo := resolver.Topology{Networks: w.networks, Containers: cs}
	if w.published && resolver.EqualTopology(topo, w.last) {
		return
	}
	w.send(topo)
}

func (w *Watcher) send(topo resolver.Topology) {
	w.last, w.published = topo, true
	w.publish(topo)
}

// inspect inspects ids in parallel and returns the live ones by ID, built.
// Containers that are gone or no longer running, paused or restarting are
// left out; any other failure fails the whole call.
func (w *Watcher) inspect(ctx context.Context, ids []string) (map[string]*entry, []Problem, error) {
	var (
		mu       sync.Mutex
		found    = make(map[string]*entry, len(ids))
		problems []Problem
		first    error
		wg       sync.WaitGroup
		sem      = make(chan struct{}, inspectWorkers)
	)
	for _, id := range ids {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			cctx, cancel := context.WithTimeout(ctx, w.opts.CallTimeout)
			c, err := w.cli.ContainerInspect(cctx, id)
			cancel()
			var (
				e  *entry
				ps []Problem
			)
			if err == nil && live(c) {
				e, ps = newEntry(&c) // built here so the response is dropped at once
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case cerrdefs.IsNotFound(err):
			case err != nil:
				if first == nil {
					first = fmt.Errorf("inspect container %.12s: %w", id, err)
				}
			case e != nil:
				found[id] = e
				problems = append(problems, ps...)
			}
		}()
	}
	wg.Wait()
	return found, problems, first
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

// report logs each problem once per container. Labels cannot change on a
// container, so once is enough; the entries go when the container goes.
func (w *Watcher) report(problems []Problem) {
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
