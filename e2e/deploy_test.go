package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// These tests pin down the Docker facts that decide how sidedns is deployed
// (DESIGN section 1). Their t.Logf lines starting with "FACT" feed RESULTS.md.

// dockerEmbeddedTTL is the fixed TTL of Docker's embedded DNS answers.
const dockerEmbeddedTTL = 600

// nameservers lists the nameserver lines of a resolv.conf.
func nameservers(resolv string) []string {
	var out []string
	for _, line := range strings.Split(resolv, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			out = append(out, f[1])
		}
	}
	return out
}

func ttls(r DigResult) []uint32 {
	var out []uint32
	for _, a := range r.Answers {
		out = append(out, a.TTL)
	}
	return out
}

// TestDeploymentUserNetworkEmbeddedDNS shows which queries from a container on a
// user-defined network reach the --dns server through Docker's 127.0.0.11, and
// from which source address. A recorder on the network gateway stands in for
// sidedns, so this test needs no sidedns binary.
func TestDeploymentUserNetworkEmbeddedDNS(t *testing.T) {
	requireDocker(t)
	sfx := randSuffix()
	n := createNetwork(t, "sidedns-test-"+sfx+"-u")
	gw := n.Gateway.String()
	rec := startRecorder(t, gw)

	u1 := runContainer(t, ContainerOpts{Name: "sidedns-test-" + sfx + "-u1", Network: n.Name, Aliases: []string{"u1-alias"}, DNS: []string{gw}})
	client := runContainer(t, ContainerOpts{Name: "sidedns-test-" + sfx + "-client", Network: n.Name, DNS: []string{gw}})
	u1IP := u1.IPs[n.Name].String()
	clientIP := client.IPs[n.Name]

	resolv := catIn(t, client.Name, "/etc/resolv.conf")
	t.Logf("FACT user-defined network: client resolv.conf (--dns %s):\n%s", gw, resolv)
	if ns := nameservers(resolv); !slices.Equal(ns, []string{"127.0.0.11"}) {
		t.Errorf("resolv.conf nameservers = %v, want [127.0.0.11]", ns)
	}

	tests := []struct {
		name, qtype string
		// byDocker: answered by 127.0.0.11 itself; otherwise forwarded to --dns.
		byDocker bool
		wantAddr string // expected single A answer, "" for no check
		observe  bool   // record only, assert nothing
	}{
		{name: u1.Name, qtype: "A", byDocker: true, wantAddr: u1IP},
		{name: "u1-alias", qtype: "A", byDocker: true, wantAddr: u1IP},
		{name: u1.Name + "." + n.Name, qtype: "A", byDocker: true, wantAddr: u1IP},
		{name: "web.proj.docker", qtype: "A", wantAddr: recorderAddr},
		{name: "example.test", qtype: "A", wantAddr: recorderAddr},
		{name: u1.Name, qtype: "TXT"},
		{name: u1.ShortID(), qtype: "A", observe: true},
		{name: u1.Name, qtype: "AAAA", observe: true},
		{name: u1.Name, qtype: "MX", observe: true},
		{name: u1.Name, qtype: "SRV", observe: true},
		{name: strings.ToUpper(u1.Name), qtype: "A", observe: true},
	}
	for _, tc := range tests {
		t.Run(tc.qtype+"_"+tc.name, func(t *testing.T) {
			r := mustDigIn(t, client.Name, "", tc.name, tc.qtype)
			var arrived []QueryLog
			for _, q := range rec.Saw(tc.name) {
				if q.Type == tc.qtype {
					arrived = append(arrived, q)
				}
			}
			var from []string
			for _, q := range arrived {
				from = append(from, q.From.String())
			}
			t.Logf("FACT via 127.0.0.11: %s %s -> rcode=%s answers=%v ttls=%v; arrived at --dns server: %d time(s) from %v (client %s)",
				tc.name, tc.qtype, r.Rcode, r.Addrs(), ttls(r), len(arrived), from, clientIP)
			if tc.observe {
				return
			}
			if tc.byDocker {
				if len(arrived) != 0 {
					t.Errorf("%s reached the --dns server; want it answered by Docker", tc.name)
				}
				if got := r.Addrs(); !slices.Equal(got, []string{tc.wantAddr}) {
					t.Errorf("answers = %v, want [%s]", got, tc.wantAddr)
				}
				for _, a := range r.Answers {
					if a.TTL != dockerEmbeddedTTL {
						t.Errorf("Docker answer TTL = %d, want %d", a.TTL, dockerEmbeddedTTL)
					}
				}
				return
			}
			if len(arrived) == 0 {
				t.Fatalf("%s %s never reached the --dns server; dig: %s", tc.name, tc.qtype, r)
			}
			for _, q := range arrived {
				if q.From != clientIP {
					t.Errorf("forwarded query came from %s, want the client's own address %s", q.From, clientIP)
				}
			}
			if tc.wantAddr != "" && !slices.Equal(r.Addrs(), []string{tc.wantAddr}) {
				t.Errorf("answers = %v, want the --dns server's [%s]", r.Addrs(), tc.wantAddr)
			}
		})
	}
}

// TestDeploymentDefaultBridge: on the default bridge Docker runs no embedded
// DNS, so --dns <gateway> puts sidedns in charge of every query. The first
// subtest proves the Docker side with a recorder on the gateway, the second
// runs sidedns there.
func TestDeploymentDefaultBridge(t *testing.T) {
	requireDocker(t)
	sfx := randSuffix()
	bridge := inspectNetwork(t, "bridge")
	gw := bridge.Gateway.String()

	b1 := runContainer(t, ContainerOpts{Name: "sidedns-test-" + sfx + "-b1", DNS: []string{gw}})
	client := runContainer(t, ContainerOpts{Name: "sidedns-test-" + sfx + "-bc", DNS: []string{gw}})
	b1IP := b1.IPs["bridge"].String()
	clientIP := client.IPs["bridge"]

	t.Run("docker", func(t *testing.T) {
		rec := startRecorder(t, gw)
		resolv := catIn(t, client.Name, "/etc/resolv.conf")
		t.Logf("FACT default bridge: client resolv.conf (--dns %s):\n%s", gw, resolv)
		if ns := nameservers(resolv); !slices.Equal(ns, []string{gw}) {
			t.Errorf("resolv.conf nameservers = %v, want only [%s]", ns, gw)
		}
		r := mustDigIn(t, client.Name, "", b1.Name, "A")
		arrived := rec.Saw(b1.Name)
		t.Logf("FACT default bridge: %s A -> %v; arrived at --dns server %d time(s): %v (client %s)", b1.Name, r.Addrs(), len(arrived), arrived, clientIP)
		if len(arrived) != 1 || arrived[0].From != clientIP {
			t.Errorf("container name query: arrived %v, want once from %s", arrived, clientIP)
		}
		r, err := digIn(t, client.Name, "127.0.0.11:53", b1.Name, "A")
		t.Logf("FACT default bridge: query to 127.0.0.11:53 -> err=%v output=%q", err, r.Raw)
		if err == nil {
			t.Errorf("127.0.0.11 answered on the default bridge (%s); want no embedded DNS", r)
		}
	})

	t.Run("sidedns", func(t *testing.T) {
		up := startFakeUpstream(t)
		sd := startSidedns(t, up, "--listen", gw+":53", "--ttl", "5",
			"--allow", "127.0.0.0/8", "--allow", bridge.Subnet.String())
		waitVisible(t, sd, "bridge", b1, client)
		tests := []struct{ name, want string }{
			{b1.Name, b1IP},
			{b1.Name + ".bridge", b1IP},
			{b1.ShortID(), b1IP},
			{b1.Name + ".docker", b1IP},
			{"example.test", upstreamAddr},
		}
		for _, tc := range tests {
			r := mustDigIn(t, client.Name, "", tc.name, "A")
			t.Logf("FACT default bridge via sidedns: %s A -> rcode=%s answers=%v ttls=%v", tc.name, r.Rcode, r.Addrs(), ttls(r))
			if !slices.Equal(r.Addrs(), []string{tc.want}) {
				t.Errorf("%s: answers = %v, want [%s]; dig: %s", tc.name, r.Addrs(), tc.want, r)
			}
			if tc.want == b1IP && len(r.Answers) > 0 && r.Answers[0].TTL != 5 {
				t.Errorf("%s: TTL = %d, want sidedns's 5", tc.name, r.Answers[0].TTL)
			}
		}
	})
}

// TestDeploymentFullTakeover: a bind-mounted resolv.conf naming sidedns makes
// it answer every name on a user-defined network, with its own TTL.
func TestDeploymentFullTakeover(t *testing.T) {
	requireDocker(t)
	sfx := randSuffix()
	n := createNetwork(t, "sidedns-test-"+sfx+"-t")
	gw := n.Gateway.String()
	up := startFakeUpstream(t)
	sd := startSidedns(t, up, "--listen", gw+":53", "--ttl", "5",
		"--allow", "127.0.0.0/8", "--allow", n.Subnet.String())

	resolvPath := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolvPath, []byte("nameserver "+gw+"\noptions ndots:0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t1 := runContainer(t, ContainerOpts{Name: "sidedns-test-" + sfx + "-t1", Network: n.Name, Aliases: []string{"t1-alias"}, DNS: []string{gw}})
	client := runContainer(t, ContainerOpts{Name: "sidedns-test-" + sfx + "-takeover", Network: n.Name, DNS: []string{gw},
		Volumes: []string{resolvPath + ":/etc/resolv.conf:ro"}})
	plain := runContainer(t, ContainerOpts{Name: "sidedns-test-" + sfx + "-plain", Network: n.Name, DNS: []string{gw}})
	waitVisible(t, sd, n.Name, t1, client, plain)
	t1IP := t1.IPs[n.Name].String()

	resolv := catIn(t, client.Name, "/etc/resolv.conf")
	t.Logf("FACT full takeover: client resolv.conf (bind mount):\n%s", resolv)
	if ns := nameservers(resolv); !slices.Equal(ns, []string{gw}) {
		t.Fatalf("resolv.conf nameservers = %v, want only [%s]", ns, gw)
	}

	for _, name := range []string{t1.Name, "t1-alias", t1.Name + "." + n.Name} {
		r := mustDigIn(t, client.Name, "", name, "A")
		p := mustDigIn(t, plain.Name, "", name, "A")
		t.Logf("FACT full takeover: %s A -> answers=%v ttls=%v (same name via 127.0.0.11 in a plain container: answers=%v ttls=%v)",
			name, r.Addrs(), ttls(r), p.Addrs(), ttls(p))
		if !slices.Equal(r.Addrs(), []string{t1IP}) {
			t.Errorf("%s: answers = %v, want [%s]", name, r.Addrs(), t1IP)
			continue
		}
		if r.Answers[0].TTL != 5 {
			t.Errorf("%s: TTL = %d, want sidedns's 5 (Docker would say %d)", name, r.Answers[0].TTL, dockerEmbeddedTTL)
		}
	}
	r := mustDigIn(t, client.Name, "", "example.test", "A")
	t.Logf("FACT full takeover: example.test A -> %v", r.Addrs())
	if !slices.Equal(r.Addrs(), []string{upstreamAddr}) {
		t.Errorf("example.test: answers = %v, want the upstream's [%s]", r.Addrs(), upstreamAddr)
	}
	if q := up.Saw("example.test"); len(q) == 0 {
		t.Errorf("example.test never reached the upstream")
	}
}
