package ops

import (
	"encoding/json"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/sidedns/sidedns/servicemap"
)

// ServiceMap is the lookup map that /api/v1/graph, /api/v1/problems and the
// page's map view show (servicemap.Map).
type ServiceMap interface {
	Graph(since time.Time) servicemap.Graph
	Problems(since time.Time) servicemap.Problems
	ParseSince(s string) (time.Time, bool)
}

// handleGraph serves the map: nodes, edges with their counts over the
// window or since ?since= (a duration back from now, or an RFC 3339 time),
// and the chart series.
func (s *Server) handleGraph(w http.ResponseWriter, r *http.Request) {
	s.serveMap(w, r, func(since time.Time) any { return s.cfg.ServiceMap.Graph(since) })
}

// handleProblems serves names that keep failing, services that are never
// healthy and names that fell open.
func (s *Server) handleProblems(w http.ResponseWriter, r *http.Request) {
	s.serveMap(w, r, func(since time.Time) any { return s.cfg.ServiceMap.Problems(since) })
}

func (s *Server) serveMap(w http.ResponseWriter, r *http.Request, read func(time.Time) any) {
	if s.cfg.ServiceMap == nil {
		writeText(w, http.StatusNotFound, "the service map is off\n")
		return
	}
	since, ok := s.cfg.ServiceMap.ParseSince(r.URL.Query().Get("since"))
	if !ok {
		writeText(w, http.StatusBadRequest, "since: want a duration (5m) or an RFC 3339 time\n")
		return
	}
	var (
		b   []byte
		err error
	)
	if r.URL.Query().Has("pretty") {
		b, err = json.MarshalIndent(read(since), "", "  ")
	} else {
		b, err = json.Marshal(read(since))
	}
	if err != nil {
		s.log.Error("encode service map", zap.Error(err))
		http.Error(w, "encode service map failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(append(b, '\n'))
}
