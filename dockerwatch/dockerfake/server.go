package dockerfake

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	timetypes "github.com/docker/docker/api/types/time"
)

// subscriber is one open /events stream.
type subscriber struct {
	ch     chan events.Message
	done   chan struct{} // closed when the engine cuts the stream
	filter filters.Args
}

// emit records an event and hands it to every matching stream. Callers hold
// e.mu, so events come out in the order the state changed.
func (e *Engine) emit(typ events.Type, action events.Action, id string, attr map[string]string) {
	now := e.opts.Now()
	m := events.Message{
		Type:     typ,
		Action:   action,
		Actor:    events.Actor{ID: id, Attributes: attr},
		Scope:    "local",
		Time:     now.Unix(),
		TimeNano: now.UnixNano(),
	}
	// Keep between History and 2*History events; trimming in halves keeps
	// emit O(1) amortized when Populate emits tens of thousands.
	if len(e.history) >= 2*e.opts.History {
		e.history = append(e.history[:0], e.history[len(e.history)-e.opts.History:]...)
	}
	e.history = append(e.history, m)
	for s := range e.subs {
		if !include(s.filter, m) {
			continue
		}
		select {
		case s.ch <- m:
		default:
			// Too slow: cut the stream, as the daemon does, so the client
			// notices and resyncs instead of silently missing events.
			delete(e.subs, s)
			close(s.done)
		}
	}
}

// include applies the daemon's event filters (daemon/events/filter.go).
func include(f filters.Args, m events.Message) bool {
	matchEvent := f.ExactMatch("event", string(m.Action))
	for _, fuzzy := range []string{"health_status", "exec_create", "exec_start"} {
		if slices.Contains(f.Get("event"), fuzzy) {
			// "health_status" matches "health_status: healthy".
			matchEvent = f.FuzzyMatch("event", string(m.Action))
			break
		}
	}
	name := m.Actor.Attributes["name"]
	return matchEvent &&
		f.ExactMatch("type", string(m.Type)) &&
		f.ExactMatch("scope", m.Scope) &&
		(f.FuzzyMatch("container", m.Actor.ID) || f.FuzzyMatch("container", name)) &&
		(f.FuzzyMatch("network", m.Actor.ID) || f.FuzzyMatch("network", name)) &&
		f.MatchKVList("label", m.Actor.Attributes)
}

// Serve serves the API on l until Close. It returns nil after Close.
func (e *Engine) Serve(l net.Listener) error {
	e.mu.Lock()
	if e.closed.Load() {
		e.mu.Unlock()
		return errors.New("serve: engine closed")
	}
	if e.srv == nil {
		e.srv = &http.Server{
			Handler:           e,
			ReadHeaderTimeout: 10 * time.Second,
			ConnState:         e.track,
		}
	}
	srv := e.srv
	e.mu.Unlock()
	err := srv.Serve(&downListener{Listener: l, e: e})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops serving and ends every event stream.
func (e *Engine) Close() error {
	e.closed.Store(true)
	e.mu.Lock()
	srv := e.srv
	e.endStreams()
	e.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Close()
	e.CloseConnections()
	return err
}

// CloseConnections drops every open connection, event streams included, as
// a daemon restart would. New connections are served as usual unless the
// engine is down.
func (e *Engine) CloseConnections() {
	e.mu.Lock()
	e.endStreams()
	e.mu.Unlock()
	e.connsMu.Lock()
	defer e.connsMu.Unlock()
	for c := range e.conns {
		c.Close()
		delete(e.conns, c)
	}
}

// SetDown simulates the daemon going away (true: open connections are
// dropped and new ones closed as soon as they are accepted) and coming back
// (false). State changes while down are kept, and their events are in the
// history a client can replay with since=.
func (e *Engine) SetDown(down bool) {
	e.down.Store(down)
	if down {
		e.CloseConnections()
	}
}

func (e *Engine) endStreams() {
	for s := range e.subs {
		delete(e.subs, s)
		close(s.done)
	}
}

func (e *Engine) track(c net.Conn, s http.ConnState) {
	e.connsMu.Lock()
	defer e.connsMu.Unlock()
	switch s {
	case http.StateNew:
		e.conns[c] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(e.conns, c)
	}
}

// downListener closes connections at once while the engine is down, which
// clients see as the daemon hanging up.
type downListener struct {
	net.Listener
	e *Engine
}

func (l *downListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || !l.e.down.Load() {
			return c, err
		}
		c.Close()
	}
}

var versionPrefix = regexp.MustCompile(`^/v(\d+\.\d+)(/.*)$`)

// ServeHTTP routes the API paths, with or without a /v1.xx prefix.
func (e *Engine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.requests.Add(1)
	if e.down.Load() {
		// Accepted just before going down.
		panic(http.ErrAbortHandler)
	}
	path := r.URL.Path
	if m := versionPrefix.FindStringSubmatch(path); m != nil {
		if versionNewer(m[1], APIVersion) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("client version %s is too new. Maximum supported API version is %s", m[1], APIVersion))
			return
		}
		path = m[2]
	}
	get := r.Method == http.MethodGet
	switch {
	case path == "/_ping" && (get || r.Method == http.MethodHead):
		e.ping(w, r)
	case path == "/version" && get:
		writeJSON(w, types.Version{
			Version: "20.10.99-dockerfake", APIVersion: APIVersion, MinAPIVersion: MinAPIVersion,
			GitCommit: "dockerfake", GoVersion: runtime.Version(), Os: runtime.GOOS, Arch: runtime.GOARCH,
			Platform: struct{ Name string }{"Docker Engine - dockerfake"},
		})
	case path == "/events" && get:
		e.events(w, r)
	case path == "/containers/json" && get:
		e.listContainers(w, r)
	case strings.HasPrefix(path, "/containers/") && strings.HasSuffix(path, "/json") && get:
		e.inspectContainer(w, strings.TrimSuffix(strings.TrimPrefix(path, "/containers/"), "/json"))
	case (path == "/networks" || path == "/networks/") && get:
		e.listNetworks(w, r)
	case strings.HasPrefix(path, "/networks/") && get:
		e.inspectNetwork(w, strings.TrimPrefix(path, "/networks/"))
	default:
		writeError(w, http.StatusNotFound, "page not found")
	}
}

func (e *Engine) ping(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Api-Version", APIVersion)
	h.Set("Ostype", runtime.GOOS)
	h.Set("Docker-Experimental", "false")
	h.Set("Cache-Control", "no-cache, no-store, must-revalidate")
	h.Set("Pragma", "no-cache")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	if r.Method == http.MethodHead {
		h.Set("Content-Length", "0")
		return
	}
	_, _ = w.Write([]byte("OK"))
}

func (e *Engine) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, err := filters.FromJSON(q.Get("filters"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var since, until int64 = -1, -1
	for key, dst := range map[string]*int64{"since": &since, "until": &until} {
		if v := q.Get(key); v != "" {
			s, ns, err := timetypes.ParseTimestamps(v, 0)
			if err != nil {
				writeError(w, http.StatusBadRequest, err.Error())
				return
			}
			*dst = s*int64(time.Second) + ns
		}
	}
	if since > 0 && until > 0 && since > until {
		writeError(w, http.StatusBadRequest, "since time must be before until time")
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}

	// Headers go out before the subscription, as in the daemon: an event in
	// between is only seen by a client that asked with since=.
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	fl.Flush()

	sub := &subscriber{ch: make(chan events.Message, e.opts.StreamBuffer), done: make(chan struct{}), filter: f}
	e.mu.Lock()
	var replay []events.Message
	if since >= 0 {
		for _, m := range e.history {
			if m.TimeNano >= since && (until < 0 || m.TimeNano <= until) && include(f, m) {
				replay = append(replay, m)
			}
		}
	}
	live := until < 0 || until > e.opts.Now().UnixNano()
	if live {
		e.subs[sub] = struct{}{}
	}
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.subs, sub)
		e.mu.Unlock()
	}()

	enc := json.NewEncoder(w)
	for _, m := range replay {
		if enc.Encode(m) != nil {
			return
		}
		fl.Flush()
	}
	if !live {
		return
	}
	var deadline <-chan time.Time
	if until >= 0 {
		t := time.NewTimer(time.Duration(until - e.opts.Now().UnixNano()))
		defer t.Stop()
		deadline = t.C
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-sub.done:
			return
		case <-deadline:
			return
		case m := <-sub.ch:
			if enc.Encode(m) != nil {
				return
			}
			fl.Flush()
		}
	}
}

func (e *Engine) listContainers(w http.ResponseWriter, r *http.Request) {
	f, err := filters.FromJSON(r.URL.Query().Get("filters"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]container.Summary, 0, len(e.order))
	// Newest first, like docker ps.
	for i := len(e.order) - 1; i >= 0; i-- {
		c := e.ctrs[e.order[i]]
		if !e.matchContainer(f, c) {
			continue
		}
		out = append(out, e.summary(c))
	}
	writeJSON(w, out)
}

func (e *Engine) matchContainer(f filters.Args, c *fakeContainer) bool {
	if f.Len() == 0 {
		return true
	}
	name := strings.TrimPrefix(c.resp.Name, "/")
	if !f.FuzzyMatch("id", c.resp.ID) || !(f.Match("name", name) || f.Match("name", c.resp.Name)) ||
		!f.ExactMatch("status", c.resp.State.Status) || !f.MatchKVList("label", c.resp.Config.Labels) {
		return false
	}
	if f.Contains("network") {
		for netName, es := range c.resp.NetworkSettings.Networks {
			if f.ExactMatch("network", netName) || f.FuzzyMatch("network", es.NetworkID) {
				return true
			}
		}
		return false
	}
	return true
}

func (e *Engine) summary(c *fakeContainer) container.Summary {
	status := "Up " + upFor(e.opts.Now().Unix()-c.created)
	if h := c.resp.State.Health; h != nil {
		status += " (" + string(h.Status) + ")"
		if h.Status == container.Starting {
			status = strings.TrimSuffix(status, "(starting)") + "(health: starting)"
		}
	}
	s := container.Summary{
		ID:              c.resp.ID,
		Names:           []string{c.resp.Name},
		Image:           c.resp.Config.Image,
		ImageID:         c.resp.Image,
		Command:         "/app",
		Created:         c.created,
		Ports:           []container.Port{},
		Labels:          c.resp.Config.Labels,
		State:           c.resp.State.Status,
		Status:          status,
		NetworkSettings: &container.NetworkSettingsSummary{Networks: c.resp.NetworkSettings.Networks},
		Mounts:          []container.MountPoint{},
	}
	s.HostConfig.NetworkMode = string(c.resp.HostConfig.NetworkMode)
	for p := range c.resp.Config.ExposedPorts {
		s.Ports = append(s.Ports, container.Port{PrivatePort: uint16(p.Int()), Type: p.Proto()})
	}
	return s
}

func upFor(secs int64) string {
	switch {
	case secs < 1:
		return "Less than a second"
	case secs < 60:
		return fmt.Sprintf("%d seconds", secs)
	default:
		return fmt.Sprintf("%d minutes", secs/60)
	}
}

func (e *Engine) inspectContainer(w http.ResponseWriter, ref string) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	c := e.containerLocked(ref)
	if c == nil || ref == "" {
		writeError(w, http.StatusNotFound, "No such container: "+ref)
		return
	}
	writeJSON(w, c.resp)
}

func (e *Engine) listNetworks(w http.ResponseWriter, r *http.Request) {
	f, err := filters.FromJSON(r.URL.Query().Get("filters"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]network.Summary, 0, len(e.nets))
	for _, n := range e.nets {
		if !f.Match("name", n.inspect.Name) || !f.FuzzyMatch("id", n.inspect.ID) ||
			!f.ExactMatch("driver", n.inspect.Driver) || !f.MatchKVList("label", n.inspect.Labels) {
			continue
		}
		s := n.inspect
		s.Containers = map[string]network.EndpointResource{} // the list leaves them out
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b network.Summary) int { return strings.Compare(a.Name, b.Name) })
	writeJSON(w, out)
}

func (e *Engine) inspectNetwork(w http.ResponseWriter, ref string) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	n := e.networkLocked(ref)
	if n == nil || ref == "" {
		writeError(w, http.StatusNotFound, "network "+ref+" not found")
		return
	}
	writeJSON(w, n.inspect)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

// versionNewer reports whether API version a is newer than b ("1.41").
func versionNewer(a, b string) bool {
	var am, an, bm, bn int
	fmt.Sscanf(a, "%d.%d", &am, &an)
	fmt.Sscanf(b, "%d.%d", &bm, &bn)
	return am > bm || (am == bm && an > bn)
}
