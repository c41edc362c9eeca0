package e2e

import (
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestProjectScoping: two compose projects both have a "db" service on one
// shared network; a querier in project A gets only A's db (DESIGN 2.2).
func TestProjectScoping(t *testing.T) {
	requireDocker(t)
	sfx := randSuffix()
	n := createNetwork(t, "sidedns-test-"+sfx+"-shared")
	gw := n.Gateway.String()
	up := startFakeUpstream(t)
	sd := startSidedns(t, up, "--listen", gw+":53", "--ttl", "5", "--allow", "127.0.0.0/8", "--allow", n.Subnet.String())

	compose := func(project, service string) ContainerOpts {
		return ContainerOpts{Name: project + "-" + service + "-1", Network: n.Name, DNS: []string{gw},
			Aliases: []string{project + "-" + service + "-1", service},
			Labels:  map[string]string{"com.docker.compose.project": project, "com.docker.compose.service": service}}
	}
	pa, pb := "pa"+sfx, "pb"+sfx
	dbA := runContainer(t, compose(pa, "db"))
	dbB := runContainer(t, compose(pb, "db"))
	appA := runContainer(t, compose(pa, "app"))
	loner := runContainer(t, ContainerOpts{Name: "sidedns-test-" + sfx + "-loner", Network: n.Name, DNS: []string{gw}})
	waitVisible(t, sd, n.Name, dbA, dbB, appA, loner)
	ipA, ipB := dbA.IPs[n.Name].String(), dbB.IPs[n.Name].String()

	server := gw + ":53"
	tests := []struct {
		from, name string
		want       []string
	}{
		{appA.Name, "db", []string{ipA}},
		{loner.Name, "db", []string{ipA, ipB}},
		{appA.Name, "db." + pb + ".docker", []string{ipB}},
		{loner.Name, "db." + pa + ".docker", []string{ipA}},
	}
	for _, tc := range tests {
		r := mustDigIn(t, tc.from, server, tc.name, "A")
		t.Logf("from %s: %s -> %v", tc.from, tc.name, r.Addrs())
		if !sameSet(r.Addrs(), tc.want) {
			t.Errorf("from %s: %s = %v, want %v", tc.from, tc.name, r.Addrs(), tc.want)
		}
	}
}

// TestLabelsAndRecordTypes: sidedns.* labels, PTR, SRV, NODATA, MX, TCP and
// paused containers, seen from the host view and from a container.
func TestLabelsAndRecordTypes(t *testing.T) {
	requireDocker(t)
	sfx := randSuffix()
	prefix := "sidedns-test-" + sfx
	n := createNetwork(t, prefix+"-l")
	gw := n.Gateway.String()
	up := startFakeUpstream(t)
	sd := startSidedns(t, up, "--listen", gw+":53", "--ttl", "5", "--allow", "127.0.0.0/8", "--allow", n.Subnet.String())

	svc := runContainer(t, ContainerOpts{Name: prefix + "-svc", Network: n.Name, DNS: []string{gw},
		Expose: []string{"8080/tcp"},
		Labels: map[string]string{
			"sidedns.names":     "alt-" + sfx + ",other-" + sfx,
			"sidedns.srv.http":  "8080/tcp",
			"sidedns.ttl":       "30",
			"sidedns.srv.bogus": "notaport",
		}})
	hidden := runContainer(t, ContainerOpts{Name: prefix + "-hidden", Network: n.Name, DNS: []string{gw},
		Labels: map[string]string{"sidedns.enable": "false"}})
	pause := runContainer(t, ContainerOpts{Name: prefix + "-pause", Network: n.Name, DNS: []string{gw}})
	client := runContainer(t, ContainerOpts{Name: prefix + "-client", Network: n.Name, DNS: []string{gw}})
	waitVisible(t, sd, n.Name, svc, pause, client)
	svcIP := svc.IPs[n.Name].String()

	ask := func(t *testing.T, name string, qtype uint16) *dns.Msg {
		t.Helper()
		r, err := query(t, sd.DNSAddr, name, qtype)
		if err != nil {
			t.Fatalf("query %s %s: %v", name, dns.TypeToString[qtype], err)
		}
		return r
	}

	t.Run("sidedns.names and sidedns.ttl", func(t *testing.T) {
		for _, name := range []string{"alt-" + sfx, "other-" + sfx, svc.Name} {
			r := ask(t, name, dns.TypeA)
			if !slices.Equal(answerAddrs(r), []string{svcIP}) {
				t.Errorf("%s = %v, want [%s]", name, answerAddrs(r), svcIP)
				continue
			}
			if ttl := r.Answer[0].Header().Ttl; ttl != 30 {
				t.Errorf("%s TTL = %d, want the label's 30", name, ttl)
			}
		}
	})
	t.Run("malformed label is logged and ignored", func(t *testing.T) {
		if !strings.Contains(sd.Log(), "sidedns.srv.bogus") {
			t.Errorf("no log line names the malformed label sidedns.srv.bogus")
		}
	})
	t.Run("sidedns.enable=false hides", func(t *testing.T) {
		r := ask(t, hidden.Name, dns.TypeA)
		if len(r.Answer) != 0 {
			t.Errorf("hidden container answered: %v", r.Answer)
		}
		if len(up.Saw(hidden.Name)) == 0 {
			t.Errorf("hidden name was not forwarded upstream")
		}
	})
	t.Run("PTR", func(t *testing.T) {
		rev, _ := dns.ReverseAddr(svcIP)
		r := ask(t, rev, dns.TypePTR)
		want := strings.ToLower(svc.Name + "." + n.Name + ".")
		if len(r.Answer) != 1 {
			t.Fatalf("PTR %s: %v, want one %s", rev, r.Answer, want)
		}
		ptr, ok := r.Answer[0].(*dns.PTR)
		if !ok || strings.ToLower(ptr.Ptr) != want {
			t.Errorf("PTR %s = %v, want %s", rev, r.Answer[0], want)
		}
	})
	t.Run("SRV", func(t *testing.T) {
		for _, name := range []string{"_8080._tcp." + svc.Name, "_http._tcp." + svc.Name, "_http._tcp.alt-" + sfx + ".docker"} {
			r := ask(t, name, dns.TypeSRV)
			if len(r.Answer) != 1 {
				t.Errorf("SRV %s: %v, want one record", name, r.Answer)
				continue
			}
			srv, ok := r.Answer[0].(*dns.SRV)
			if !ok || srv.Port != 8080 {
				t.Errorf("SRV %s = %v (wire type %s), want port 8080", name, r.Answer[0], dns.TypeToString[r.Answer[0].Header().Rrtype])
				continue
			}
			var glue []string
			for _, rr := range r.Extra {
				if a, ok := rr.(*dns.A); ok && strings.EqualFold(a.Hdr.Name, srv.Target) {
					glue = append(glue, a.A.String())
				}
			}
			if !slices.Equal(glue, []string{svcIP}) {
				t.Errorf("SRV %s target %s: additional A %v, want [%s]", name, srv.Target, glue, svcIP)
			}
		}
	})
	t.Run("AAAA of a v4-only name is NODATA, not forwarded", func(t *testing.T) {
		r := ask(t, svc.Name, dns.TypeAAAA)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
			t.Errorf("AAAA %s = %s %v, want NOERROR with no answer", svc.Name, dns.RcodeToString[r.Rcode], r.Answer)
		}
		if len(up.Saw(svc.Name)) != 0 {
			t.Errorf("AAAA for a local name was forwarded")
		}
	})
	t.Run("MX is empty NOERROR", func(t *testing.T) {
		r := ask(t, svc.Name, dns.TypeMX)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
			t.Errorf("MX %s = %s %v, want NOERROR with no answer", svc.Name, dns.RcodeToString[r.Rcode], r.Answer)
		}
	})
	t.Run("TCP from a container", func(t *testing.T) {
		args := []string{"exec", client.Name, "/probe", "dig", "-tcp", "-server", gw + ":53", svc.Name, "A"}
		r := parseDig(t, mustDocker(t, args...))
		if !slices.Equal(r.Addrs(), []string{svcIP}) {
			t.Errorf("TCP %s = %v, want [%s]", svc.Name, r.Addrs(), svcIP)
		}
	})
	t.Run("paused container leaves, unpaused returns", func(t *testing.T) {
		ip := pause.IPs[n.Name]
		mustDocker(t, "pause", pause.Name)
		t.Cleanup(func() { docker("unpause", pause.Name) })
		if _, ok := waitFor(2*time.Second, func() bool { return !hostSees(t, sd, pause.Name, ip) }); !ok {
			t.Errorf("paused %s still answered", pause.Name)
		}
		mustDocker(t, "unpause", pause.Name)
		if _, ok := waitFor(2*time.Second, func() bool { return hostSees(t, sd, pause.Name, ip) }); !ok {
			t.Errorf("unpaused %s not answered", pause.Name)
		}
	})
	t.Run("api/v1/records lists the containers", func(t *testing.T) {
		body := httpGet(t, "http://"+sd.HTTPAddr+"/api/v1/records")
		var missing []string
		for _, want := range []string{svc.Name, pause.Name, client.Name, n.Name, svcIP} {
			if !strings.Contains(body, want) {
				missing = append(missing, want)
			}
		}
		sort.Strings(missing)
		if len(missing) > 0 {
			t.Errorf("/api/v1/records lacks %v", missing)
		}
		// DESIGN 2.2: sidedns.enable=false hides the container from the table.
		if ip := hidden.IPs[n.Name].String(); strings.Contains(body, hidden.Name) || strings.Contains(body, `"`+ip+`"`) {
			t.Errorf("/api/v1/records shows the hidden container %s (%s)", hidden.Name, ip)
		}
	})
}

// TestAllowList: sidedns is not an open resolver (DESIGN 5). With an explicit
// --allow that leaves out the network, a container gets REFUSED; with the
// default, the subnets of Docker's networks are allowed.
func TestAllowList(t *testing.T) {
	requireDocker(t)
	sfx := randSuffix()
	n := createNetwork(t, "sidedns-test-"+sfx+"-a")
	gw := n.Gateway.String()
	c := runContainer(t, ContainerOpts{Name: "sidedns-test-" + sfx + "-a1", Network: n.Name, DNS: []string{gw}})
	ip := c.IPs[n.Name].String()

	tests := []struct {
		name  string
		allow []string
		rcode string
	}{
		{"loopback only", []string{"--allow", "127.0.0.0/8"}, "REFUSED"},
		{"default allows Docker subnets", nil, "NOERROR"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := startFakeUpstream(t)
			sd := startSidedns(t, up, append([]string{"--listen", gw + ":53"}, tc.allow...)...)
			waitVisible(t, sd, n.Name, c)
			r := mustDigIn(t, c.Name, gw+":53", c.Name, "A")
			if r.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s: %s", r.Rcode, tc.rcode, r)
			}
			if tc.rcode == "NOERROR" && !slices.Equal(r.Addrs(), []string{ip}) {
				t.Errorf("answers %v, want [%s]", r.Addrs(), ip)
			}
			if tc.rcode != "REFUSED" {
				return
			}
			// DESIGN 5: a refused source is counted in a metric.
			metrics := httpGet(t, "http://"+sd.HTTPAddr+"/metrics")
			var counted []string
			for _, line := range strings.Split(metrics, "\n") {
				f := strings.Fields(line)
				if len(f) == 2 && !strings.HasPrefix(line, "#") && strings.Contains(strings.ToLower(f[0]), "refused") && f[1] != "0" {
					counted = append(counted, line)
				}
			}
			t.Logf("refused metrics: %v", counted)
			if len(counted) == 0 {
				t.Errorf("no non-zero metric mentioning \"refused\" on /metrics after a REFUSED query")
			}
		})
	}
}
