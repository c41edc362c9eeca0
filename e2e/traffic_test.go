package e2e

import (
	"fmt"
	"math"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// runSidedns starts the binary on the host with a control socket and
// returns it with a function that stops it (SIGTERM) and waits: the
// harness's processes live until the test ends, and a restart needs the
// first one gone.
func runSidedns(t *testing.T, upstream *FakeDNS, socket string) (*Sidedns, func()) {
	t.Helper()
	bin := buildSidedns(t)
	s := &Sidedns{
		DNSAddr:  net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, "127.0.0.1"))),
		HTTPAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, "127.0.0.1"))),
		log:      &syncBuffer{},
	}
	// No rate limit: the test asks 10,000 times from one address.
	cmd := exec.Command(bin, "--listen", s.DNSAddr, "--http", s.HTTPAddr, "--upstream", upstream.Addr,
		"--control-socket", socket, "--rate-limit", "0")
	cmd.Stdout, cmd.Stderr = s.log, s.log
	cmd.Env = environWithout("SIDEDNS_")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sidedns: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("sidedns log:\n%s", s.Log())
		}
	})
	if _, ok := waitFor(20*time.Second, func() bool { return httpOK(s.HTTPAddr, "/readyz") }); !ok {
		t.Fatalf("sidedns not ready after 20s\n%s", s.Log())
	}
	return s, stop
}

// sidednsCLI runs a control subcommand of the binary.
func sidednsCLI(t *testing.T, socket string, args ...string) string {
	t.Helper()
	cmd := exec.Command(buildSidedns(t), append([]string{args[0], "--control-socket", socket}, args[1:]...)...)
	cmd.Env = environWithout("SIDEDNS_")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sidedns %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestTrafficControl: on the live engine, weights from labels set how often
// each replica comes first, a canary tag answers only its replicas, and a
// drain takes a replica out of answers at once and outlives a restart.
func TestTrafficControl(t *testing.T) {
	requireDocker(t)
	sfx := randSuffix()
	project := "tc" + sfx
	n := createNetwork(t, "sidedns-test-"+sfx+"-traffic")
	up := startFakeUpstream(t)
	socket := filepath.Join(t.TempDir(), "run", "control.sock")
	sd, stop := runSidedns(t, up, socket)

	replica := func(i int, labels map[string]string) Container {
		name := fmt.Sprintf("%s-web-%d", project, i)
		l := map[string]string{"com.docker.compose.project": project, "com.docker.compose.service": "web"}
		for k, v := range labels {
			l[k] = v
		}
		// The replicas never query: their resolver is their own loopback.
		return runContainer(t, ContainerOpts{Name: name, Network: n.Name, DNS: []string{"127.0.0.1"},
			Aliases: []string{name, "web"}, Labels: l})
	}
	r1 := replica(1, map[string]string{"sidedns.weight": "100"})
	r2 := replica(2, map[string]string{"sidedns.weight": "100"})
	r3 := replica(3, map[string]string{"sidedns.weight": "800", "sidedns.tags": "canary"})
	waitVisible(t, sd, n.Name, r1, r2, r3)
	ip := func(c Container) string { return c.IPs[n.Name].String() }
	name := "web." + project + ".docker"

	// Weights: 10,000 answers, first address against 10/10/80 percent.
	const total = 10000
	first := map[string]int{}
	c := &dns.Client{Timeout: time.Second}
	m := new(dns.Msg).SetQuestion(dns.Fqdn(name), dns.TypeA)
	for range total {
		r, _, err := c.Exchange(m, sd.DNSAddr)
		if err != nil {
			t.Fatalf("query %s: %v", name, err)
		}
		addrs := answerAddrs(r)
		if len(addrs) != 3 {
			t.Fatalf("%s = %v, want three addresses", name, addrs)
		}
		first[addrs[0]]++
	}
	for _, w := range []struct {
		c     Container
		share float64
	}{{r1, 0.1}, {r2, 0.1}, {r3, 0.8}} {
		got := float64(first[ip(w.c)]) / total
		t.Logf("%s (%s) first in %.2f%% of %d answers, weight share %.0f%%", w.c.Name, ip(w.c), 100*got, total, 100*w.share)
		if math.Abs(got-w.share) > 0.02 {
			t.Errorf("%s first in %.2f%% of answers, want %.0f%% ± 2 points", w.c.Name, 100*got, 100*w.share)
		}
	}

	// The canary tag answers only its replica.
	for range 3 {
		r, err := query(t, sd.DNSAddr, "canary."+name, dns.TypeA)
		if err != nil || !slices.Equal(answerAddrs(r), []string{ip(r3)}) {
			t.Fatalf("canary.%s = %v, %v; want only %s", name, answerAddrs(r), err, ip(r3))
		}
	}

	// Drain: the replica is gone from answers when the command returns.
	start := time.Now()
	out := sidednsCLI(t, socket, "drain", r3.Name)
	returned := time.Since(start)
	gone := func() bool {
		for range 3 { // a full rotation
			r, err := query(t, sd.DNSAddr, name, dns.TypeA)
			if err != nil || slices.Contains(answerAddrs(r), ip(r3)) || len(answerAddrs(r)) != 2 {
				return false
			}
		}
		return true
	}
	if !gone() {
		// Not yet at the first look: say how long it does take.
		if _, ok := waitFor(5*time.Second, gone); !ok {
			t.Fatalf("%s still answered 5 s after %q", r3.Name, out)
		}
		t.Errorf("%s still answered after the drain command returned", r3.Name)
	}
	t.Logf("drain: %q; the command (a process start and one call) took %v, and the next queries left the replica out "+
		"(%v after the command started)", strings.TrimSpace(out), returned, time.Since(start))
	if ls := sidednsCLI(t, socket, "ls"); !strings.Contains(ls, "drained*") {
		t.Errorf("ls does not show the drain:\n%s", ls)
	}

	// The drain survives a restart.
	stop()
	sd, _ = runSidedns(t, up, socket)
	waitVisible(t, sd, n.Name, r1, r2)
	if !gone() {
		r, _ := query(t, sd.DNSAddr, name, dns.TypeA)
		t.Errorf("after a restart %s = %v; %s must stay drained", name, answerAddrs(r), r3.Name)
	}
	// With the canary drained, its tag still answers it: nothing else is left.
	if r, err := query(t, sd.DNSAddr, "canary."+name, dns.TypeA); err != nil || !slices.Equal(answerAddrs(r), []string{ip(r3)}) {
		t.Errorf("canary.%s after the drain = %v, %v", name, answerAddrs(r), err)
	}
}
