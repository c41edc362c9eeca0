// Package ops is sidedns's HTTP surface for operators: Prometheus metrics,
// liveness and readiness probes, the table as JSON, and a live page for
// people that updates over server-sent events.
//
// It depends on the rest of sidedns only through the func fields of Config,
// so it never reaches into another package's internals.
package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sidedns/sidedns/resolver"
)

const (
	// eventRingSize is how many recent events the page shows.
	eventRingSize = 50
	// defaultPushInterval caps SSE pushes at 10/s: a burst of Docker events
	// (compose up of 50 containers) becomes a handful of pushes, not 50.
	defaultPushInterval = 100 * time.Millisecond
	// defaultRefreshInterval re-sends state without events, so cache and
	// upstream counters on the page do not go stale.
	defaultRefreshInterval = 5 * time.Second
	// heartbeatInterval keeps idle SSE connections alive through proxies and
	// finds dead clients.
	heartbeatInterval = 15 * time.Second
	// sseWriteTimeout drops a client that stops reading instead of letting
	// it hold a goroutine and a payload forever.
	sseWriteTimeout = 10 * time.Second
	// maxSSEClients bounds the goroutines and memory that page viewers cost.
	maxSSEClients = 64
	// readHeaderTimeout bounds slow-header clients (Slowloris).
	readHeaderTimeout = 5 * time.Second
)

// Event kinds, as shown on the page.
const (
	KindContainer = "container"
	KindNetwork   = "network"
	KindHealth    = "health"
)

// Event is a table-changing Docker event, for the page's "last events" list.
type Event struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"`   // KindContainer, KindNetwork or KindHealth
	Action string    `json:"action"` // Docker's action: start, die, connect, healthy...
	Name   string    `json:"name"`   // container or network name
}

// Config is what the ops server reads from the rest of sidedns. Every func
// must be safe for concurrent use; all are optional.
type Config struct {
	// Addr is the TCP address to listen on, e.g. "127.0.0.1:8053".
	Addr string
	// Records returns the current table and the names the resolver answers
	// from it (resolver.Resolver.Records). Nil means an empty table.
	Records func() (resolver.Topology, []resolver.Record)
	// ServiceMap is shown on /api/v1/graph, /api/v1/problems and the page's
	// map view. Nil means off (404).
	ServiceMap ServiceMap
	// Ready reports whether the first Docker sync has happened. Nil means
	// always ready.
	Ready func() bool
	// Registry is served on /metrics. Nil means NewRegistry().
	Registry *prometheus.Registry
	// Logger defaults to zap.NewNop().
	Logger *zap.Logger
	// Extra returns cache, upstream and Docker state for the page, as
	// JSON-encodable values: top-level key -> object, list of objects or
	// scalar. Nil means none.
	Extra func() map[string]any
	// Cluster returns the other hosts and their records for
	// /api/v1/records (JSON-encodable). Nil, or a nil result, means none.
	Cluster func() any
	// Now defaults to time.Now; it stamps events that arrive without a time.
	Now func() time.Time
	// PushInterval is the minimum gap between SSE pushes (default 100ms).
	PushInterval time.Duration
	// RefreshInterval re-sends state to SSE clients without events
	// (default 5s).
	RefreshInterval time.Duration
}

// Update is the payload of each SSE "update" event: the table plus what the
// page needs around it.
type Update struct {
	Records
	Ready  bool           `json:"ready"`
	Events []Event        `json:"events"` // newest first
	Extra  map[string]any `json:"extra"`
}

// Server is the ops HTTP server. Create it with New, then Start it, and
// always call Shutdown: it also stops the SSE pusher goroutine.
type Server struct {
	cfg     Config
	log     *zap.Logger
	handler http.Handler
	hub     *hub

	mu     sync.Mutex
	ln     net.Listener
	srv    *http.Server
	closed bool
	events [eventRingSize]Event
	head   int // index of the next slot to write
	count  int

	wake     chan struct{} // one slot: a pending push, coalesced
	quit     chan struct{} // closed by Shutdown
	quitOnce sync.Once
	done     chan struct{} // closed when the pusher exits
}

// New builds a server from cfg and starts its SSE pusher.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Registry == nil {
		cfg.Registry = NewRegistry()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PushInterval <= 0 {
		cfg.PushInterval = defaultPushInterval
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = defaultRefreshInterval
	}
	s := &Server{
		cfg:  cfg,
		log:  cfg.Logger.Named("ops"),
		hub:  newHub(maxSSEClients),
		wake: make(chan struct{}, 1),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	s.handler = s.routes()
	go s.pushLoop()
	return s
}

// Start binds cfg.Addr and serves in the background. A port that cannot be
// bound is returned as an error that names the address.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("start ops http server: already shut down")
	}
	if s.srv != nil {
		return errors.New("start ops http server: already started")
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen ops http on %s: %w (use --http to pick another address, or --http=off)", s.cfg.Addr, err)
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		// No WriteTimeout: SSE streams are long-lived and set their own
		// per-write deadlines.
		ErrorLog: zap.NewStdLog(s.log),
	}
	srv := s.srv
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("serve ops http", zap.Error(err))
		}
	}()
	s.log.Info("ops http listening", zap.String("addr", ln.Addr().String()))
	return nil
}

// Shutdown ends SSE streams, stops the pusher, and gracefully stops the HTTP
// server within ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	srv := s.srv
	s.mu.Unlock()
	// SSE handlers never go idle; closing quit ends them so that
	// http.Server.Shutdown can finish.
	s.quitOnce.Do(func() { close(s.quit) })
	select {
	case <-s.done:
	case <-ctx.Done():
		return fmt.Errorf("stop ops pusher: %w", ctx.Err())
	}
	if srv == nil {
		return nil
	}
	if err := srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("shut down ops http server: %w", err)
	}
	return nil
}

// Notify records a table-changing event and schedules a push to SSE
// clients. Call it after the new table is published, so the push carries
// it. It never blocks.
func (s *Server) Notify(ev Event) {
	if ev.Time.IsZero() {
		ev.Time = s.cfg.Now()
	}
	s.mu.Lock()
	s.events[s.head] = ev
	s.head = (s.head + 1) % eventRingSize
	if s.count < eventRingSize {
		s.count++
	}
	s.mu.Unlock()
	s.kick()
}

// Refresh schedules a push without recording an event, e.g. after a resync.
func (s *Server) Refresh() { s.kick() }

func (s *Server) kick() {
	select {
	case s.wake <- struct{}{}:
	default: // a push is already pending; it will carry this change too
	}
}

// Events returns the recorded events, newest first.
func (s *Server) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Event, 0, s.count)
	for i := 1; i <= s.count; i++ {
		out = append(out, s.events[(s.head-i+eventRingSize)%eventRingSize])
	}
	return out
}

func (s *Server) records() Records {
	if s.cfg.Records == nil {
		return BuildRecords(resolver.Topology{}, nil)
	}
	return BuildRecords(s.cfg.Records())
}

func (s *Server) ready() bool {
	return s.cfg.Ready == nil || s.cfg.Ready()
}

// update builds and encodes the SSE payload.
func (s *Server) update() []byte {
	u := Update{
		Records: s.records(),
		Ready:   s.ready(),
		Events:  s.Events(),
		Extra:   map[string]any{},
	}
	if s.cfg.Extra != nil {
		if x := s.cfg.Extra(); x != nil {
			u.Extra = x
		}
	}
	b, err := json.Marshal(u)
	if err != nil {
		// Extra is the only part that can fail to encode; drop it rather
		// than the table.
		s.log.Error("encode ops update", zap.Error(err))
		u.Extra = map[string]any{"error": "extra state could not be encoded"}
		b, _ = json.Marshal(u)
	}
	return b
}

// pushLoop sends at most one update per PushInterval to SSE clients, so
// bursts of Notify calls coalesce into one push carrying the latest state.
func (s *Server) pushLoop() {
	defer close(s.done)
	refresh := time.NewTicker(s.cfg.RefreshInterval)
	defer refresh.Stop()
	// Since Go 1.23 a stopped timer never delivers a stale tick on Reset.
	pause := time.NewTimer(s.cfg.PushInterval)
	pause.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-s.wake:
		case <-refresh.C:
		}
		if s.hub.len() > 0 {
			s.hub.broadcast(s.update())
		}
		pause.Reset(s.cfg.PushInterval)
		select {
		case <-s.quit:
			return
		case <-pause.C:
		}
	}
}
