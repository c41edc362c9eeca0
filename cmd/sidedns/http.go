package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// readHeaderTimeout keeps a slow client from holding a connection open.
const readHeaderTimeout = 5 * time.Second

// startHTTP serves the ops surface on --http. This is the hook the ops
// surface plugs into (/metrics, /api/v1/records, the live page); for now it
// answers /healthz (alive) and /readyz (first Docker sync done).
func (a *app) startHTTP(cfg config) error {
	if cfg.HTTP == "" {
		return nil
	}
	ln, err := net.Listen("tcp", cfg.HTTP)
	if err != nil {
		return fmt.Errorf("%w (use --http to pick another address, or --http=off)", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if a.watcher == nil || !a.watcher.Ready() {
			http.Error(w, "waiting for the first docker sync", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: readHeaderTimeout}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("http server stopped", zap.Error(err))
		}
	}()
	a.stopHTTP = srv.Shutdown
	a.log.Info("http listening", zap.Stringer("addr", ln.Addr()))
	return nil
}
