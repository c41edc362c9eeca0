package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Tests for the issue "Beyond Docker's DNS" (DESIGN 2.2, 2.3, 5): health
// filtering with a measured reaction time, the zone through Docker's
// 127.0.0.11, SRV as the real dig sees it, and truncation for 40 replicas.

// healthOpts is a replica whose health the test flips with `probe mark`.
func healthOpts(name, network, alias, gw string) ContainerOpts {
	return ContainerOpts{Name: name, Network: network, Aliases: []string{alias}, DNS: []string{gw},
		HealthCmd: "/probe health", HealthInterval: 500 * time.Millisecond, HealthRetries: 1}
}

func healthStatus(name string) string {
	out, _ := docker("inspect", "--format", "{{.State.Health.Status}}", name)
	return out
}

func waitHealth(t testing.TB, name, want string) {
	t.Helper()
	if _, ok := waitFor(15*time.Second, func() bool { return healthStatus(name) == want }); !ok {
		t.Fatalf("%s never became %s (now %q)", name, want, healthStatus(name))
	}
}

// waitAnswerSet polls sd until name's A answers equal want (as a set).
func waitAnswerSet(t testing.TB, sd *Sidedns, name string, want []string, why string) {
	t.Helper()
	var last []string
	took, ok := waitFor(10*time.Second, func() bool {
		r, err := query(t, sd.DNSAddr, name, dns.TypeA)
		if err != nil {
			return false
		}
		last = answerAddrs(r)
		return sameSet(last, want)
	})
	if !ok {
		t.Fatalf("%s: %s answers %v, want %v", why, name, last, want)
	}
	t.Logf("%s: %s = %v (after %v)", why, name, last, took.Round(time.Millisecond))
}

// healthEventTime reads when Docker emitted container's health_status event
// with the given status, from the daemon's own event log.
func healthEventTime(t testing.TB, id, status string, since time.Time) time.Time {
	t.Helper()
	until := time.Now().Add(time.Second)
	var out string
	ok := false
	// --until may lie a moment in the future; docker events then waits for it.
	for range 3 {
		var err error
		out, err = docker("events",
			"--since", unixArg(since), "--until", unixArg(until),
			"--filter", "container="+id, "--filter", "event=health_status",
			"--format", "{{.TimeNano}} {{.Action}}")
		if err != nil {
			t.Fatalf("read health events: %v", err)
		}
		if strings.Contains(out, "health_status: "+status) {
			ok = true
			break
		}
		until = time.Now().Add(time.Second)
	}
	if !ok {
		t.Fatalf("no health_status: %s event for %s since %v; events:\n%s", status, id[:12], since, out)
	}
	for _, line := range strings.Split(out, "\n") {
		ns, action, _ := strings.Cut(strings.TrimSpace(line), " ")
		if action != "health_status: "+status {
			continue
		}
		n, err := strconv.ParseInt(ns, 10, 64)
		if err != nil {
			t.Fatalf("parse event time %q: %v", line, err)
		}
		return time.Unix(0, n) // first matching event
	}
	t.Fatalf("no parsable health_status: %s event in:\n%s", status, out)
	return time.Time{}
}

func unixArg(t time.Time) string {
	return fmt.Sprintf("%d.%09d", t.Unix(), t.Nanosecond())
}

// metricValue sums the samples of one metric family on /metrics.
func metricValue(t testing.TB, sd *Sidedns, name string) float64 {
	t.Helper()
	body := httpGet(t, "http://"+sd.HTTPAddr+"/metrics")
	sum, found := 0.0, false
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 || (f[0] != name && !strings.HasPrefix(f[0], name+"{")) {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			t.Fatalf("parse metric line %q: %v", line, err)
		}
		sum, found = sum+v, true
	}
	if !found {
		t.Fatalf("metric %s missing from /metrics", name)
	}
	return sum
}

// TestThreeReplicaHealth: three replicas behind one alias; only healthy ones
// are answered, an unhealthy one leaves the answers within a second of its
// health_status event, and with none healthy failopen answers all three (and
// counts it) while strict answers NODATA (DESIGN 2.2).
func TestThreeReplicaHealth(t *testing.T) {
	requireDocker(t)
	sfx := randSuffix()
	prefix := "sidedns-test-" + sfx
	n := createNetwork(t, prefix+"-h3")
	gw := n.Gateway.String()
	allow := []string{"--ttl", "5", "--allow", "127.0.0.0/8", "--allow", n.Subnet.String()}
	upOpen, upStrict := startFakeUpstream(t), startFakeUpstream(t)
	open := startSidedns(t, upOpen, allow...)
	strict := startSidedns(t, upStrict, append([]string{"--health-policy", "strict"}, allow...)...)

	alias := "api-" + sfx
	name := alias + "." + n.Name
	var rs []Container
	var ips []string
	for i := 1; i <= 3; i++ {
		c := runContainer(t, healthOpts(fmt.Sprintf("%s-r%d", prefix, i), n.Name, alias, gw))
		rs = append(rs, c)
		ips = append(ips, c.IPs[n.Name].String())
	}
	mark := func(c Container, state string) { mustDocker(t, "exec", c.Name, "/probe", "mark", state) }

	// r3 never gets the marker yet: starting, then unhealthy.
	mark(rs[0], "healthy")
	mark(rs[1], "healthy")
	waitHealth(t, rs[0].Name, "healthy")
	waitHealth(t, rs[1].Name, "healthy")
	for _, sd := range []*Sidedns{open, strict} {
		waitAnswerSet(t, sd, name, ips[:2], "r1, r2 healthy, r3 "+healthStatus(rs[2].Name))
	}

	mark(rs[2], "healthy")
	waitHealth(t, rs[2].Name, "healthy")
	for _, sd := range []*Sidedns{open, strict} {
		waitAnswerSet(t, sd, name, ips, "all three healthy")
	}

	t.Run("unhealthy replica leaves within a second of its event", func(t *testing.T) {
		since := time.Now()
		mark(rs[0], "unhealthy")
		// Poll tightly: the figure is event -> first answer without r1.
		var seen time.Time
		var last []string
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			r, err := query(t, open.DNSAddr, name, dns.TypeA)
			if err == nil {
				last = answerAddrs(r)
				if len(last) > 0 && !slices.Contains(last, ips[0]) {
					seen = time.Now()
					break
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
		if seen.IsZero() {
			t.Fatalf("r1 still answered 10s after marking it unhealthy: %v (r1 %s)", last, healthStatus(rs[0].Name))
		}
		event := healthEventTime(t, rs[0].ID, "unhealthy", since)
		lag := seen.Sub(event)
		t.Logf("FIGURE health_status unhealthy event (%s) -> first answer without r1: %v (mark -> event %v); answer %v",
			event.Format(time.RFC3339Nano), lag.Round(time.Microsecond), event.Sub(since).Round(time.Millisecond), last)
		if !sameSet(last, ips[1:]) {
			t.Errorf("answer after r1 turned unhealthy = %v, want %v", last, ips[1:])
		}
		if lag >= time.Second {
			t.Errorf("r1 left the answers %v after its health_status event, want < 1s", lag)
		}
		waitAnswerSet(t, strict, name, ips[1:], "strict, r1 unhealthy")
	})

	t.Run("none healthy: failopen answers all, strict NODATA", func(t *testing.T) {
		before := metricValue(t, open, "sidedns_health_failopen_total")
		mark(rs[1], "unhealthy")
		mark(rs[2], "unhealthy")
		waitHealth(t, rs[1].Name, "unhealthy")
		waitHealth(t, rs[2].Name, "unhealthy")
		waitAnswerSet(t, open, name, ips, "failopen, all three unhealthy")

		after := metricValue(t, open, "sidedns_health_failopen_total")
		t.Logf("sidedns_health_failopen_total: %v before, %v after", before, after)
		if after <= 0 || after <= before {
			t.Errorf("sidedns_health_failopen_total = %v (was %v), want > 0 and grown", after, before)
		}

		var r *dns.Msg
		if _, ok := waitFor(10*time.Second, func() bool {
			var err error
			r, err = query(t, strict.DNSAddr, name, dns.TypeA)
			return err == nil && len(r.Answer) == 0
		}); !ok {
			t.Fatalf("strict: %s still answered with none healthy: %v", name, r)
		}
		t.Logf("strict, all three unhealthy: %s %d answers", dns.RcodeToString[r.Rcode], len(r.Answer))
		if r.Rcode != dns.RcodeSuccess {
			t.Errorf("strict: rcode %s, want NOERROR (NODATA)", dns.RcodeToString[r.Rcode])
		}
		if got := upStrict.Saw(name); len(got) != 0 {
			t.Errorf("strict: %s was forwarded upstream %d time(s), want NODATA from sidedns", name, len(got))
		}
		if v := metricValue(t, strict, "sidedns_health_failopen_total"); v != 0 {
			t.Errorf("strict: sidedns_health_failopen_total = %v, want 0", v)
		}
	})
}

// TestZoneThroughEmbeddedDNS: on a user-defined network the container asks
// 127.0.0.11, which forwards web.<project>.docker to sidedns; the answer holds
// only the healthy replica, with sidedns's TTL, not Docker's 600 (DESIGN 2.3).
func TestZoneThroughEmbeddedDNS(t *testing.T) {
	requireDocker(t)
	sfx := randSuffix()
	n := createNetwork(t, "sidedns-test-"+sfx+"-z")
	gw := n.Gateway.String()
	up := startFakeUpstream(t)
	sd := startSidedns(t, up, "--listen", gw+":53", "--ttl", "5", "--log-queries", "1",
		"--allow", "127.0.0.0/8", "--allow", n.Subnet.String())

	project := "p" + sfx
	web := func(i int) ContainerOpts {
		o := healthOpts(fmt.Sprintf("%s-web-%d", project, i), n.Name, "web", gw)
		o.Aliases = []string{o.Name, "web"}
		o.Labels = map[string]string{"com.docker.compose.project": project, "com.docker.compose.service": "web"}
		return o
	}
	w1, w2 := runContainer(t, web(1)), runContainer(t, web(2))
	mustDocker(t, "exec", w1.Name, "/probe", "mark", "healthy")
	waitHealth(t, w1.Name, "healthy")
	waitHealth(t, w2.Name, "unhealthy")
	ip1, ip2 := w1.IPs[n.Name].String(), w2.IPs[n.Name].String()
	client := runContainer(t, ContainerOpts{Name: "sidedns-test-" + sfx + "-client", Network: n.Name, DNS: []string{gw}})
	clientIP := client.IPs[n.Name]

	if ns := nameservers(catIn(t, client.Name, "/etc/resolv.conf")); !slices.Equal(ns, []string{"127.0.0.11"}) {
		t.Fatalf("client resolv.conf nameservers = %v, want [127.0.0.11]", ns)
	}
	zoneName := "web." + project + ".docker"
	waitAnswerSet(t, sd, zoneName, []string{ip1}, "host view, web-2 unhealthy")

	// digVia127 asks through the client's resolv.conf (127.0.0.11) and checks
	// that the query reached sidedns from the client's own address.
	digVia127 := func(t *testing.T, name string) DigResult {
		t.Helper()
		mark := sd.Mark()
		r := mustDigIn(t, client.Name, "", name, "A")
		var from []string
		for _, q := range sd.SawSince(mark, name) {
			from = append(from, q.From.String())
		}
		t.Logf("via 127.0.0.11: %s -> %s %v ttls %v; sidedns saw it from %v", name, r.Rcode, r.Addrs(), ttls(r), from)
		if !slices.Contains(from, clientIP.String()) {
			t.Errorf("%s never reached sidedns from the client %s (saw %v)", name, clientIP, from)
		}
		return r
	}

	t.Run("only the healthy replica, TTL 5", func(t *testing.T) {
		r := digVia127(t, zoneName)
		if r.Rcode != "NOERROR" || !slices.Equal(r.Addrs(), []string{ip1}) {
			t.Fatalf("%s = %s %v, want NOERROR [%s] (web-2 %s is unhealthy)", zoneName, r.Rcode, r.Addrs(), ip1, ip2)
		}
		for _, a := range r.Answers {
			if a.TTL != 5 {
				t.Errorf("TTL %d, want sidedns's 5 (Docker's own answers carry %d)", a.TTL, dockerEmbeddedTTL)
			}
		}
		if len(up.Saw(zoneName)) != 0 {
			t.Errorf("%s was forwarded upstream; the zone is sidedns's own", zoneName)
		}
	})
	t.Run("second replica turns healthy", func(t *testing.T) {
		mustDocker(t, "exec", w2.Name, "/probe", "mark", "healthy")
		waitHealth(t, w2.Name, "healthy")
		waitAnswerSet(t, sd, zoneName, []string{ip1, ip2}, "host view, both healthy")
		r := digVia127(t, zoneName)
		if !sameSet(r.Addrs(), []string{ip1, ip2}) {
			t.Errorf("%s = %v, want both %s and %s", zoneName, r.Addrs(), ip1, ip2)
		}
	})
	t.Run("unknown project is NXDOMAIN", func(t *testing.T) {
		name := "web.nope" + sfx + ".docker"
		r := digVia127(t, name)
		if r.Rcode != "NXDOMAIN" || len(r.Answers) != 0 {
			t.Errorf("%s = %s %v, want NXDOMAIN", name, r.Rcode, r.Answers)
		}
		if len(up.Saw(name)) != 0 {
			t.Errorf("%s was forwarded upstream; an unknown name in the zone is NXDOMAIN", name)
		}
	})
}

// digPath finds Debian's dig (bind9-dnsutils), skipping loudly without it
// unless Docker-backed tests are required.
func digPath(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("dig")
	if err == nil {
		return p
	}
	if os.Getenv("SIDEDNS_REQUIRE_DOCKER") == "1" {
		t.Fatalf("dig is required (SIDEDNS_REQUIRE_DOCKER=1) but missing: apt-get install -y --no-install-recommends bind9-dnsutils")
	}
	t.Skipf("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n" +
		"!!! SKIPPING: dig not found; apt-get install -y --no-install-recommends bind9-dnsutils\n" +
		"!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!")
	return ""
}

// realDig is the parsed text output of BIND's dig with +comments: records by
// section, the status and flags, and whether the reply came over TCP.
type realDig struct {
	Status   string
	Flags    []string
	Sections map[string][][]string // "ANSWER"/"ADDITIONAL" -> fields of each record line
	TCP      bool
	Raw      string
}

// runDig runs the real dig against sidedns's loopback listener.
func runDig(t testing.TB, bin string, sd *Sidedns, args ...string) realDig {
	t.Helper()
	host, port, err := net.SplitHostPort(sd.DNSAddr)
	if err != nil {
		t.Fatalf("split %s: %v", sd.DNSAddr, err)
	}
	// +time/+tries bound the run; dig never falls back to resolv.conf with @server.
	full := append([]string{"-p", port, "@" + host, "+time=2", "+tries=2"}, args...)
	out, err := exec.Command(bin, full...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %s: %v\n%s", strings.Join(full, " "), err, out)
	}
	d := realDig{Sections: map[string][][]string{}, Raw: string(out)}
	section := ""
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, ";; ->>HEADER<<-"):
			_, rest, _ := strings.Cut(line, "status: ")
			d.Status, _, _ = strings.Cut(rest, ",")
		case strings.HasPrefix(line, ";; flags:"):
			f, _, _ := strings.Cut(strings.TrimPrefix(line, ";; flags:"), ";")
			d.Flags = strings.Fields(f)
		case strings.HasPrefix(line, ";; SERVER:"):
			d.TCP = strings.Contains(line, "(TCP)")
		case strings.HasSuffix(line, " SECTION:"):
			section = strings.TrimSuffix(strings.TrimPrefix(line, ";; "), " SECTION:")
		case strings.HasPrefix(line, ";"):
		default:
			if section == "" {
				t.Fatalf("record line outside a section in dig output:\n%s", out)
			}
			f := strings.Fields(line)
			if len(f) < 5 {
				t.Fatalf("unparsable dig record line %q", line)
			}
			d.Sections[section] = append(d.Sections[section], f)
		}
	}
	return d
}

// TestSRVWithDig: BIND's dig on the host parses sidedns's SRV answers: type
// SRV, port 8080, container-name targets, and their A records as additional
// data (DESIGN 2.2).
func TestSRVWithDig(t *testing.T) {
	requireDocker(t)
	dig := digPath(t)
	sfx := randSuffix()
	prefix := "sidedns-test-" + sfx
	n := createNetwork(t, prefix+"-srv")
	gw := n.Gateway.String()
	up := startFakeUpstream(t)
	sd := startSidedns(t, up, "--ttl", "5", "--allow", "127.0.0.0/8", "--allow", n.Subnet.String())

	alias := "svc-" + sfx
	replica := func(i int) ContainerOpts {
		return ContainerOpts{Name: fmt.Sprintf("%s-s%d", prefix, i), Network: n.Name, Aliases: []string{alias},
			DNS: []string{gw}, Expose: []string{"8080/tcp"}, Labels: map[string]string{"sidedns.srv.http": "8080/tcp"}}
	}
	s1, s2 := runContainer(t, replica(1)), runContainer(t, replica(2))
	waitVisible(t, sd, n.Name, s1, s2)
	ipOf := map[string]string{ // lower-case container name -> IPv4
		strings.ToLower(s1.Name): s1.IPs[n.Name].String(),
		strings.ToLower(s2.Name): s2.IPs[n.Name].String(),
	}
	waitAnswerSet(t, sd, alias+"."+n.Name, []string{ipOf[strings.ToLower(s1.Name)], ipOf[strings.ToLower(s2.Name)]}, "both replicas")

	tests := []struct {
		name    string
		targets []string
	}{
		{"_http._tcp." + alias + ".docker", []string{s1.Name, s2.Name}},
		{"_8080._tcp." + alias, []string{s1.Name, s2.Name}},
		{"_http._tcp." + s1.Name + ".docker", []string{s1.Name}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := runDig(t, dig, sd, "+noall", "+comments", "+answer", "+additional", tc.name, "SRV")
			t.Logf("dig %s SRV:\n%s", tc.name, strings.TrimSpace(d.Raw))
			if d.Status != "NOERROR" {
				t.Fatalf("status %q, want NOERROR", d.Status)
			}
			// Target (lower-cased, no trailing dot) -> its container's first label.
			var targets []string
			srvTargets := map[string]string{}
			for _, f := range d.Sections["ANSWER"] {
				// name ttl class type priority weight port target
				if f[3] != "SRV" {
					t.Errorf("answer record of type %s, want SRV: %s", f[3], strings.Join(f, " "))
					continue
				}
				if len(f) != 8 {
					t.Errorf("SRV record with %d fields: %s", len(f), strings.Join(f, " "))
					continue
				}
				if f[6] != "8080" {
					t.Errorf("SRV port %s, want 8080: %s", f[6], strings.Join(f, " "))
				}
				target := strings.ToLower(strings.TrimSuffix(f[7], "."))
				label, _, _ := strings.Cut(target, ".")
				targets = append(targets, label)
				srvTargets[target] = label
			}
			if !sameSet(targets, lowerAll(tc.targets)) {
				t.Errorf("SRV targets %v, want the container names %v", targets, tc.targets)
			}
			glue := map[string][]string{}
			for _, f := range d.Sections["ADDITIONAL"] {
				if f[3] == "A" {
					owner := strings.ToLower(strings.TrimSuffix(f[0], "."))
					glue[owner] = append(glue[owner], f[4])
				}
			}
			for target, label := range srvTargets {
				want, ok := ipOf[label]
				if !ok {
					continue // already reported as a wrong target
				}
				if !slices.Equal(glue[target], []string{want}) {
					t.Errorf("additional A for %s = %v, want [%s]", target, glue[target], want)
				}
			}
		})
	}
}

func lowerAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.ToLower(s)
	}
	return out
}

// startReplicas starts count probe containers behind one alias, a few at a
// time, and removes them all in one call when the test ends.
func startReplicas(t testing.TB, prefix string, count int, n Network, alias string) map[string]string {
	t.Helper()
	names := make([]string, count)
	for i := range names {
		names[i] = fmt.Sprintf("%s-m%02d", prefix, i+1)
	}
	t.Cleanup(func() {
		out, err := docker(append([]string{"rm", "-f", "-v"}, names...)...)
		if err != nil && !strings.Contains(err.Error(), "No such container") {
			t.Errorf("remove replicas: %v (%s)", err, out)
		}
	})
	const workers = 4
	jobs := make(chan string)
	errs := make(chan error, count)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range jobs {
				_, err := docker("run", "-d", "--name", name, "--label", runLabel+"="+runID,
					"--network", n.Name, "--network-alias", alias, "--dns", n.Gateway.String(), probeImage)
				errs <- err
			}
		}()
	}
	for _, name := range names {
		jobs <- name
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("start replica: %v", err)
		}
	}
	format := `{{.Name}} {{with index .NetworkSettings.Networks "` + n.Name + `"}}{{.IPAddress}}{{end}}`
	out := mustDocker(t, append([]string{"inspect", "--format", format}, names...)...)
	ips := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		name, ip, _ := strings.Cut(strings.TrimSpace(line), " ")
		if net.ParseIP(ip) == nil {
			t.Fatalf("replica without an address on %s: %q", n.Name, line)
		}
		ips[strings.TrimPrefix(name, "/")] = ip
	}
	return ips
}

// TestTruncationFortyReplicas: 40 addresses do not fit a 512-byte UDP reply;
// a client without EDNS gets TC and a partial answer within 512 bytes, TCP
// gets all 40, and dig retries over TCP on its own (DESIGN 5).
func TestTruncationFortyReplicas(t *testing.T) {
	requireDocker(t)
	dig := digPath(t)
	const count = 40
	sfx := randSuffix()
	prefix := "sidedns-test-" + sfx
	n := createNetwork(t, prefix+"-tc")
	up := startFakeUpstream(t)
	sd := startSidedns(t, up, "--ttl", "5", "--allow", "127.0.0.0/8", "--allow", n.Subnet.String())

	alias := "many-" + sfx
	name := dns.Fqdn(alias + "." + n.Name)
	start := time.Now()
	byName := startReplicas(t, prefix, count, n, alias)
	var all []string
	for _, ip := range byName {
		all = append(all, ip)
	}
	t.Logf("started %d replicas in %v", len(all), time.Since(start).Round(time.Millisecond))

	tcp := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
	ask := func(c *dns.Client) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		r, _, err := c.Exchange(m, sd.DNSAddr)
		return r, err
	}
	var last []string
	if _, ok := waitFor(15*time.Second, func() bool {
		r, err := ask(tcp)
		if err != nil {
			return false
		}
		last = answerAddrs(r)
		return sameSet(last, all)
	}); !ok {
		t.Fatalf("over TCP %s answers %d addresses, want all %d", name, len(last), count)
	}

	t.Run("UDP without EDNS is truncated to 512 bytes", func(t *testing.T) {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA) // no OPT record: the 512-byte limit applies
		wire, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		conn, err := net.Dial("udp", sd.DNSAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Write(wire); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 65535)
		size, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("read UDP reply: %v", err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:size]); err != nil {
			t.Fatalf("unpack %d-byte reply: %v", size, err)
		}
		got := answerAddrs(r)
		t.Logf("UDP, no EDNS: %d bytes, TC=%t, %d of %d addresses, rcode %s", size, r.Truncated, len(got), count, dns.RcodeToString[r.Rcode])
		if size > 512 {
			t.Errorf("reply is %d bytes, want <= 512", size)
		}
		if !r.Truncated {
			t.Errorf("TC not set on a reply that cannot hold %d addresses", count)
		}
		if len(got) >= count {
			t.Errorf("%d addresses in a 512-byte reply, want fewer than %d", len(got), count)
		}
		for _, ip := range got {
			if !slices.Contains(all, ip) {
				t.Errorf("truncated reply holds %s, not a replica", ip)
			}
		}
	})
	t.Run("TCP gets all 40", func(t *testing.T) {
		r, err := ask(tcp)
		if err != nil {
			t.Fatal(err)
		}
		got := answerAddrs(r)
		t.Logf("TCP: TC=%t, %d addresses", r.Truncated, len(got))
		if r.Truncated || !sameSet(got, all) {
			t.Errorf("TCP: TC=%t, %d addresses %v, want all %d without TC", r.Truncated, len(got), got, count)
		}
	})
	for _, tc := range []struct {
		desc    string
		args    []string
		wantTCP bool
	}{
		// Without EDNS the UDP reply is truncated and dig must retry over TCP.
		{"dig +noedns retries over TCP", []string{"+noedns"}, true},
		// dig's default EDNS buffer (1232) holds 40 A records.
		{"dig with EDNS gets all over UDP", nil, false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			args := append([]string{"+noall", "+comments", "+answer", "+stats"}, tc.args...)
			d := runDig(t, dig, sd, append(args, name, "A")...)
			var got []string
			for _, f := range d.Sections["ANSWER"] {
				if f[3] == "A" {
					got = append(got, f[4])
				}
			}
			retried := strings.Contains(d.Raw, "Truncated, retrying in TCP mode")
			t.Logf("%s: status %s, flags %v, %d A records, over TCP %t, retry notice %t",
				tc.desc, d.Status, d.Flags, len(got), d.TCP, retried)
			if d.Status != "NOERROR" || !sameSet(got, all) {
				t.Errorf("dig: status %s, %d A records, want NOERROR and all %d\n%s", d.Status, len(got), count, d.Raw)
			}
			if slices.Contains(d.Flags, "tc") {
				t.Errorf("dig's final reply still has TC: flags %v", d.Flags)
			}
			if d.TCP != tc.wantTCP {
				t.Errorf("dig's final reply over TCP = %t, want %t\n%s", d.TCP, tc.wantTCP, d.Raw)
			}
		})
	}
}
