package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// scrape returns /metrics as "name{labels} value" lines.
func scrape(t *testing.T, httpAddr string) string {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	return string(b)
}

func TestMetricsAfterKnownTraffic(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent.sock")
	up := startFakeUpstream(t)
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := []string{"--listen", dnsAddr, "--upstream", up.addr, "--http", httpAddr,
		"--allow", "127.0.0.2/32", "--allow", "127.0.0.1/32"}
	runInBackground(t, args)

	checkForwarded(t, waitForAnswer(t, "udp", dnsAddr, "example.test.")) // upstream
	for range 3 {
		checkForwarded(t, waitForAnswer(t, "udp", dnsAddr, "example.test.")) // cache
	}
	m := new(dns.Msg).SetQuestion("other.test.", dns.TypeAAAA)
	if _, _, err := (&dns.Client{Net: "tcp"}).Exchange(m, dnsAddr); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the http server", func() bool {
		r, err := http.Get("http://" + httpAddr + "/healthz")
		if err == nil {
			r.Body.Close()
		}
		return err == nil
	})
	body := scrape(t, httpAddr)
	for _, want := range []string{
		`sidedns_queries_total{rcode="NOERROR",source="upstream",type="A"} 1`,
		`sidedns_queries_total{rcode="NOERROR",source="cache",type="A"} 3`,
		`sidedns_queries_total{rcode="NOERROR",source="upstream",type="AAAA"} 1`,
		`sidedns_query_duration_seconds_count 5`,
		`sidedns_cache_hits_total 3`,
		`sidedns_cache_misses_total 2`,
		`sidedns_cache_entries 1`, // the AAAA reply is NODATA without an SOA: not cacheable
		`sidedns_upstream_queries_total{upstream="` + up.addr + `"} 2`,
		`sidedns_upstream_up{upstream="` + up.addr + `"} 1`,
		`sidedns_docker_connected 0`,
		`sidedns_table_containers 0`,
		`sidedns_health_failopen_total 0`,
		`sidedns_queries_refused_total 0`,
		`sidedns_edges 2`, // the host asked two names
		`sidedns_edge_evictions_total 0`,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

// TestServiceMapOff: with --service-map off nothing is recorded: the graph
// and problems paths say the map is off, the edge metrics are absent, and
// the rest of the ops surface works.
func TestServiceMapOff(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent.sock")
	up := startFakeUpstream(t)
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runInBackground(t, []string{"--listen", dnsAddr, "--upstream", up.addr, "--http", httpAddr, "--service-map", "off"})
	checkForwarded(t, waitForAnswer(t, "udp", dnsAddr, "example.test."))
	waitFor(t, "the http server", func() bool {
		r, err := http.Get("http://" + httpAddr + "/healthz")
		if err == nil {
			r.Body.Close()
		}
		return err == nil
	})
	for path, want := range map[string]int{"/api/v1/graph": 404, "/api/v1/problems": 404, "/api/v1/records": 200, "/": 200} {
		r, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, r.StatusCode, want)
		}
	}
	body := scrape(t, httpAddr)
	if strings.Contains(body, "sidedns_edges") || !strings.Contains(body, `sidedns_queries_total{rcode="NOERROR",source="upstream",type="A"} 1`) {
		t.Errorf("/metrics with the map off:\n%s", body)
	}
}
