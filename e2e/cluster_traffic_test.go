package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/cluster/etcdtest"
)

// TestClusterTrafficControl: weights, tags and drains travel with the
// records. Host A runs three replicas on a network that spans hosts; host C
// (no Docker of its own) answers them with A's weights and tags, follows a
// drain made on A, wakes its Watch streams, lists the replicas with their
// host, and refuses to drain them itself, naming A.
func TestClusterTrafficControl(t *testing.T) {
	requireDocker(t)
	ec := etcdtest.Start(t, 1)
	up := startFakeUpstream(t)
	dir := t.TempDir()
	sfx := randSuffix()
	project := "ctc" + sfx
	n := createNetwork(t, "sidedns-test-"+sfx+"-ctc", "--label", "sidedns.cluster=true")

	etcd := strings.Join(ec.Endpoints(), ",")
	sockA, sockC := filepath.Join(dir, "a", "control.sock"), filepath.Join(dir, "c", "control.sock")
	launchClusterSidedns(t, up, true, "--cluster-etcd", etcd, "--advertise-addr", "127.0.0.1",
		"--control-socket", sockA)
	c := launchClusterSidedns(t, up, false, "--cluster-etcd", etcd, "--advertise-addr", "127.0.0.3",
		"--control-socket", sockC, "--rate-limit", "0")

	replica := func(i int, labels map[string]string) Container {
		name := fmt.Sprintf("%s-web-%d", project, i)
		l := map[string]string{"com.docker.compose.project": project, "com.docker.compose.service": "web"}
		for k, v := range labels {
			l[k] = v
		}
		return runContainer(t, ContainerOpts{Name: name, Network: n.Name, DNS: []string{"127.0.0.1"}, Labels: l})
	}
	r1 := replica(1, map[string]string{"sidedns.weight": "100"})
	r2 := replica(2, map[string]string{"sidedns.weight": "100"})
	r3 := replica(3, map[string]string{"sidedns.weight": "800", "sidedns.tags": "canary"})
	ip := func(c Container) string { return c.IPs[n.Name].String() }
	all := []string{ip(r1), ip(r2), ip(r3)}
	slices.Sort(all)
	name := "web." + project + ".docker"
	c.waitAnswers(t, 10*time.Second, name, dns.TypeA, all)

	// A's weights hold on C: 1,000 answers, first address against 10/10/80.
	const total = 1000
	first := map[string]int{}
	for range total {
		r, err := query(t, c.DNSAddr, name, dns.TypeA)
		if err != nil || len(answerAddrs(r)) != 3 {
			t.Fatalf("%s on C: %v, %v", name, answerAddrs(r), err)
		}
		first[answerAddrs(r)[0]]++
	}
	for _, w := range []struct {
		c     Container
		share float64
	}{{r1, 0.1}, {r2, 0.1}, {r3, 0.8}} {
		got := float64(first[ip(w.c)]) / total
		t.Logf("on C, %s first in %.1f%% of %d answers (weight share %.0f%%)", w.c.Name, 100*got, total, 100*w.share)
		if math.Abs(got-w.share) > 0.02 {
			t.Errorf("on C, %s first in %.1f%% of answers, want %.0f%% ± 2 points", w.c.Name, 100*got, 100*w.share)
		}
	}
	// A's tag holds on C.
	c.waitAnswers(t, 0, "canary."+name, dns.TypeA, []string{ip(r3)})

	// C's Watch stream of the name, read line by line.
	watch := exec.Command(buildSidedns(t), "watch", "--control-socket", sockC, name)
	watch.Env = environWithout("SIDEDNS_")
	stdout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		watch.Process.Signal(syscall.SIGINT)
		watch.Wait()
	})
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	nextLine := func(within time.Duration) string {
		select {
		case l := <-lines:
			return l
		case <-time.After(within):
			return ""
		}
	}
	if l := nextLine(5 * time.Second); !strings.Contains(l, ip(r3)) {
		t.Fatalf("C's watch began with %q, want the three replicas", l)
	}

	// Drain on A: C leaves the replica out, and its Watch says so.
	start := time.Now()
	out := sidednsCLI(t, sockA, "drain", r3.Name)
	took := c.waitAnswers(t, 5*time.Second, name, dns.TypeA, []string{ip(r1), ip(r2)})
	t.Logf("drain on A (%q): C left the replica out %v after the command returned (%v after it started)",
		strings.TrimSpace(out), took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("C took %v to follow A's drain, want within 1s", took)
	}
	if l := nextLine(5 * time.Second); l == "" || strings.Contains(l, ip(r3)) {
		t.Errorf("C's watch after A's drain printed %q, want the set without %s", l, ip(r3))
	}
	// Nothing else is tagged canary, so the tag still answers the drained replica.
	c.waitAnswers(t, 0, "canary."+name, dns.TypeA, []string{ip(r3)})

	// C lists A's replicas with their host and the drain, and /api/v1/records marks it.
	ls := sidednsCLI(t, sockC, "ls")
	if !lineWith(ls, r3.Name, "127.0.0.1", "drained") || !lineWith(ls, r1.Name, "127.0.0.1", "100") {
		t.Errorf("ls on C:\n%s", ls)
	}
	if d, ok := recordDrained(t, c, r3.Name); !ok || !d {
		t.Errorf("C's /api/v1/records: %s drained=%v (listed %v)", r3.Name, d, ok)
	}
	// C does not steer A's replicas: the error names the host to do it on.
	cmd := exec.Command(buildSidedns(t), "drain", "--control-socket", sockC, r1.Name)
	cmd.Env = environWithout("SIDEDNS_")
	if msg, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(msg), "runs on host 127.0.0.1") {
		t.Errorf("drain of A's replica on C: %v %q, want a refusal naming host 127.0.0.1", err, msg)
	}

	// Undrain on A: C answers all three again.
	sidednsCLI(t, sockA, "undrain", r3.Name)
	c.waitAnswers(t, 5*time.Second, name, dns.TypeA, all)
	if _, ok := waitFor(5*time.Second, func() bool { d, ok := recordDrained(t, c, r3.Name); return ok && !d }); !ok {
		t.Errorf("C's /api/v1/records still marks %s drained after the undrain", r3.Name)
	}
}

// lineWith reports whether one line of text holds every one of words.
func lineWith(text string, words ...string) bool {
	for _, l := range strings.Split(text, "\n") {
		if !slices.ContainsFunc(words, func(w string) bool { return !strings.Contains(l, w) }) {
			return true
		}
	}
	return false
}

// recordDrained reads p's /api/v1/records: whether the container named
// name is drained, and whether it is listed at all.
func recordDrained(t *testing.T, p *clusterProc, name string) (drained, listed bool) {
	var recs struct {
		Containers []struct {
			Name    string `json:"name"`
			Drained bool   `json:"drained"`
		} `json:"containers"`
	}
	if err := json.Unmarshal([]byte(httpGet(t, "http://"+p.HTTPAddr+"/api/v1/records")), &recs); err != nil {
		return false, false
	}
	for _, c := range recs.Containers {
		if c.Name == name {
			return c.Drained, true
		}
	}
	return false, false
}
