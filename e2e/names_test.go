package e2e

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestNamesAndScoping covers the Docker-compatible names (DESIGN 2.1), the zone
// (2.3), TTL and round-robin (2.2), queried from a container's own address, and
// network scoping: a container on another network does not see them.
func TestNamesAndScoping(t *testing.T) {
	requireDocker(t)
	sfx := randSuffix()
	prefix := "sidedns-test-" + sfx
	nn := createNetwork(t, prefix+"-n")
	mm := createNetwork(t, prefix+"-m")
	gwN, gwM := nn.Gateway.String(), mm.Gateway.String()
	up := startFakeUpstream(t)

	project := "proj" + sfx
	web1 := runContainer(t, ContainerOpts{Name: prefix + "-web1", Network: nn.Name, Aliases: []string{"web"},
		Hostname: "web1host-" + sfx, DNS: []string{gwN}})
	web2 := runContainer(t, ContainerOpts{Name: prefix + "-web2", Network: nn.Name, Aliases: []string{"web"}, DNS: []string{gwN}})
	db := runContainer(t, ContainerOpts{Name: project + "-db-1", Network: nn.Name, Aliases: []string{"db"}, DNS: []string{gwN},
		Labels: map[string]string{
			"com.docker.compose.project":          project,
			"com.docker.compose.service":          "db",
			"com.docker.compose.container-number": "1",
		}})
	client := runContainer(t, ContainerOpts{Name: prefix + "-client", Network: nn.Name, DNS: []string{gwN}})
	other := runContainer(t, ContainerOpts{Name: prefix + "-other", Network: mm.Name, DNS: []string{gwM}})

	// Started after the containers: the initial list must find them all.
	sd := startSidedns(t, up, "--listen", gwN+":53", "--listen", gwM+":53", "--ttl", "5", "--log-queries", "1",
		"--allow", "127.0.0.0/8", "--allow", nn.Subnet.String(), "--allow", mm.Subnet.String())
	waitVisible(t, sd, nn.Name, web1, web2, db, client)
	waitVisible(t, sd, mm.Name, other)

	ip1, ip2, ipDB := web1.IPs[nn.Name].String(), web2.IPs[nn.Name].String(), db.IPs[nn.Name].String()
	server := gwN + ":53"
	tests := []struct {
		name string
		want []string
	}{
		{web1.Name, []string{ip1}},
		{strings.ToUpper(web1.Name) + ".", []string{ip1}},
		{"web", []string{ip1, ip2}},
		{db.Name, []string{ipDB}},
		{"db", []string{ipDB}},
		{web1.ShortID(), []string{ip1}},
		{web1.Hostname, []string{ip1}},
		{web1.Name + "." + nn.Name, []string{ip1}},
		{"web." + nn.Name, []string{ip1, ip2}},
		{web1.Name + ".docker", []string{ip1}},
		{"db." + project + ".docker", []string{ipDB}},
		{web1.Name + "." + nn.Name + ".docker", []string{ip1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := mustDigIn(t, client.Name, server, tc.name, "A")
			if r.Rcode != "NOERROR" || !sameSet(r.Addrs(), tc.want) {
				t.Fatalf("from %s: %s A = %s %v, want NOERROR %v\n%s", client.Name, tc.name, r.Rcode, r.Addrs(), tc.want, r)
			}
			for _, a := range r.Answers {
				if a.TTL != 5 {
					t.Errorf("TTL = %d, want 5", a.TTL)
				}
			}
			if q := up.Saw(tc.name); len(q) != 0 {
				t.Errorf("local name %s was forwarded upstream", tc.name)
			}
		})
	}

	t.Run("round-robin", func(t *testing.T) {
		a := mustDigIn(t, client.Name, server, "web", "A").Addrs()
		b := mustDigIn(t, client.Name, server, "web", "A").Addrs()
		t.Logf("consecutive answers for web: %v then %v", a, b)
		if len(a) != 2 || len(b) != 2 || a[0] == b[0] {
			t.Errorf("answers did not rotate: %v then %v", a, b)
		}
	})

	t.Run("unknown in zone is NXDOMAIN, not forwarded", func(t *testing.T) {
		name := "nosuch-" + sfx + ".docker"
		r := mustDigIn(t, client.Name, server, name, "A")
		if r.Rcode != "NXDOMAIN" {
			t.Errorf("%s: rcode %s, want NXDOMAIN", name, r.Rcode)
		}
		if len(up.Saw(name)) != 0 {
			t.Errorf("%s was forwarded upstream", name)
		}
	})

	t.Run("through Docker's 127.0.0.11", func(t *testing.T) {
		// Without takeover, 127.0.0.11 answers Docker's names itself and forwards
		// the rest (our zone included) to --dns, from the client's own address.
		clientIP := client.IPs[nn.Name]
		tests := []struct {
			name      string
			want      string
			ttl       uint32
			atSidedns bool
		}{
			{web1.Name, ip1, dockerEmbeddedTTL, false},
			{"db." + project + ".docker", ipDB, 5, true},
			{web1.Name + ".docker", ip1, 5, true},
			{"example.test", upstreamAddr, 300, true},
		}
		for _, tc := range tests {
			mark := sd.Mark()
			r := mustDigIn(t, client.Name, "", tc.name, "A")
			seen := sd.SawSince(mark, tc.name)
			t.Logf("FACT %s A via 127.0.0.11: %s %v ttls=%v; reached sidedns %d time(s): %v (client %s)",
				tc.name, r.Rcode, r.Addrs(), ttls(r), len(seen), seen, clientIP)
			if !slices.Equal(r.Addrs(), []string{tc.want}) {
				t.Errorf("%s: answers %v, want [%s]", tc.name, r.Addrs(), tc.want)
			} else if r.Answers[0].TTL > tc.ttl || tc.ttl == dockerEmbeddedTTL && r.Answers[0].TTL != tc.ttl {
				t.Errorf("%s: TTL %d, want %d", tc.name, r.Answers[0].TTL, tc.ttl)
			}
			if !tc.atSidedns {
				if len(seen) != 0 {
					t.Errorf("%s reached sidedns; Docker should answer it", tc.name)
				}
				continue
			}
			if len(seen) == 0 {
				t.Errorf("%s never reached sidedns", tc.name)
			}
			for _, q := range seen {
				if q.From != clientIP {
					t.Errorf("%s reached sidedns from %s, want the client's %s", tc.name, q.From, clientIP)
				}
			}
		}
	})

	t.Run("forwarded from the container", func(t *testing.T) {
		r := mustDigIn(t, client.Name, server, "example.test", "A")
		if !slices.Equal(r.Addrs(), []string{upstreamAddr}) {
			t.Errorf("example.test = %v, want [%s]", r.Addrs(), upstreamAddr)
		}
	})

	// Network M's container sees none of N's names: sidedns forwards them.
	for _, name := range []string{web1.Name, "web", db.Name, web1.Name + "." + nn.Name} {
		t.Run("other network/"+name, func(t *testing.T) {
			r, err := digIn(t, other.Name, gwM+":53", name, "A")
			if err != nil {
				t.Fatalf("dig from %s: %v", other.Name, err)
			}
			for _, a := range r.Addrs() {
				if a == ip1 || a == ip2 || a == ipDB {
					t.Fatalf("%s on network %s got %s's address %s for %s", other.Name, mm.Name, nn.Name, a, name)
				}
			}
			if r.Rcode != "NXDOMAIN" {
				t.Errorf("%s: rcode %s, want the fake upstream's NXDOMAIN", name, r.Rcode)
			}
			if len(up.Saw(name)) == 0 {
				t.Errorf("%s from another network was not forwarded upstream", name)
			}
		})
	}

	t.Run("admin view from the host sees all networks", func(t *testing.T) {
		for name, want := range map[string]netip.Addr{web1.Name: web1.IPs[nn.Name], other.Name: other.IPs[mm.Name]} {
			if !hostSees(t, sd, name, want) {
				t.Errorf("host view does not answer %s with %s", name, want)
			}
		}
	})
}

// TestContainerLifecycle: a container leaves the answers within 1s of stopping
// and joins within 1s of starting (sidedns follows Docker events).
func TestContainerLifecycle(t *testing.T) {
	requireDocker(t)
	sfx := randSuffix()
	prefix := "sidedns-test-" + sfx
	n := createNetwork(t, prefix+"-e")
	gw := n.Gateway.String()
	up := startFakeUpstream(t)
	sd := startSidedns(t, up, "--ttl", "5", "--allow", "127.0.0.0/8", "--allow", n.Subnet.String())

	// Started after sidedns: these arrive through events.
	c1 := runContainer(t, ContainerOpts{Name: prefix + "-c1", Network: n.Name, DNS: []string{gw}})
	c2 := runContainer(t, ContainerOpts{Name: prefix + "-c2", Network: n.Name, DNS: []string{gw}})
	waitVisible(t, sd, n.Name, c1, c2)

	gone := func(c Container, ip netip.Addr) func() bool {
		return func() bool {
			r, err := query(t, sd.DNSAddr, c.Name, dns.TypeA)
			return err == nil && !slices.Contains(answerAddrs(r), ip.String())
		}
	}
	const within = time.Second

	t.Run("kill", func(t *testing.T) {
		mustDocker(t, "kill", c1.Name)
		took, ok := waitFor(within, gone(c1, c1.IPs[n.Name]))
		t.Logf("FACT %s left the answers %v after docker kill returned", c1.Name, took.Round(time.Millisecond))
		if !ok {
			t.Errorf("%s still answered %v after docker kill", c1.Name, within)
		}
	})
	t.Run("stop", func(t *testing.T) {
		mustDocker(t, "stop", "-t", "5", c2.Name)
		took, ok := waitFor(within, gone(c2, c2.IPs[n.Name]))
		t.Logf("FACT %s left the answers %v after docker stop returned", c2.Name, took.Round(time.Millisecond))
		if !ok {
			t.Errorf("%s still answered %v after docker stop", c2.Name, within)
		}
	})
	t.Run("run", func(t *testing.T) {
		c3 := runContainer(t, ContainerOpts{Name: prefix + "-c3", Network: n.Name, DNS: []string{gw}})
		took, ok := waitFor(within, func() bool { return hostSees(t, sd, c3.Name, c3.IPs[n.Name]) })
		t.Logf("FACT %s answered %v after docker run returned", c3.Name, took.Round(time.Millisecond))
		if !ok {
			t.Errorf("%s not answered %v after docker run", c3.Name, within)
		}
	})
	t.Run("restart stopped", func(t *testing.T) {
		mustDocker(t, "start", c1.Name)
		c := inspectContainer(t, c1.Name)
		took, ok := waitFor(within, func() bool { return hostSees(t, sd, c.Name, c.IPs[n.Name]) })
		t.Logf("FACT %s answered %v after docker start returned", c.Name, took.Round(time.Millisecond))
		if !ok {
			t.Errorf("%s not answered %v after docker start", c.Name, within)
		}
	})
}
