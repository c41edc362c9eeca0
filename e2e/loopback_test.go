package e2e

import (
	"fmt"
	"testing"
)

// TestDeploymentLoopbackDNS pins down where a loopback --dns server is asked from, for a container on a
// user-defined network (DESIGN 1). Seen on Engine 20.10 (API 1.41) and on the private Engine 29 line
// (API 1.56): Docker's 127.0.0.11 forwards to a --dns server from the container's own namespace, where
// nothing listens on the host's loopback, so the query never arrives and the client gets SERVFAIL.
// moby v2.0.0-beta.24 forwards from the host's namespace only the loopback nameservers it took from the
// host's resolv.conf (internal/resolvconf: HostLoopback = !NSOverride), never a --dns one. Either way:
// point --dns at the bridge gateway, where sidedns sees the container.
func TestDeploymentLoopbackDNS(t *testing.T) {
	requireDocker(t)
	sfx := randSuffix()
	n := createNetwork(t, "sidedns-test-"+sfx+"-l")
	// A loopback address of its own, so port 53 clashes with nothing else on 127.0.0.1.
	lo := fmt.Sprintf("127.53.%d.%d", 1+int(sfx[0])%200, 1+int(sfx[1])%200)
	rec := startRecorder(t, lo)
	c := runContainer(t, ContainerOpts{Name: "sidedns-test-" + sfx + "-l1", Network: n.Name, DNS: []string{lo}})

	r, err := digIn(t, c.Name, "", "example.test", "A")
	arrived := rec.Saw("example.test")
	maj, min := serverAPI(t)
	t.Logf("FACT loopback --dns %s on a user network (API %d.%d): example.test A -> %s err=%v; arrived at the host's %s %d time(s) %v (client %s)",
		lo, maj, min, r.Rcode, err, lo, len(arrived), arrived, c.IPs[n.Name])
	if maj == 1 && (min == 41 || min == 56) {
		if len(arrived) != 0 {
			t.Errorf("on API %d.%d the host's loopback --dns server was reached (%v); seen before: never", maj, min, arrived)
		}
	} else {
		t.Logf("API %d.%d: not pinned down; observed only", maj, min)
	}
}
