package ops

import (
	"net/http/httptest"
	"testing"
)

// A page on a rebound attacker name must not read the table.
func TestHostGuard(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1:8053":         true,
		"[::1]:8053":             true,
		"localhost:8053":         true,
		"sidedns:8053":           true,
		"evil.example.com:8053":  false,
		"evil.example.com.:8053": false,
		"127.0.0.1.nip.io":       false,
	} {
		if got := hostAllowed(host); got != want {
			t.Errorf("hostAllowed(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestHostGuardOverHTTP(t *testing.T) {
	s := New(Config{Addr: "127.0.0.1:0"})
	t.Cleanup(func() { s.Shutdown(t.Context()) })
	for host, want := range map[string]int{"127.0.0.1": 200, "attacker.example": 421} {
		req := httptest.NewRequest("GET", "http://"+host+"/healthz", nil)
		rec := httptest.NewRecorder()
		s.handler.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("Host %s: status %d, want %d", host, rec.Code, want)
		}
	}
}
