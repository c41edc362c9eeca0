package dockerfake

import (
	"net"
	"path/filepath"
	"testing"
)

// ServeTemp serves e on a unix socket in a temporary directory of tb until
// the test ends, then closes e and checks that serving stopped cleanly. It
// returns the socket's path, for DOCKER_HOST or a client.
func ServeTemp(tb testing.TB, e *Engine) string {
	tb.Helper()
	sock := filepath.Join(tb.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		tb.Fatalf("listen on %s: %v", sock, err)
	}
	served := make(chan error, 1)
	go func() { served <- e.Serve(l) }()
	tb.Cleanup(func() {
		if err := e.Close(); err != nil {
			tb.Errorf("close engine: %v", err)
		}
		if err := <-served; err != nil {
			tb.Errorf("serve: %v", err)
		}
	})
	return sock
}
