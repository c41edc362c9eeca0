package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDeploymentLoopbackDNS pins down where a loopback --dns server is asked from, for a container on a
// user-defined network (DESIGN 1). Engine 20.10 forwards from the container's own namespace, where
// nothing listens on the host's loopback, so the query never arrives. A current engine (seen on API
// 1.56) forwards from the host's namespace, so the server sees a loopback source and cannot tell the
// containers apart: the README therefore says to point --dns at the bridge gateway.
func TestDeploymentLoopbackDNS(t *testing.T) {
	requireDocker(t)
	sfx := randSuffix()
	n := createNetwork(t, "sidedns-test-"+sfx+"-l")
	// A loopback address of its own, so port 53 clashes with nothing else on 127.0.0.1.
	lo := fmt.Sprintf("127.53.%d.%d", 1+int(sfx[0])%200, 1+int(sfx[1])%200)
	rec := startRecorder(t, lo)
	c := runContainer(t, ContainerOpts{Name: "sidedns-test-" + sfx + "-l1", Network: n.Name, DNS: []string{lo}})
	clientIP := c.IPs[n.Name]

	r, err := digIn(t, c.Name, "", "example.test", "A")
	arrived := rec.Saw("example.test")
	var from []string
	for _, q := range arrived {
		from = append(from, q.From.String())
	}
	maj, min := serverAPI(t)
	t.Logf("FACT loopback --dns %s on a user network (API %d.%d): example.test A -> %v err=%v; arrived %d time(s) from %v (client %s)",
		lo, maj, min, r.Addrs(), err, len(arrived), from, clientIP)

	switch {
	case maj == 1 && min <= 41:
		if len(arrived) != 0 {
			t.Errorf("on API %d.%d the loopback --dns server was reached (from %v); Engine 20.10 asks from the container's namespace", maj, min, from)
		}
	case maj > 1 || min >= 56:
		if len(arrived) == 0 {
			t.Fatalf("on API %d.%d the loopback --dns server was never asked; dig: %s %v", maj, min, r, err)
		}
		for _, q := range arrived {
			if !q.From.IsLoopback() {
				t.Errorf("query arrived from %s, want a loopback source (the host's namespace)", q.From)
			}
		}
	default:
		t.Logf("API %d.%d: behaviour not pinned down; observed only", maj, min)
	}
	if len(arrived) == 0 || !arrived[0].From.IsLoopback() {
		return
	}

	// sidedns itself as that loopback --dns: every query reaches it from loopback, and it says so.
	t.Run("sidedns warns", func(t *testing.T) {
		lo2 := fmt.Sprintf("127.53.%d.%d", 1+int(sfx[2])%200, 1+int(sfx[3])%200)
		up := startFakeUpstream(t)
		sd := startSidedns(t, up, "--listen", lo2+":53")
		c2 := runContainer(t, ContainerOpts{Name: "sidedns-test-" + sfx + "-l2", Network: n.Name, DNS: []string{lo2}})
		waitVisible(t, sd, n.Name, c2)
		if r, err := digIn(t, c2.Name, "", "example.test", "A"); err != nil || !slices.Equal(r.Addrs(), []string{upstreamAddr}) {
			t.Errorf("example.test through 127.0.0.11 and sidedns on %s = %v %v, want [%s]", lo2, r, err, upstreamAddr)
		}
		const warning = "every query so far came from loopback"
		if _, ok := waitFor(15*time.Second, func() bool { return strings.Contains(sd.Log(), warning) }); !ok {
			t.Fatalf("sidedns never warned %q:\n%s", warning, sd.Log())
		}
		t.Logf("FACT sidedns as a loopback --dns on a user network logs: %s", lineWith(sd.Log(), warning))
	})
}

func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
