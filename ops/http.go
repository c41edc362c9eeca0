package ops

import (
	"bytes"
	"embed"
	"encoding/json"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

//go:embed web/index.html web/app.js web/map.js web/style.css
var webFiles embed.FS

// contentSecurityPolicy allows only our own script, style and SSE stream:
// even if escaping failed somewhere, injected markup could not run script.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func (s *Server) routes() http.Handler {
	web, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic("ops: embedded web files missing: " + err.Error()) // build-time invariant
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{
		ErrorLog: zap.NewStdLog(s.log),
		Registry: s.cfg.Registry, // counts its own errors
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusOK, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready() {
			writeText(w, http.StatusServiceUnavailable, "waiting for the first Docker sync\n")
			return
		}
		writeText(w, http.StatusOK, "ready\n")
	})
	mux.HandleFunc("GET /api/v1/records", s.handleRecords)
	mux.HandleFunc("GET /api/v1/events", s.handleEvents)
	mux.HandleFunc("GET /api/v1/graph", s.handleGraph)
	mux.HandleFunc("GET /api/v1/problems", s.handleProblems)
	static := http.FileServerFS(web)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", contentSecurityPolicy)
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, web, "index.html")
	})
	for _, name := range []string{"/app.js", "/map.js", "/style.css"} {
		mux.Handle("GET "+name, noCache(static))
	}
	return securityHeaders(mux)
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hostAllowed(r.Host) {
			writeText(w, http.StatusMisdirectedRequest, "use an IP address or a single-label host name\n")
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

func noCache(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The files are tiny; always revalidating means a new binary's page
		// never mixes with an old script.
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

func (s *Server) handleRecords(w http.ResponseWriter, r *http.Request) {
	recs := s.records()
	if s.cfg.Cluster != nil {
		recs.Cluster = s.cfg.Cluster()
	}
	var (
		b   []byte
		err error
	)
	if r.URL.Query().Has("pretty") {
		b, err = json.MarshalIndent(recs, "", "  ")
	} else {
		b, err = json.Marshal(recs)
	}
	if err != nil {
		s.log.Error("encode records", zap.Error(err))
		http.Error(w, "encode records failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(append(b, '\n'))
}

// handleEvents streams "update" events: the current state at once, then
// whenever the pusher broadcasts a change.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	c, ok := s.hub.add()
	if !ok {
		http.Error(w, "too many live viewers", http.StatusServiceUnavailable)
		return
	}
	defer s.hub.remove(c)

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)

	var last []byte
	send := func(frame []byte) bool {
		// Best effort: a ResponseWriter without deadlines just skips this.
		_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
		if _, err := w.Write(frame); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	sendUpdate := func(payload []byte) bool {
		if bytes.Equal(payload, last) {
			return true // a refresh with nothing new
		}
		last = payload
		frame := make([]byte, 0, len(payload)+24)
		frame = append(frame, "event: update\ndata: "...)
		frame = append(frame, payload...)
		frame = append(frame, "\n\n"...)
		return send(frame)
	}
	// retry: tells EventSource how soon to reconnect after sidedns restarts.
	if !send([]byte("retry: 2000\n\n")) || !sendUpdate(s.update()) {
		return
	}
	heartbeat := time.NewTicker(heartbeatInterval)
	defer heartbeat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.quit:
			return
		case p := <-c.ch:
			if !sendUpdate(p) {
				return
			}
		case <-heartbeat.C:
			if !send([]byte(": ping\n\n")) {
				return
			}
		}
	}
}

// hub tracks SSE clients. Each client has a one-slot mailbox where the
// newest payload replaces an unread one: a slow viewer skips states instead
// of queueing them.
type hub struct {
	mu      sync.Mutex
	max     int
	clients map[*sseClient]struct{}
}

type sseClient struct {
	ch chan []byte
}

func newHub(max int) *hub {
	return &hub{max: max, clients: make(map[*sseClient]struct{})}
}

func (h *hub) add() (*sseClient, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.clients) >= h.max {
		return nil, false
	}
	c := &sseClient{ch: make(chan []byte, 1)}
	h.clients[c] = struct{}{}
	return c, true
}

func (h *hub) remove(c *sseClient) {
	h.mu.Lock()
	delete(h.clients, c)
	h.mu.Unlock()
}

func (h *hub) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

func (h *hub) broadcast(p []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		// Only broadcast sends, under h.mu, so after the drain the send
		// cannot block.
		select {
		case <-c.ch:
		default:
		}
		c.ch <- p
	}
}

// hostAllowed guards against DNS rebinding: a web page on a name the attacker
// controls (which has dots) must not read the table through a browser. IP
// literals and single-label names (localhost, a compose service name) are
// fine.
func hostAllowed(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return !strings.Contains(host, ".")
}
