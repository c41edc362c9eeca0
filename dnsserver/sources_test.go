package dnsserver

import "testing"

// TestSources: queries over loopback, on the UDP fast path and over TCP, mark loopback only.
func TestSources(t *testing.T) {
	s, addr := startServer(t, Config{Upstream: through(t, answerA(1))})
	if lo, other := s.Sources(); lo || other {
		t.Fatalf("Sources() = %v, %v before any query, want false, false", lo, other)
	}
	for _, network := range []string{"udp", "tcp"} {
		mustQuery(t, addr, network, "web.docker.", 0)
	}
	if lo, other := s.Sources(); !lo || other {
		t.Errorf("Sources() = %v, %v after loopback queries, want true, false", lo, other)
	}
}
