package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestHealthFiltering: only healthy replicas are answered, a health_status
// event changes the answer, and with none healthy sidedns fails open (DESIGN 2.2).
func TestHealthFiltering(t *testing.T) {
	requireDocker(t)
	sfx := randSuffix()
	prefix := "sidedns-test-" + sfx
	n := createNetwork(t, prefix+"-h")
	gw := n.Gateway.String()
	up := startFakeUpstream(t)
	sd := startSidedns(t, up, "--ttl", "5", "--allow", "127.0.0.0/8", "--allow", n.Subnet.String())

	opts := func(name string) ContainerOpts {
		return ContainerOpts{Name: name, Network: n.Name, Aliases: []string{"api"}, DNS: []string{gw},
			HealthCmd: "/probe health", HealthInterval: 500 * time.Millisecond, HealthRetries: 1}
	}
	h1 := runContainer(t, opts(prefix+"-h1"))
	mustDocker(t, "exec", h1.Name, "/probe", "mark", "healthy")
	h2 := runContainer(t, opts(prefix+"-h2"))
	ip1, ip2 := h1.IPs[n.Name].String(), h2.IPs[n.Name].String()

	health := func(c Container) string {
		out, _ := docker("inspect", "--format", "{{.State.Health.Status}}", c.Name)
		return out
	}
	waitAnswer := func(t *testing.T, want []string, why string) {
		t.Helper()
		var last []string
		took, ok := waitFor(10*time.Second, func() bool {
			r, err := query(t, sd.DNSAddr, "api."+n.Name, dns.TypeA)
			if err != nil {
				return false
			}
			last = answerAddrs(r)
			return sameSet(last, want)
		})
		t.Logf("%s: api.%s = %v after %v (h1 %s, h2 %s)", why, n.Name, last, took.Round(time.Millisecond), health(h1), health(h2))
		if !ok {
			t.Fatalf("%s: api answers %v, want %v", why, last, want)
		}
	}

	t.Run("only the healthy replica", func(t *testing.T) {
		waitAnswer(t, []string{ip1}, "h1 healthy, h2 starting/unhealthy")
	})
	t.Run("second replica turns healthy", func(t *testing.T) {
		mustDocker(t, "exec", h2.Name, "/probe", "mark", "healthy")
		waitAnswer(t, []string{ip1, ip2}, "both healthy")
	})
	t.Run("first replica turns unhealthy", func(t *testing.T) {
		mustDocker(t, "exec", h1.Name, "/probe", "mark", "unhealthy")
		waitAnswer(t, []string{ip2}, "h1 unhealthy")
	})
	t.Run("none healthy fails open", func(t *testing.T) {
		mustDocker(t, "exec", h2.Name, "/probe", "mark", "unhealthy")
		if _, ok := waitFor(10*time.Second, func() bool { return strings.Contains(health(h2), "unhealthy") }); !ok {
			t.Fatalf("h2 never became unhealthy: %s", health(h2))
		}
		waitAnswer(t, []string{ip1, ip2}, "none healthy (fail open)")
	})
}
