package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// composeDefaultSubnet is the subnet examples/compose documents.
var composeDefaultSubnet = netip.MustParsePrefix("172.30.53.0/24")

// composeOverride adds what the example leaves to the user: a fake upstream on
// the project network (nothing may leave this machine), and the run label so
// TestMain's sweep finds leftovers. ${VAR}s are filled from the environment.
const composeOverride = `services:
  upstream:
    image: ${PROBE_IMAGE}
    command: ["dnsrecord", "-listen", ":53"]
    dns: ["${SIDEDNS_IP}"]
    labels: ["${E2E_LABEL}=${E2E_RUN}"]
    networks:
      default:
        ipv4_address: ${E2E_UPSTREAM_IP}
  sidedns:
    labels: ["${E2E_LABEL}=${E2E_RUN}"]
    # The engine under test's socket (the private engine's is elsewhere).
    volumes: ["${E2E_DOCKER_SOCK}:/var/run/docker.sock:ro"]
  web:
    labels: ["${E2E_LABEL}=${E2E_RUN}"]
  client:
    labels: ["${E2E_LABEL}=${E2E_RUN}"]
networks:
  default:
    # docker-compose v1 replaces a top-level network whole: repeat the ipam.
    labels: ["${E2E_LABEL}=${E2E_RUN}"]
    ipam:
      config:
        - subnet: ${SIDEDNS_SUBNET}
`

// noHealthcheckCmd stands in for `sidedns healthcheck` while cmd lacks it:
// it always passes, so it proves nothing and the test says so loudly.
const noHealthcheckCmd = `services:
  sidedns:
    healthcheck:
      test: ["CMD", "/sidedns", "--help"]
`

// compose is one docker-compose project under test.
type compose struct {
	project string
	files   []string
	env     []string
}

func (c compose) run(ctx context.Context, args ...string) (string, error) {
	full := []string{"-p", c.project}
	for _, f := range c.files {
		full = append(full, "-f", f)
	}
	full = append(full, args...)
	name, pre := composeCommand()
	cmd := exec.CommandContext(ctx, name, append(pre, full...)...)
	cmd.Env = c.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", strings.Join(append([]string{name}, pre...), " "), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

func (c compose) must(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := c.run(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// containerOf returns the ID of a service's single container.
func (c compose) containerOf(t testing.TB, service string) string {
	t.Helper()
	id := c.must(t, "ps", "-q", service)
	if id == "" || strings.Contains(id, "\n") {
		t.Fatalf("service %s: want one container, got %q", service, id)
	}
	return id
}

// usedSubnets lists the IPv4 subnets of every Docker network.
func usedSubnets(t testing.TB) []netip.Prefix {
	t.Helper()
	ids := strings.Fields(mustDocker(t, "network", "ls", "-q"))
	out := mustDocker(t, append([]string{"network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"}, ids...)...)
	var ps []netip.Prefix
	for _, f := range strings.Fields(out) {
		if p, err := netip.ParsePrefix(f); err == nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// composeSubnet returns the documented subnet when no network overlaps it,
// else a free 10.x.y.0/24. avoid also excludes subnets an earlier attempt lost.
func composeSubnet(t testing.TB, avoid ...netip.Prefix) netip.Prefix {
	t.Helper()
	used := append(usedSubnets(t), avoid...)
	free := func(p netip.Prefix) bool {
		for _, u := range used {
			if u.Overlaps(p) {
				return false
			}
		}
		return true
	}
	if free(composeDefaultSubnet) {
		return composeDefaultSubnet
	}
	for range 50 {
		b := []byte(randSuffix())
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200 + b[0]%50, b[1], 0}), 24)
		if free(p) {
			return p
		}
	}
	t.Fatal("no free /24 for the compose project")
	return netip.Prefix{}
}

// hostIn returns the address .n of a /24.
func hostIn(p netip.Prefix, n byte) netip.Addr {
	a := p.Addr().As4()
	a[3] = n
	return netip.AddrFrom4(a)
}

// cmdHasHealthcheck reports whether the binary knows `sidedns healthcheck`:
// without it, a positional argument is a usage error.
func cmdHasHealthcheck(t testing.TB, bin string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Port 9 on loopback: nothing listens, so a real healthcheck fails fast.
	out, _ := exec.CommandContext(ctx, bin, "healthcheck", "http://127.0.0.1:9/readyz").CombinedOutput()
	return !strings.Contains(string(out), `unexpected argument "healthcheck"`)
}

// TestComposeExample brings examples/compose up with docker-compose, with
// locally built images and a fake upstream on the project network, and checks
// that client resolves web through sidedns.
func TestComposeExample(t *testing.T) {
	requireDocker(t)
	if name, _ := composeCommand(); name == "docker-compose" {
		if _, err := exec.LookPath(name); err != nil {
			if os.Getenv("SIDEDNS_REQUIRE_DOCKER") == "1" {
				t.Fatalf("docker-compose is required (SIDEDNS_REQUIRE_DOCKER=1): %v", err)
			}
			t.Skipf("SKIPPING: docker-compose not installed: %v", err)
		}
	}
	composeDefaults(t)
	img := pkgImage(t)
	dir := t.TempDir()
	override := filepath.Join(dir, "override.yml")
	if err := os.WriteFile(override, []byte(composeOverride), 0o644); err != nil {
		t.Fatalf("write override: %v", err)
	}
	c := compose{
		project: "sidedns-test-" + randSuffix(),
		files:   []string{filepath.Join(moduleRoot(), "examples", "compose", "docker-compose.yml"), override},
	}
	if !cmdHasHealthcheck(t, buildSidedns(t)) {
		t.Logf("\n!!! `sidedns healthcheck URL` is missing from cmd: the sidedns healthcheck is replaced\n" +
			"!!! by `/sidedns --help`, which proves nothing. Readiness is checked by the test instead.")
		stub := filepath.Join(dir, "no-healthcheck.yml")
		if err := os.WriteFile(stub, []byte(noHealthcheckCmd), 0o644); err != nil {
			t.Fatalf("write healthcheck stub: %v", err)
		}
		c.files = append(c.files, stub)
	}

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		if t.Failed() {
			logs, _ := c.run(ctx, "logs", "--no-color")
			t.Logf("compose logs:\n%s", logs)
		}
		if _, err := c.run(ctx, "down", "-v", "--remove-orphans", "-t", "5"); err != nil {
			t.Errorf("compose down: %v", err)
		}
	})

	// The documented subnet unless taken; another run may grab it between the
	// check and `up`, so a lost race retries once on a random one.
	var subnet netip.Prefix
	for attempt := 0; ; attempt++ {
		if attempt == 0 {
			subnet = composeSubnet(t)
		} else {
			subnet = composeSubnet(t, subnet)
		}
		c.env = composeEnv(map[string]string{
			"SIDEDNS_IMAGE":    img,
			"SIDEDNS_SUBNET":   subnet.String(),
			"SIDEDNS_IP":       hostIn(subnet, 53).String(),
			"SIDEDNS_UPSTREAM": hostIn(subnet, 2).String(),
			"DOCKER_GID":       socketGID(t),
			"WEB_IMAGE":        probeImage,
			"CLIENT_IMAGE":     probeImage,
			"CLIENT_COMMAND":   "serve",
			"PROBE_IMAGE":      probeImage,
			"E2E_UPSTREAM_IP":  hostIn(subnet, 2).String(),
			"E2E_LABEL":        runLabel,
			"E2E_RUN":          runID,
			"E2E_DOCKER_SOCK":  dockerSock,
		})
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		_, err := c.run(ctx, "up", "-d", "--no-build")
		cancel()
		if err == nil {
			break
		}
		if attempt == 0 && strings.Contains(err.Error(), "overlap") {
			t.Logf("subnet %s taken meanwhile, retrying: %v", subnet, err)
			continue
		}
		t.Fatal(err)
	}
	sidednsIP := hostIn(subnet, 53).String()
	upstreamIP := hostIn(subnet, 2).String()
	t.Logf("project %s on %s, sidedns at %s", c.project, subnet, sidednsIP)

	sd := c.containerOf(t, "sidedns")
	web := c.containerOf(t, "web")
	client := c.containerOf(t, "client")
	up := c.containerOf(t, "upstream")
	network := c.project + "_default"
	webIP := inspectContainer(t, web).IPs[network].String()
	if webIP == "" {
		t.Fatalf("web has no address on %s", network)
	}

	// depends_on: service_healthy means sidedns was healthy before web and
	// client started.
	if h := mustDocker(t, "inspect", "--format", "{{.State.Health.Status}}", sd); h != "healthy" {
		t.Errorf("sidedns health = %s, want healthy", h)
	}
	var mounts []struct {
		Destination string
		RW          bool
	}
	if err := json.Unmarshal([]byte(mustDocker(t, "inspect", "--format", "{{json .Mounts}}", sd)), &mounts); err != nil {
		t.Fatalf("decode mounts: %v", err)
	}
	if i := slices.IndexFunc(mounts, func(m struct {
		Destination string
		RW          bool
	}) bool {
		return m.Destination == containerDockerSock
	}); i < 0 || mounts[i].RW {
		t.Errorf("docker socket mount = %+v, want %s read-only", mounts, containerDockerSock)
	}
	uid, groups := procStatus(t, sd)
	t.Logf("FACT compose sidedns: uid %s, groups [%s]", uid, groups)
	if uid == "0" {
		t.Errorf("sidedns runs as root in the compose example, want the image's non-root user")
	}
	if resolv := catIn(t, client, "/etc/resolv.conf"); !slices.Equal(nameservers(resolv), []string{"127.0.0.11"}) {
		t.Errorf("client resolv.conf nameservers = %v, want [127.0.0.11]", nameservers(resolv))
	}

	direct := sidednsIP + ":53"
	zoneName := "web." + c.project + ".docker"
	tests := []struct {
		desc, server, name string
		rcode              string
		want               []string
	}{
		{"bare service name, asking sidedns", direct, "web", "NOERROR", []string{webIP}},
		{"zone name through Docker's 127.0.0.11", "", zoneName, "NOERROR", []string{webIP}},
		{"zone name, asking sidedns", direct, zoneName, "NOERROR", []string{webIP}},
		{"unknown zone name is NXDOMAIN, not forwarded", "", "nope." + c.project + ".docker", "NXDOMAIN", nil},
		{"external name forwarded to the upstream", "", "example.test", "NOERROR", []string{recorderAddr}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			// Without the healthcheck subcommand nothing guarantees the first
			// sync yet; retry briefly.
			var r DigResult
			ok := false
			waitFor(10*time.Second, func() bool {
				got, err := digIn(t, client, tc.server, tc.name, "A")
				r = got
				ok = err == nil && got.Rcode == tc.rcode && slices.Equal(got.Addrs(), tc.want)
				return ok
			})
			if !ok {
				t.Errorf("dig %s via %q from client = %s, want %s %v", tc.name, tc.server, r, tc.rcode, tc.want)
			}
		})
	}

	// The upstream saw the external name from sidedns, and never a zone name.
	logs, _ := exec.Command("docker", "logs", up).CombinedOutput()
	if !strings.Contains(string(logs), "query example.test. A from "+sidednsIP+":") {
		t.Errorf("upstream log lacks example.test from sidedns %s:\n%s", sidednsIP, logs)
	}
	if strings.Contains(string(logs), ".docker.") {
		t.Errorf("zone names leaked to the upstream (%s):\n%s", upstreamIP, logs)
	}
}

// composeEnv is this process's environment without SIDEDNS_*/COMPOSE_*
// settings that could leak into the project, plus vars.
func composeEnv(vars map[string]string) []string {
	env := environWithout("SIDEDNS_", "COMPOSE_")
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	return env
}

// composeDefaults checks that the example, with nothing set, renders the
// documented defaults, so the README and the file cannot drift apart.
func composeDefaults(t *testing.T) {
	t.Helper()
	c := compose{
		project: "sidedns-test-config",
		files:   []string{filepath.Join(moduleRoot(), "examples", "compose", "docker-compose.yml")},
		env:     composeEnv(nil),
	}
	out := c.must(t, "config")
	for _, want := range []string{
		"subnet: " + composeDefaultSubnet.String(),
		"ipv4_address: " + hostIn(composeDefaultSubnet, 53).String(),
		"--listen=" + hostIn(composeDefaultSubnet, 53).String() + ":53",
		"--upstream=9.9.9.9",
		"condition: service_healthy",
		"image: sidedns:latest",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("docker-compose config of the example lacks %q:\n%s", want, out)
		}
	}
	// The socket, read-only: compose v1 renders the short form, compose v2 the long one.
	short := strings.Contains(out, "/var/run/docker.sock:/var/run/docker.sock:ro")
	long := strings.Contains(out, "source: /var/run/docker.sock") && strings.Contains(out, "target: /var/run/docker.sock") &&
		strings.Contains(out, "read_only: true")
	if !short && !long {
		t.Errorf("compose config of the example lacks the read-only docker.sock mount:\n%s", out)
	}
}
