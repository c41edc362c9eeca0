package e2e

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestWithoutDocker: with no reachable daemon sidedns still starts, forwards
// and caches, and says why once (DESIGN 4). Needs no Docker at all.
func TestWithoutDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	up := startFakeUpstream(t)
	sd := startSidednsWithDocker(t, up, "unix:///nonexistent/docker.sock")

	var r *dns.Msg
	if _, ok := waitFor(5*time.Second, func() bool {
		var err error
		r, err = query(t, sd.DNSAddr, "example.test", dns.TypeA)
		return err == nil && len(r.Answer) > 0
	}); !ok {
		t.Fatalf("example.test not forwarded without Docker: %v", r)
	}
	if got := answerAddrs(r); !slices.Equal(got, []string{upstreamAddr}) {
		t.Errorf("example.test = %v, want [%s]", got, upstreamAddr)
	}
	// A second query is a cache hit: the upstream sees it once.
	if _, err := query(t, sd.DNSAddr, "example.test", dns.TypeA); err != nil {
		t.Fatal(err)
	}
	if n := len(up.Saw("example.test")); n != 1 {
		t.Errorf("upstream saw example.test %d times, want 1 (cached)", n)
	}
	// The reason is logged once, not on every retry.
	time.Sleep(time.Second)
	if n := strings.Count(sd.Log(), "/nonexistent/docker.sock"); n != 1 {
		t.Errorf("log names the unreachable daemon %d times, want once:\n%s", n, sd.Log())
	}
	// DESIGN 4: ready only after the first Docker sync, which never comes;
	// alive all the same.
	if got := httpStatus(sd.HTTPAddr, "/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz without a Docker sync = %d, want %d", got, http.StatusServiceUnavailable)
	}
	if got := httpStatus(sd.HTTPAddr, "/healthz"); got != http.StatusOK {
		t.Errorf("/healthz without Docker = %d, want %d", got, http.StatusOK)
	}
}
