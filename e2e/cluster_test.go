package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/cluster/etcdtest"
	"github.com/sidedns/sidedns/servicemap"
)

// clusterProc is a sidedns process in a cluster test; unlike launchSidedns
// it keeps the process, so a test can SIGKILL it.
type clusterProc struct {
	*Sidedns
	cmd    *exec.Cmd
	exited chan error
}

// launchClusterSidedns starts sidedns with a short lease and stale window.
// With docker false it gets a Docker socket that does not exist: a host
// whose only records are its records file.
func launchClusterSidedns(t *testing.T, up *FakeDNS, docker bool, args ...string) *clusterProc {
	t.Helper()
	p := &clusterProc{Sidedns: &Sidedns{
		DNSAddr:  net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, "127.0.0.1"))),
		HTTPAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, "127.0.0.1"))),
		log:      &syncBuffer{},
	}, exited: make(chan error, 1)}
	args = append([]string{"--listen", p.DNSAddr, "--http", p.HTTPAddr, "--upstream", up.Addr,
		"--cluster-lease-ttl", "2s", "--cluster-stale-window", "4s",
		"--control-socket", "off"}, args...) // a test that wants the socket names its own path; the last flag wins
	p.cmd = exec.Command(buildSidedns(t), args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.Env = environWithout("SIDEDNS_")
	if !docker {
		p.cmd.Env = append(environWithout("SIDEDNS_", "DOCKER_"), "DOCKER_HOST=unix:///nonexistent-sidedns-cluster-"+runID+".sock")
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start sidedns: %v", err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Logf("sidedns %s", strings.Join(args, " "))
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("sidedns %v log:\n%s", args, p.Log())
		}
	})
	if _, ok := waitFor(20*time.Second, func() bool { return httpOK(p.HTTPAddr, "/healthz") }); !ok {
		t.Fatalf("sidedns not healthy after 20s\n%s", p.Log())
	}
	return p
}

// answers returns the A answers for name, or the SRV answers as
// "port target", sorted; nil when the name is unknown or the query failed.
func (p *clusterProc) answers(t *testing.T, name string, qtype uint16) []string {
	r, err := query(t, p.DNSAddr, name, qtype)
	if err != nil || r == nil {
		return nil
	}
	var out []string
	for _, rr := range r.Answer {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, v.A.String())
		case *dns.SRV:
			out = append(out, fmt.Sprintf("%d %s", v.Port, v.Target))
		}
	}
	slices.Sort(out)
	return out
}

// waitAnswers waits until p answers name with want (nil: no answer) and
// returns how long that took.
func (p *clusterProc) waitAnswers(t *testing.T, within time.Duration, name string, qtype uint16, want []string) time.Duration {
	t.Helper()
	took, ok := waitFor(within, func() bool { return slices.Equal(p.answers(t, name, qtype), want) })
	if !ok {
		t.Fatalf("%s %s on %s: %v after %v, want %v", name, dns.TypeToString[qtype], p.DNSAddr, p.answers(t, name, qtype), within, want)
	}
	return took
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestClusterThreeHosts runs a 3-member etcd and three sidedns "hosts" on
// loopback: A on the machine's Docker, B and C with records files. C reaches
// etcd through proxies the test can cut.
func TestClusterThreeHosts(t *testing.T) {
	requireDocker(t)
	ec := etcdtest.Start(t, 3)
	up := startFakeUpstream(t)
	dir := t.TempDir()

	var proxies []*etcdtest.Proxy
	var cURLs []string
	for _, e := range ec.Endpoints() {
		px := etcdtest.NewProxy(t, etcdtest.HostPort(e))
		proxies = append(proxies, px)
		cURLs = append(cURLs, px.URL())
	}
	etcd := strings.Join(ec.Endpoints(), ",")
	writeFile(t, filepath.Join(dir, "b.yaml"), `services:
  - name: b-api-1
    project: shop
    service: api
    addresses: [10.9.0.5]
    ports: ["8080/tcp"]
`)
	writeFile(t, filepath.Join(dir, "c.json"), `{"services": [{"name": "c-db", "addresses": ["10.9.0.7"]}]}`)

	a := launchClusterSidedns(t, up, true, "--cluster-etcd", etcd, "--advertise-addr", "127.0.0.1")
	b := launchClusterSidedns(t, up, false, "--cluster-etcd", etcd, "--advertise-addr", "127.0.0.2",
		"--records-file", filepath.Join(dir, "b.yaml"))
	c := launchClusterSidedns(t, up, false, "--cluster-etcd", strings.Join(cURLs, ","), "--advertise-addr", "127.0.0.3",
		"--records-file", filepath.Join(dir, "c.json"))

	// Records files answer under the zone on every host, never as bare names.
	for _, p := range []*clusterProc{a, b, c} {
		p.waitAnswers(t, 5*time.Second, "b-api-1.docker", dns.TypeA, []string{"10.9.0.5"})
		p.waitAnswers(t, 5*time.Second, "api.shop.docker", dns.TypeA, []string{"10.9.0.5"})
		p.waitAnswers(t, 5*time.Second, "_8080._tcp.api.shop.docker", dns.TypeSRV, []string{"8080 b-api-1.docker."})
		p.waitAnswers(t, 5*time.Second, "c-db.docker", dns.TypeA, []string{"10.9.0.7"})
	}
	// A's /api/v1/records lists the other hosts with a heartbeat and their records.
	if _, ok := waitFor(5*time.Second, func() bool {
		hosts := clusterHosts(t, a)
		return len(hosts) == 2 && hosts["127.0.0.2"] == "b-api-1" && hosts["127.0.0.3"] == "c-db"
	}); !ok {
		t.Fatalf("A's /api/v1/records cluster hosts: %v", clusterHosts(t, a))
	}
	// The live page's state carries a row per other host with its heartbeat.
	if page := pageUpdate(t, a); !strings.Contains(page, `"cluster hosts":[`) || !strings.Contains(page, `"last heartbeat"`) ||
		!strings.Contains(page, `"records":"b-api-1 10.9.0.5"`) {
		t.Fatalf("A's page state lacks the cluster hosts: %s", page)
	}
	if got := c.answers(t, "b-api-1", dns.TypeA); got != nil {
		t.Fatalf("a remote record answered as a bare name: %v", got)
	}
	// A's service map draws lookups of B's service as a node of host
	// 127.0.0.2. They come from a loopback address of their own, so that
	// the edge holds exactly these, not the polls above.
	const mapLookups = 5
	asker := &dns.Client{Timeout: time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9)}}}
	for range mapLookups {
		r, _, err := asker.Exchange(new(dns.Msg).SetQuestion("api.shop.docker.", dns.TypeA), a.DNSAddr)
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("api.shop.docker from 127.0.0.9 on A: %v %v", r, err)
		}
	}
	const toB = "remote:127.0.0.2/shop/api"
	var g servicemap.Graph
	if _, ok := waitFor(5*time.Second, func() bool {
		g = servicemap.Graph{}
		_ = json.Unmarshal([]byte(httpGet(t, "http://"+a.HTTPAddr+"/api/v1/graph")), &g)
		return slices.ContainsFunc(g.Edges, func(e servicemap.Edge) bool {
			return e.From == "host:127.0.0.9" && e.To == toB && e.Queries == mapLookups
		})
	}); !ok {
		t.Fatalf("A's /api/v1/graph has no edge host:127.0.0.9 -> %s with %d queries: %+v", toB, mapLookups, g.Edges)
	}
	if i := slices.IndexFunc(g.Nodes, func(n servicemap.Node) bool { return n.ID == toB }); i < 0 ||
		g.Nodes[i] != (servicemap.Node{ID: toB, Kind: servicemap.KindRemote, Name: "api", Project: "shop", Host: "127.0.0.2"}) {
		t.Errorf("A's graph nodes %+v, want %s of kind remote on host 127.0.0.2", g.Nodes, toB)
	}

	// A container with a published port on A resolves on C, A and SRV.
	name := "e2e-cluster-web-" + runID
	t.Cleanup(func() { removeContainer(t, name) })
	mustDocker(t, "run", "-d", "--name", name, "--label", runLabel+"="+runID, "--dns", "127.0.0.1",
		"--expose", "8080/tcp", "-p", "127.0.0.1::8080/tcp", probeImage, "serve")
	started := time.Now()
	portOut := strings.TrimSpace(mustDocker(t, "port", name, "8080/tcp"))
	ap, err := netip.ParseAddrPort(strings.Split(portOut, "\n")[0])
	if err != nil {
		t.Fatalf("docker port: %q: %v", portOut, err)
	}
	c.waitAnswers(t, 10*time.Second, name+".docker", dns.TypeA, []string{"127.0.0.1"})
	tookA := time.Since(started)
	c.waitAnswers(t, time.Second, "_8080._tcp."+name+".docker", dns.TypeSRV, []string{fmt.Sprintf("%d %s.docker.", ap.Port(), name)})
	t.Logf("started container on A answers on C after %v (from docker run returning)", tookA.Round(time.Millisecond))
	if tookA > time.Second {
		t.Errorf("container on A took %v to resolve on C, want within 1s", tookA)
	}

	// docker stop: gone from C within 1 s.
	mustDocker(t, "stop", "-t", "0", name)
	stopped := time.Now()
	c.waitAnswers(t, 5*time.Second, name+".docker", dns.TypeA, nil)
	tookStop := time.Since(stopped)
	t.Logf("stopped container on A gone from C after %v (from docker stop returning)", tookStop.Round(time.Millisecond))
	if tookStop > time.Second {
		t.Errorf("stopped container took %v to leave C, want within 1s", tookStop)
	}
	mustDocker(t, "start", name)
	c.waitAnswers(t, 10*time.Second, name+".docker", dns.TypeA, []string{"127.0.0.1"})

	// SIGKILL B: its records leave A and C within the lease TTL plus 1 s.
	b.cmd.Process.Kill()
	killed := time.Now()
	a.waitAnswers(t, 3*time.Second, "b-api-1.docker", dns.TypeA, nil)
	c.waitAnswers(t, 3*time.Second, "b-api-1.docker", dns.TypeA, nil)
	t.Logf("killed host B's records gone from A and C after %v (lease TTL 2s)", time.Since(killed).Round(time.Millisecond))

	// One etcd member stopped: no answer changes.
	ec.Members[1].Stop()
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		if got := c.answers(t, name+".docker", dns.TypeA); !slices.Equal(got, []string{"127.0.0.1"}) {
			t.Fatalf("with one member down C answers %v", got)
		}
		if got := a.answers(t, "c-db.docker", dns.TypeA); !slices.Equal(got, []string{"10.9.0.7"}) {
			t.Fatalf("with one member down A answers %v", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ec.Members[1].Start()
	ec.Members[1].WaitHealthy()

	// Cut C off from etcd: it keeps answering, marks the remote data stale,
	// drops it after the window, and catches up once the cut is restored.
	for _, px := range proxies {
		px.Cut()
	}
	cut := time.Now()
	if _, ok := waitFor(4*time.Second, func() bool { return clusterStale(t, c) }); !ok {
		t.Fatalf("C's /api/v1/records never showed the data stale")
	}
	if time.Since(cut) < 4*time.Second {
		c.waitAnswers(t, 0, name+".docker", dns.TypeA, []string{"127.0.0.1"}) // still answered while stale
	}
	c.waitAnswers(t, 0, "c-db.docker", dns.TypeA, []string{"10.9.0.7"})
	c.waitAnswers(t, 8*time.Second, name+".docker", dns.TypeA, nil)
	t.Logf("cut-off C dropped remote records after %v (stale window 4s)", time.Since(cut).Round(time.Millisecond))
	c.waitAnswers(t, 0, "c-db.docker", dns.TypeA, []string{"10.9.0.7"}) // its own records stay
	for _, px := range proxies {
		px.Restore()
	}
	restored := time.Now()
	c.waitAnswers(t, 10*time.Second, name+".docker", dns.TypeA, []string{"127.0.0.1"})
	t.Logf("C caught up %v after the cut was restored", time.Since(restored).Round(time.Millisecond))
	if got := metricValue(t, c.Sidedns, "sidedns_cluster_hosts"); got != 1 {
		t.Errorf("sidedns_cluster_hosts on C = %v, want 1 (A; B was killed)", got)
	}
}

// clusterStale reads /api/v1/records and reports whether it marks the
// cluster data stale.
func clusterStale(t *testing.T, p *clusterProc) bool {
	var recs struct {
		Cluster struct {
			Stale bool `json:"stale"`
		} `json:"cluster"`
	}
	if err := json.Unmarshal([]byte(httpGet(t, "http://"+p.HTTPAddr+"/api/v1/records")), &recs); err != nil {
		return false
	}
	return recs.Cluster.Stale
}

// clusterHosts reads /api/v1/records: host -> its record names, for hosts
// with a last heartbeat.
func clusterHosts(t *testing.T, p *clusterProc) map[string]string {
	var recs struct {
		Cluster struct {
			Hosts []struct {
				Addr          string    `json:"addr"`
				LastHeartbeat time.Time `json:"last_heartbeat"`
				Records       []struct {
					Name string `json:"name"`
				} `json:"records"`
			} `json:"hosts"`
		} `json:"cluster"`
	}
	if err := json.Unmarshal([]byte(httpGet(t, "http://"+p.HTTPAddr+"/api/v1/records")), &recs); err != nil {
		return nil
	}
	out := map[string]string{}
	for _, h := range recs.Cluster.Hosts {
		if h.LastHeartbeat.IsZero() {
			continue
		}
		var names []string
		for _, r := range h.Records {
			names = append(names, r.Name)
		}
		out[h.Addr] = strings.Join(names, ",")
	}
	return out
}

// pageUpdate returns the first update the live page gets from
// /api/v1/events, as JSON text.
func pageUpdate(t *testing.T, p *clusterProc) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.HTTPAddr+"/api/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /api/v1/events: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			return data
		}
	}
	t.Fatalf("no update from /api/v1/events: %v", sc.Err())
	return ""
}

// TestClusterConverge: 500 random adds and removes in the records files of
// three sidedns processes; afterwards every instance holds exactly the
// others' records, nothing lost and nothing duplicated.
func TestClusterConverge(t *testing.T) {
	ec := etcdtest.Start(t, 3)
	up := startFakeUpstream(t)
	dir := t.TempDir()
	hosts := []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}
	sets := make([]map[string]string, 3) // name -> address
	paths := make([]string, 3)
	write := func(i int) {
		var b strings.Builder
		b.WriteString("services:\n")
		for _, name := range slices.Sorted(maps.Keys(sets[i])) {
			fmt.Fprintf(&b, "  - name: %s\n    addresses: [%s]\n", name, sets[i][name])
		}
		tmp := paths[i] + ".tmp"
		writeFile(t, tmp, b.String())
		if err := os.Rename(tmp, paths[i]); err != nil {
			t.Fatal(err)
		}
	}
	var procs []*clusterProc
	for i, h := range hosts {
		sets[i] = map[string]string{}
		paths[i] = filepath.Join(dir, fmt.Sprintf("host%d.yaml", i))
		write(i)
		procs = append(procs, launchClusterSidedns(t, up, false, "--cluster-etcd", ec.Endpoints()[i], "--advertise-addr", h,
			"--records-file", paths[i]))
	}
	rng := rand.New(rand.NewPCG(500, 3))
	for op := range 500 {
		i := rng.IntN(3)
		name := fmt.Sprintf("svc-%d", rng.IntN(80))
		if _, ok := sets[i][name]; ok && rng.IntN(2) == 0 {
			delete(sets[i], name)
		} else {
			sets[i][name] = fmt.Sprintf("10.%d.%d.%d", 50+i, op/250, op%250+1)
		}
		write(i)
		time.Sleep(time.Duration(rng.IntN(10)) * time.Millisecond)
	}
	for i, p := range procs {
		var want []string
		for j, h := range hosts {
			origin := h
			if j == i {
				origin = "file"
			}
			for name, a := range sets[j] {
				want = append(want, origin+" "+name+" "+a)
			}
		}
		slices.Sort(want)
		var got []string
		if _, ok := waitFor(10*time.Second, func() bool { got = zoneRecords(t, p); return slices.Equal(got, want) }); !ok {
			t.Fatalf("host %d holds %d records, want %d:\n got %v\nwant %v", i, len(got), len(want), got, want)
		}
	}
	t.Logf("converged: %d, %d and %d records on the three hosts", len(sets[0]), len(sets[1]), len(sets[2]))
}

// zoneRecords reads /api/v1/records: "origin name address" for every
// record that is not a local container, sorted.
func zoneRecords(t *testing.T, p *clusterProc) []string {
	var recs struct {
		Containers []struct {
			Name      string `json:"name"`
			Origin    string `json:"origin"`
			Addresses []struct {
				IPv4 string `json:"ipv4"`
			} `json:"addresses"`
		} `json:"containers"`
	}
	if err := json.Unmarshal([]byte(httpGet(t, "http://"+p.HTTPAddr+"/api/v1/records")), &recs); err != nil {
		return nil
	}
	var out []string
	for _, c := range recs.Containers {
		for _, a := range c.Addresses {
			if c.Origin != "" {
				out = append(out, c.Origin+" "+c.Name+" "+a.IPv4)
			}
		}
	}
	slices.Sort(out)
	return out
}
