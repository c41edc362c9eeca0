package dockerwatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sidedns/sidedns/resolver"
)

// waitLimit only bounds a failing test; nothing asserts speed.
const waitLimit = 5 * time.Second

// sub is one Events subscription of the fake.
type sub struct {
	opts events.ListOptions
	msgs chan events.Message
	errs chan error
}

// fakeDocker is a partial Client: unimplemented methods would panic through
// the nil embedded interface.
type fakeDocker struct {
	Client

	mu         sync.Mutex
	calls      []string
	containers map[string]container.InspectResponse
	networks   []network.Summary
	down       bool          // daemon unreachable
	gate       chan struct{} // when set, the next inspect waits for it to close
	subs       chan *sub
}

func newFake(cs ...container.InspectResponse) *fakeDocker {
	f := &fakeDocker{
		containers: map[string]container.InspectResponse{},
		networks:   []network.Summary{{ID: "n1", Name: "net1", IPAM: network.IPAM{Config: []network.IPAMConfig{{Subnet: "10.1.0.0/16"}}}}},
		subs:       make(chan *sub, 64),
	}
	for _, c := range cs {
		f.containers[c.ID] = c
	}
	return f
}

var errDown = errors.New("cannot connect to the Docker daemon at unix:///var/run/docker.sock")

func (f *fakeDocker) record(call string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	return f.down
}

func (f *fakeDocker) Events(ctx context.Context, opts events.ListOptions) (<-chan events.Message, <-chan error) {
	s := &sub{opts: opts, msgs: make(chan events.Message), errs: make(chan error, 1)}
	if f.record("events") {
		s.errs <- errDown
	}
	f.subs <- s
	return s.msgs, s.errs
}

func (f *fakeDocker) ContainerList(ctx context.Context, _ container.ListOptions) ([]container.Summary, error) {
	if f.record("list") {
		return nil, errDown
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []container.Summary
	for id, c := range f.containers {
		if live(c) {
			out = append(out, container.Summary{ID: id})
		}
	}
	return out, nil
}

func (f *fakeDocker) ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error) {
	if f.record("inspect " + id) {
		return container.InspectResponse{}, errDown
	}
	f.mu.Lock()
	gate := f.gate
	f.gate = nil
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return c, fmt.Errorf("no such container: %s: %w", id, cerrdefs.ErrNotFound)
	}
	return c, nil
}

func (f *fakeDocker) NetworkList(ctx context.Context, _ network.ListOptions) ([]network.Summary, error) {
	if f.record("networks") {
		return nil, errDown
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.networks), nil
}

func (f *fakeDocker) set(c container.InspectResponse) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers[c.ID] = c
}

func (f *fakeDocker) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeDocker) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

// nextSub waits for the watcher's next subscription.
func (f *fakeDocker) nextSub(tb testing.TB) *sub {
	tb.Helper()
	select {
	case s := <-f.subs:
		return s
	case <-time.After(waitLimit):
		tb.Fatal("watcher did not subscribe to events")
		return nil
	}
}

// send delivers an event on s.
func (s *sub) send(tb testing.TB, m events.Message) {
	tb.Helper()
	select {
	case s.msgs <- m:
	case <-time.After(waitLimit):
		tb.Fatal("watcher did not read the event")
	}
}

func containerEvent(action events.Action, id string) events.Message {
	return events.Message{Type: events.ContainerEventType, Action: action, Actor: events.Actor{ID: id}}
}

// recorder collects published topologies.
type recorder struct {
	mu    sync.Mutex
	topos []resolver.Topology
	ch    chan struct{}
}

func newRecorder() *recorder { return &recorder{ch: make(chan struct{}, 1)} }

func (r *recorder) publish(t resolver.Topology) {
	r.mu.Lock()
	r.topos = append(r.topos, t)
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.topos)
}

// waitFor waits until the latest topology satisfies ok and returns it.
func (r *recorder) waitFor(tb testing.TB, what string, ok func(resolver.Topology) bool) resolver.Topology {
	tb.Helper()
	return waitUntil(tb, r, waitLimit, what, ok)
}

// waitUntil is waitFor with its own limit.
func waitUntil(tb testing.TB, r *recorder, limit time.Duration, what string, ok func(resolver.Topology) bool) resolver.Topology {
	tb.Helper()
	deadline := time.After(limit)
	for {
		r.mu.Lock()
		var last resolver.Topology
		have := len(r.topos) > 0
		if have {
			last = r.topos[len(r.topos)-1]
		}
		r.mu.Unlock()
		if have && ok(last) {
			return last
		}
		select {
		case <-r.ch:
		case <-deadline:
			tb.Fatalf("within %v: no published topology where %s; last: %+v", limit, what, last)
		}
	}
}

func find(t resolver.Topology, name string) (resolver.Container, bool) {
	for _, c := range t.Containers {
		if c.Name == name {
			return c, true
		}
	}
	return resolver.Container{}, false
}

func has(name string) func(resolver.Topology) bool {
	return func(t resolver.Topology) bool { _, ok := find(t, name); return ok }
}

func hasNot(name string) func(resolver.Topology) bool {
	return func(t resolver.Topology) bool { _, ok := find(t, name); return !ok }
}

// startWatcher runs a Watcher on f until the test ends.
func startWatcher(tb testing.TB, f Client, log *zap.Logger, opts Options) (*Watcher, *recorder) {
	tb.Helper()
	rec := newRecorder()
	w := New(f, rec.publish, log, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("Run returned %v after cancel, want nil", err)
			}
		case <-time.After(waitLimit):
			tb.Error("Run did not return after cancel")
		}
	})
	return w, rec
}

func endpointOn(ip string) func(*container.InspectResponse) {
	return withEndpoint("net1", "n1", network.EndpointSettings{IPAddress: ip})
}

func TestWatcherSubscribesBeforeListing(t *testing.T) {
	f := newFake(ctr("id-a", "a", endpointOn("10.1.0.2")))
	w, rec := startWatcher(t, f, zap.NewNop(), Options{})
	s := f.nextSub(t)
	rec.waitFor(t, "a is present", has("a"))

	calls := f.callLog()
	if calls[0] != "events" || !slices.Contains(calls, "list") {
		t.Errorf("calls = %v, want events first, then list", calls)
	}
	if !w.Ready() || !w.Connected() {
		t.Errorf("Ready, Connected = %v, %v after sync", w.Ready(), w.Connected())
	}

	// The filter asks only for table-changing events.
	ev := s.opts.Filters.Get("event")
	for _, want := range []string{"start", "die", "destroy", "rename", "pause", "unpause", "health_status", "connect", "disconnect"} {
		if !slices.Contains(ev, want) {
			t.Errorf("event filter %v lacks %q", ev, want)
		}
	}
	for _, e := range ev {
		if strings.HasPrefix(e, "exec_") {
			t.Errorf("event filter lets %q through", e)
		}
	}
	if typ := s.opts.Filters.Get("type"); !slices.Equal(sorted(typ), []string{"container", "network"}) {
		t.Errorf("type filter = %v", typ)
	}
	if s.opts.Since == "" {
		t.Error("no Since: events between subscribe and list could be lost")
	}
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

func TestWatcherFollowsEvents(t *testing.T) {
	f := newFake(ctr("id-a", "a", endpointOn("10.1.0.2")))
	w, rec := startWatcher(t, f, zap.NewNop(), Options{})
	s := f.nextSub(t)
	rec.waitFor(t, "a is present", has("a"))

	// start: the new container appears.
	f.set(ctr("id-b", "b", endpointOn("10.1.0.3")))
	s.send(t, containerEvent(events.ActionStart, "id-b"))
	rec.waitFor(t, "b appears after start", has("b"))

	// health_status: answered from the action, without an inspect.
	before := len(f.callLog())
	s.send(t, containerEvent("health_status: unhealthy", "id-b"))
	rec.waitFor(t, "b is unhealthy", func(tp resolver.Topology) bool {
		c, ok := find(tp, "b")
		return ok && c.Health == resolver.HealthUnhealthy
	})
	if calls := f.callLog()[before:]; slices.Contains(calls, "inspect id-b") {
		t.Errorf("health event caused an inspect: %v", calls)
	}

	// pause: re-inspected.
	f.set(ctr("id-b", "b", endpointOn("10.1.0.3"), withState(container.State{Running: true, Paused: true})))
	s.send(t, containerEvent(events.ActionPause, "id-b"))
	rec.waitFor(t, "b is paused", func(tp resolver.Topology) bool {
		c, ok := find(tp, "b")
		return ok && c.State == resolver.StatePaused
	})

	// network connect: the container and the network list are re-read.
	f.mu.Lock()
	f.networks = append(f.networks, network.Summary{ID: "n2", Name: "net2", Internal: true})
	f.mu.Unlock()
	f.set(ctr("id-a", "a", endpointOn("10.1.0.2"), withEndpoint("net2", "n2", network.EndpointSettings{IPAddress: "10.2.0.2"})))
	s.send(t, events.Message{Type: events.NetworkEventType, Action: events.ActionConnect,
		Actor: events.Actor{ID: "n2", Attributes: map[string]string{"container": "id-a", "name": "net2"}}})
	rec.waitFor(t, "a is on net2 (last, as it is internal)", func(tp resolver.Topology) bool {
		c, ok := find(tp, "a")
		return ok && len(c.Endpoints) == 2 && c.Endpoints[1].NetworkName == "net2" && len(tp.Networks) == 2
	})

	// rename.
	f.set(ctr("id-a", "a2", endpointOn("10.1.0.2")))
	s.send(t, containerEvent(events.ActionRename, "id-a"))
	rec.waitFor(t, "a is renamed a2", func(tp resolver.Topology) bool { return has("a2")(tp) && hasNot("a")(tp) })

	// die: removed.
	s.send(t, containerEvent(events.ActionDie, "id-b"))
	rec.waitFor(t, "b is gone after die", hasNot("b"))

	// Events that do not change the table are not even counted.
	n := w.Stats.Events.Load()
	s.send(t, containerEvent("exec_start: /bin/true", "id-a"))
	s.send(t, events.Message{Type: events.ImageEventType, Action: events.ActionPull})
	s.send(t, containerEvent(events.ActionDestroy, "id-a")) // counted; a sync point
	rec.waitFor(t, "a2 gone after destroy", hasNot("a2"))
	if got := w.Stats.Events.Load(); got != n+1 {
		t.Errorf("Events counter went %d -> %d, want +1", n, got)
	}
}

func TestWatcherCoalescesBursts(t *testing.T) {
	f := newFake()
	w, rec := startWatcher(t, f, zap.NewNop(), Options{})
	s := f.nextSub(t)
	rec.waitFor(t, "the first sync", func(resolver.Topology) bool { return true })
	synced := rec.count()

	const n = 100
	for i := range n {
		f.set(ctr(fmt.Sprintf("id-%03d", i), fmt.Sprintf("c%03d", i), endpointOn(fmt.Sprintf("10.1.0.%d", i+2))))
	}
	// Hold the first inspect until the whole burst has been read, as if the
	// daemon were slow: the other 99 events must become one rebuild.
	gate := make(chan struct{})
	f.mu.Lock()
	f.gate = gate
	f.mu.Unlock()
	for i := range n {
		s.send(t, containerEvent(events.ActionStart, fmt.Sprintf("id-%03d", i)))
	}
	close(gate)
	rec.waitFor(t, "all 100 containers", func(tp resolver.Topology) bool { return len(tp.Containers) == n })

	// One rebuild for the first event, one for the rest, and at most one
	// more for an event read after the second batch was taken.
	got := rec.count() - synced
	t.Logf("%d publishes for %d events", got, n)
	if got > 3 {
		t.Errorf("%d publishes for a burst of %d events, want at most 3", got, n)
	}
	if got := w.Stats.Events.Load(); got != n {
		t.Errorf("Events = %d, want %d", got, n)
	}
	inspects := 0
	for _, c := range f.callLog() {
		if strings.HasPrefix(c, "inspect ") {
			inspects++
		}
	}
	if inspects != n {
		t.Errorf("%d inspects, want %d (one per container)", inspects, n)
	}
}

func TestWatcherResyncsAfterStreamError(t *testing.T) {
	f := newFake(ctr("id-a", "a", endpointOn("10.1.0.2")))
	w, rec := startWatcher(t, f, zap.NewNop(), Options{MinBackoff: time.Millisecond})
	s1 := f.nextSub(t)
	rec.waitFor(t, "a is present", has("a"))

	// While the stream is broken, b starts and a goes away unseen.
	f.mu.Lock()
	delete(f.containers, "id-a")
	f.mu.Unlock()
	f.set(ctr("id-b", "b", endpointOn("10.1.0.3")))
	mark := len(f.callLog())
	s1.errs <- io.ErrUnexpectedEOF

	s2 := f.nextSub(t)
	rec.waitFor(t, "b present and a gone after resync", func(tp resolver.Topology) bool { return has("b")(tp) && hasNot("a")(tp) })
	calls := f.callLog()[mark:]
	if i, j := slices.Index(calls, "events"), slices.Index(calls, "list"); i < 0 || j < i {
		t.Errorf("calls after the error = %v, want a new subscribe before the list", calls)
	}
	if w.Stats.Resyncs.Load() < 2 || w.Stats.Errors.Load() < 1 {
		t.Errorf("Resyncs, Errors = %d, %d", w.Stats.Resyncs.Load(), w.Stats.Errors.Load())
	}

	// The new stream works.
	f.set(ctr("id-c", "c", endpointOn("10.1.0.4")))
	s2.send(t, containerEvent(events.ActionStart, "id-c"))
	rec.waitFor(t, "c appears on the new stream", has("c"))
}

func TestWatcherRetriesUnreachableDaemon(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	f := newFake(ctr("id-a", "a", endpointOn("10.1.0.2")))
	f.setDown(true)
	w, rec := startWatcher(t, f, zap.New(core), Options{MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond})

	for range 5 {
		f.nextSub(t)
	}
	if w.Ready() || w.Connected() || rec.count() != 0 {
		t.Fatalf("Ready, Connected, publishes = %v, %v, %d while the daemon is down", w.Ready(), w.Connected(), rec.count())
	}
	if n := logs.FilterLevelExact(zapcore.WarnLevel).Len(); n != 1 {
		t.Errorf("%d warnings for one outage, want 1", n)
	}
	if logs.FilterLevelExact(zapcore.DebugLevel).Len() < 3 {
		t.Error("retries are not logged at debug level")
	}

	f.setDown(false)
	rec.waitFor(t, "a appears once the daemon is back", has("a"))
	if !w.Ready() {
		t.Error("not Ready after the daemon came back")
	}
	if logs.FilterMessage("docker sync complete").Len() != 1 {
		t.Error("the first sync is not logged")
	}
}

func TestWatcherPeriodicResync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		w, rec := startWatcher(t, f, zap.NewNop(), Options{ResyncInterval: 5 * time.Millisecond})
		f.nextSub(t)
		rec.waitFor(t, "the first sync", func(resolver.Topology) bool { return true })
		// No event for this one: only the periodic resync can find it.
		f.set(ctr("id-a", "a", endpointOn("10.1.0.2")))
		rec.waitFor(t, "a found by a periodic resync", has("a"))
		if w.Stats.Resyncs.Load() < 2 {
			t.Errorf("Resyncs = %d", w.Stats.Resyncs.Load())
		}
		// Unchanged resyncs publish nothing new. The bubble's clock moves
		// four intervals at once; Wait lets the watcher finish each resync.
		n, r0 := rec.count(), w.Stats.Resyncs.Load()
		time.Sleep(4 * 5 * time.Millisecond)
		synctest.Wait()
		if r := w.Stats.Resyncs.Load() - r0; r < 4 {
			t.Fatalf("%d resyncs in four intervals, want at least 4", r)
		}
		if rec.count() != n {
			t.Errorf("unchanged resyncs published %d times", rec.count()-n)
		}
	})
}

func TestWatcherLogsLabelProblemOnce(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	f := newFake(ctr("id-a", "a", endpointOn("10.1.0.2"), withLabel("sidedns.ttl", "soon"), withLabel("sidedns.names", "-x,y..")))
	_, rec := startWatcher(t, f, zap.New(core), Options{})
	s := f.nextSub(t)
	rec.waitFor(t, "a present", has("a"))
	for i := range 5 { // each start rebuilds the table
		f.set(ctr(fmt.Sprintf("id-%d", i), fmt.Sprintf("n%d", i), endpointOn(fmt.Sprintf("10.1.1.%d", i+1))))
		s.send(t, containerEvent(events.ActionStart, fmt.Sprintf("id-%d", i)))
	}
	rec.waitFor(t, "all started", has("n4"))

	entries := logs.FilterMessage("ignoring malformed container setting").All()
	var got []string
	for _, e := range entries {
		got = append(got, e.ContextMap()["label"].(string))
		if e.ContextMap()["container"] != "a" {
			t.Errorf("log without the container name: %v", e.ContextMap())
		}
	}
	slices.Sort(got)
	// Two bad entries in sidedns.names, one bad ttl: three lines, once each.
	if want := []string{"sidedns.names", "sidedns.names", "sidedns.ttl"}; !slices.Equal(got, want) {
		t.Errorf("logged %v, want %v", got, want)
	}
}

// A fake that only implements Events shows the interface is narrow enough to
// embed; a list failure is a session error, never a panic.
func TestWatcherListFailureIsRetried(t *testing.T) {
	f := &listFails{fakeDocker: newFake()}
	w, _ := startWatcher(t, f, zap.NewNop(), Options{MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	f.nextSub(t)
	f.nextSub(t)
	if w.Ready() || w.Stats.Errors.Load() == 0 {
		t.Errorf("Ready, Errors = %v, %d", w.Ready(), w.Stats.Errors.Load())
	}
}

type listFails struct{ *fakeDocker }

func (l *listFails) ContainerList(context.Context, container.ListOptions) ([]container.Summary, error) {
	return nil, errors.New("500 internal server error")
}
