// Command fakedocker serves a fake Docker Engine API (dockerwatch/dockerfake)
// on a unix socket, populated with many containers, for benchmarks that need a
// large container table without a real daemon.
//
//	fakedocker -socket /tmp/d.sock -containers 10000 -networks 4
//
// It prints "ready" on stdout once it serves. With -churn it starts (and
// later stops) containers churn-000000, churn-000001, ... at a fixed rate;
// with -probe it also measures, for each start, the time until the name
// resolves through the DNS server at -probe, and prints the percentiles after
// -churn-count starts.
//
// For benchmarks that give other servers the same names as local data,
// -hosts FILE writes the populated names as a hosts file ("IP name", a line
// per address), and -check ip:port asks that DNS server for every populated
// name (A) and compares the answer with the name's addresses, then exits
// without serving: 0 when every name matched, 1 otherwise.
//
// -services N adds N compose services s0000, s0001, ... in project -project,
// each with one replica per entry of -weights (the replicas' sidedns.weight
// labels, 100,100,800 by default) and replica -canary tagged
// sidedns.tags=canary. Their names are the bare service name (a network
// alias, as compose sets it) and <service>.<project>.<domain>, each with
// every replica's address, and canary.<service>.<project>.<domain> with the
// canary's; -hosts writes those (not the replicas' container names), and
// -check with -check-weights also asks the first and the last service's
// weighted names -weight-queries times each and wants each replica first in
// its weight's share of the answers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/dockerwatch"
	"github.com/sidedns/sidedns/dockerwatch/dockerfake"
	"github.com/sidedns/sidedns/resolver"
)

func main() {
	logger := log.New(os.Stderr, "fakedocker: ", log.LstdFlags)
	if err := run(logger, os.Args[1:]); err != nil {
		logger.Fatal(err)
	}
}

type config struct {
	socket      string
	containers  int
	networks    int
	churn       float64
	churnCount  int
	churnLive   int
	probe       string
	domain      string
	probeWait   time.Duration
	syncWait    time.Duration
	exitOnChurn bool
	churnSignal bool
	hosts       string
	check       string

	services      int
	project       string
	weights       []string // sidedns.weight label per replica; "" for none
	canary        int      // 1-based replica tagged canary; 0 for none
	checkWeights  bool
	weightQueries int
}

func run(logger *log.Logger, args []string) error {
	var c config
	fs := flag.NewFlagSet("fakedocker", flag.ContinueOnError)
	fs.StringVar(&c.socket, "socket", "/tmp/fakedocker.sock", "unix socket to serve the Engine API on (DOCKER_HOST=unix://PATH)")
	fs.IntVar(&c.containers, "containers", 1000, "containers to start before serving (c0000, c0001, ...)")
	fs.IntVar(&c.networks, "networks", 4, "user networks the containers are spread over (net0 10.100.0.0/16, net1 10.101.0.0/16, ...)")
	fs.Float64Var(&c.churn, "churn", 0, "container starts per second after ready (0: none); each start past -churn-live stops the oldest churned one")
	fs.IntVar(&c.churnCount, "churn-count", 100, "starts to churn through (0: forever)")
	fs.IntVar(&c.churnLive, "churn-live", 20, "churned containers kept running at once")
	fs.StringVar(&c.probe, "probe", "", "loopback DNS server (ip:port) to time start -> resolvable against; needs -churn")
	fs.StringVar(&c.domain, "domain", "docker.", "zone of the probed names (<name>.<domain>) and of the services' names (<service>.<project>.<domain>)")
	fs.DurationVar(&c.probeWait, "probe-timeout", 2*time.Second, "give up on a name that does not resolve within this")
	fs.DurationVar(&c.syncWait, "sync-timeout", 2*time.Minute, "with -probe, how long to wait for c0000 to resolve before churning")
	fs.BoolVar(&c.churnSignal, "churn-on-signal", false, "wait for SIGUSR1 before churning (lets a script measure other things first)")
	fs.BoolVar(&c.exitOnChurn, "exit-after-churn", false, "exit after -churn-count starts and their probes")
	fs.StringVar(&c.hosts, "hosts", "", "write the populated names to this file as a hosts file (\"IP name\" lines, one per address) before serving")
	fs.StringVar(&c.check, "check", "", "do not serve: ask this loopback DNS server (ip:port) for every populated name (A), compare with the name's addresses and exit 1 on any mismatch")
	fs.IntVar(&c.services, "services", 0, "compose services to start besides the -containers (s0000, s0001, ...), each with a replica per -weights entry")
	fs.StringVar(&c.project, "project", "bench", "compose project of the -services")
	weights := fs.String("weights", "100,100,800", "sidedns.weight label of each replica of a service, comma-separated; an empty entry sets no label (weight 100)")
	fs.IntVar(&c.canary, "canary", 1, "replica (1-based) of each service labelled sidedns.tags=canary; 0 for none")
	fs.BoolVar(&c.checkWeights, "check-weights", false, "with -check: also want each replica of the first and last service first in its weight's share of the answers")
	fs.IntVar(&c.weightQueries, "weight-queries", 200, "with -check-weights: queries per weighted name")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("parse flags: %w", err)
	}
	if c.networks < 1 || c.networks > 150 || c.containers < 0 || c.services < 0 {
		return errors.New("need 1 to 150 networks and non-negative container and service counts")
	}
	if c.services > 0 {
		c.weights = strings.Split(*weights, ",")
		for _, w := range c.weights {
			// Weight 0 drains a replica out of the answers; the check does not model that.
			if n, err := strconv.Atoi(w); w != "" && (err != nil || n < 1 || n > 1000) {
				return fmt.Errorf("-weights entry %q: want empty or 1 to 1000", w)
			}
		}
		if c.canary < 0 || c.canary > len(c.weights) {
			return fmt.Errorf("-canary %d: want 0 to %d (the replica count)", c.canary, len(c.weights))
		}
		if err := dockerwatch.ValidName(c.project); err != nil || strings.Contains(c.project, ".") {
			return fmt.Errorf("-project %q: want one DNS label", c.project)
		}
	}
	if c.weightQueries < 1 {
		return errors.New("-weight-queries must be positive")
	}
	for _, a := range []string{c.probe, c.check} {
		if a == "" {
			continue
		}
		ap, err := netip.ParseAddrPort(a)
		if err != nil || !ap.Addr().IsLoopback() {
			return fmt.Errorf("DNS server address %q is not a loopback ip:port", a)
		}
	}
	if c.probe != "" {
		if c.churn <= 0 {
			return errors.New("-probe needs -churn")
		}
	}

	e := dockerfake.New(dockerfake.Options{Networks: c.networks, Now: time.Now})
	t0 := time.Now()
	recs, err := populate(e, c)
	if err != nil {
		return err
	}
	logger.Printf("populated %d containers and %d services of %d replicas over %d networks in %v",
		c.containers, c.services, len(c.weights), c.networks, time.Since(t0).Round(time.Millisecond))
	if c.check != "" {
		return check(logger, c.check, recs, c.checkWeights, c.weightQueries)
	}
	if c.hosts != "" {
		if err := writeHosts(c.hosts, recs); err != nil {
			return err
		}
	}

	if err := os.Remove(c.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	l, err := net.Listen("unix", c.socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.socket, err)
	}
	defer os.Remove(c.socket)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- e.Serve(l) }()
	fmt.Println("ready")

	churned := make(chan struct{})
	if c.churn > 0 {
		usr1 := make(chan os.Signal, 1)
		if c.churnSignal {
			signal.Notify(usr1, syscall.SIGUSR1)
		} else {
			usr1 <- syscall.SIGUSR1
		}
		go func() {
			defer close(churned)
			select {
			case <-ctx.Done():
				return
			case <-usr1:
			}
			churn(ctx, logger, e, c)
		}()
	}

	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-churned:
		if !c.exitOnChurn {
			<-ctx.Done()
		}
	}
	if err := e.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	logger.Printf("served %d requests", e.Requests())
	return nil
}

// hostRecord is one name and the IPv4 addresses it answers.
type hostRecord struct {
	name string
	ips  []netip.Addr
	// weights is each address's weight, for -check-weights; nil when the
	// name's answers are not to be checked for weights.
	weights []int
}

// populate starts c.containers plain containers and c.services compose
// services and returns the names they answer, in start order.
func populate(e *dockerfake.Engine, c config) ([]hostRecord, error) {
	ids := e.Populate(c.containers) // also creates net0, net1, ...
	recs := make([]hostRecord, 0, len(ids)+3*c.services)
	for _, id := range ids {
		name, ips, err := addresses(e, id)
		if err != nil {
			return nil, err
		}
		recs = append(recs, hostRecord{name: name, ips: ips})
	}
	domain := strings.Trim(c.domain, ".")
	for s := range c.services {
		svc := fmt.Sprintf("s%04d", s)
		// Compose puts a project's replicas on its network, with the service name as an alias.
		nw := fmt.Sprintf("net%d", s%c.networks)
		all := hostRecord{name: svc}
		var canary netip.Addr
		for r, w := range c.weights {
			labels := map[string]string{
				dockerwatch.LabelComposeProject:       c.project,
				dockerwatch.LabelComposeService:       svc,
				"com.docker.compose.container-number": strconv.Itoa(r + 1),
				"com.docker.compose.oneoff":           "False",
			}
			weight := resolver.DefaultWeight
			if w != "" {
				labels[dockerwatch.LabelWeight] = w
				weight, _ = strconv.Atoi(w) // checked in run
			}
			if r+1 == c.canary {
				labels[dockerwatch.LabelTags] = "canary"
			}
			id := e.StartContainer(dockerfake.ContainerSpec{
				Name:     fmt.Sprintf("%s-%s-%d", c.project, svc, r+1),
				Networks: map[string]dockerfake.Endpoint{nw: {Aliases: []string{svc}}},
				Labels:   labels,
			})
			_, ips, err := addresses(e, id)
			if err != nil {
				return nil, err
			}
			all.ips = append(all.ips, ips[0])
			all.weights = append(all.weights, weight)
			if r+1 == c.canary {
				canary = ips[0]
			}
		}
		if len(all.ips) < 2 {
			all.weights = nil // one replica: nothing to share
		}
		fqdn := all
		fqdn.name = svc + "." + c.project + "." + domain
		recs = append(recs, all, fqdn)
		if canary.IsValid() {
			recs = append(recs, hostRecord{name: "canary." + fqdn.name, ips: []netip.Addr{canary}})
		}
	}
	return recs, nil
}

// addresses returns a container's name and its (only) IPv4 address.
func addresses(e *dockerfake.Engine, id string) (string, []netip.Addr, error) {
	resp, ok := e.Inspect(id)
	if !ok {
		return "", nil, fmt.Errorf("inspect container %s: not found", id)
	}
	var ips []netip.Addr
	for _, es := range resp.NetworkSettings.Networks {
		if a, err := netip.ParseAddr(es.IPAddress); err == nil {
			ips = append(ips, a)
		}
	}
	name := strings.TrimPrefix(resp.Name, "/")
	// One network per container keeps one address per replica, the same for every server.
	if len(ips) != 1 {
		return "", nil, fmt.Errorf("container %s has %d IPv4 addresses, want 1", name, len(ips))
	}
	return name, ips, nil
}

// writeHosts writes recs in hosts-file format, a line per name and address,
// atomically so a reader never sees half of it.
func writeHosts(path string, recs []hostRecord) error {
	var b strings.Builder
	for _, r := range recs {
		for _, ip := range r.ips {
			fmt.Fprintf(&b, "%s %s\n", ip, r.name)
		}
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write hosts file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename hosts file: %w", err)
	}
	return nil
}

// check asks server for every name in recs, type A, and wants NOERROR with
// exactly the name's addresses, in any order. It reports the first few
// mismatches. With weights, it then checks the weighted names of the first
// and the last service with checkWeights.
func check(logger *log.Logger, server string, recs []hostRecord, weights bool, queries int) error {
	cl := &dns.Client{Net: "udp", Timeout: time.Second}
	bad := 0
	var weighted []hostRecord
	for _, r := range recs {
		as, got := ask(cl, server, r.name)
		want := addrStrings(r.ips)
		slices.Sort(want)
		if got == "" {
			sorted := slices.Sorted(slices.Values(as))
			if slices.Equal(sorted, want) {
				if r.weights != nil {
					weighted = append(weighted, r)
				}
				continue
			}
			got = strings.Join(as, ",")
		}
		bad++
		if bad <= 5 {
			logger.Printf("check %s: %s A: got %s, want %s", server, r.name, got, strings.Join(want, ","))
		}
	}
	fmt.Printf("check %s: %d/%d names answered with the right addresses\n", server, len(recs)-bad, len(recs))
	if bad > 0 {
		return fmt.Errorf("check %s: %d of %d names wrong", server, bad, len(recs))
	}
	if !weights {
		return nil
	}
	if len(weighted) == 0 {
		return fmt.Errorf("check %s: no weighted names to check (-check-weights needs -services with 2+ replicas)", server)
	}
	// The first and the last service's names: enough to see the weights,
	// few enough to take a moment.
	sample := weighted[:min(2, len(weighted))]
	if len(weighted) > 2 {
		sample = append(sample, weighted[max(2, len(weighted)-2):]...)
	}
	for _, r := range sample {
		if err := checkWeights(cl, server, r, queries); err != nil {
			return err
		}
	}
	return nil
}

// weightTolerance is how far a replica's share of first places may be from
// its weight's share: sidedns's cursor per name makes the shares exact over
// whole cycles, and the slack covers a partial cycle and a lost reply.
const weightTolerance = 0.05

// checkWeights asks r.name queries times and wants each address first in
// its weight's share of the answers, within weightTolerance.
func checkWeights(cl *dns.Client, server string, r hostRecord, queries int) error {
	first := map[string]int{}
	answered := 0
	for range queries {
		as, failed := ask(cl, server, r.name)
		if failed != "" || len(as) == 0 {
			continue
		}
		first[as[0]]++
		answered++
	}
	if answered < queries/2 {
		return fmt.Errorf("check weights %s: %s: only %d of %d queries answered", server, r.name, answered, queries)
	}
	sum := 0
	for _, w := range r.weights {
		sum += w
	}
	var (
		parts []string
		off   bool
	)
	for i, ip := range r.ips {
		got := float64(first[ip.String()]) / float64(answered)
		want := float64(r.weights[i]) / float64(sum)
		parts = append(parts, fmt.Sprintf("%s %.0f%% (weight %d: %.0f%%)", ip, 100*got, r.weights[i], 100*want))
		off = off || got < want-weightTolerance || got > want+weightTolerance
	}
	fmt.Printf("weights %s: %s first over %d answers: %s\n", server, r.name, answered, strings.Join(parts, ", "))
	if off {
		return fmt.Errorf("check weights %s: %s: first places do not follow the weights", server, r.name)
	}
	return nil
}

// ask sends name A to server (with two retries: loopback UDP under load
// may drop one) and returns the A addresses in answer order, or why there
// are none.
func ask(cl *dns.Client, server, name string) (addrs []string, failed string) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	var (
		resp *dns.Msg
		err  error
	)
	for try := 0; try < 3; try++ {
		if resp, _, err = cl.Exchange(m, server); err == nil {
			break
		}
	}
	switch {
	case err != nil:
		return nil, err.Error()
	case resp.Rcode != dns.RcodeSuccess:
		return nil, dns.RcodeToString[resp.Rcode]
	}
	for _, rr := range resp.Answer {
		if a, ok := rr.(*dns.A); ok {
			addrs = append(addrs, a.A.String())
		}
	}
	if len(addrs) == 0 {
		return nil, "no answer"
	}
	return addrs, ""
}

func addrStrings(ips []netip.Addr) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

// churn starts containers at c.churn per second and, with -probe, times each
// from StartContainer (which emits the start event) to the first A answer.
func churn(ctx context.Context, logger *log.Logger, e *dockerfake.Engine, c config) {
	if c.probe != "" {
		// Wait for the resolver under test to finish its first sync, so the
		// measurement covers event handling only.
		ready := "c0000"
		if c.containers == 0 {
			ready = "churn-ready"
			e.StartContainer(dockerfake.ContainerSpec{Name: ready, Networks: map[string]dockerfake.Endpoint{"net0": {}}})
		}
		t0 := time.Now()
		if _, ok := probe(ctx, c.probe, dns.Fqdn(ready+"."+c.domain), t0, c.syncWait); !ok {
			logger.Printf("%s did not resolve at %s within %v; churning anyway", ready, c.probe, c.syncWait)
		} else {
			logger.Printf("%s resolves at %s after %v; churning", ready, c.probe, time.Since(t0).Round(time.Millisecond))
		}
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / c.churn))
	defer tick.Stop()
	var (
		live    []string
		wg      sync.WaitGroup
		mu      sync.Mutex
		lat     []time.Duration
		missing int
	)
	for i := 0; c.churnCount == 0 || i < c.churnCount; i++ {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-tick.C:
		}
		name := fmt.Sprintf("churn-%06d", i)
		start := time.Now()
		id := e.StartContainer(dockerfake.ContainerSpec{
			Name:     name,
			Networks: map[string]dockerfake.Endpoint{fmt.Sprintf("net%d", i%c.networks): {}},
		})
		live = append(live, id)
		if len(live) > c.churnLive {
			e.StopContainer(live[0])
			live = live[1:]
		}
		if c.probe == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, ok := probe(ctx, c.probe, dns.Fqdn(name+"."+c.domain), start, c.probeWait)
			mu.Lock()
			defer mu.Unlock()
			if ok {
				lat = append(lat, d)
			} else {
				missing++
			}
		}()
	}
	wg.Wait()
	if c.probe != "" {
		fmt.Println(summary(lat, missing))
	}
	logger.Printf("churned %d containers", c.churnCount)
}

// probe asks for name every millisecond until an A answer comes back and
// returns the time since start.
func probe(ctx context.Context, server, name string, start time.Time, limit time.Duration) (time.Duration, bool) {
	cl := &dns.Client{Net: "udp", Timeout: 250 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	for time.Since(start) < limit && ctx.Err() == nil {
		r, _, err := cl.ExchangeContext(ctx, m, server)
		if err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0 {
			return time.Since(start), true
		}
		time.Sleep(time.Millisecond)
	}
	return 0, false
}

// summary formats the latency percentiles on one line.
func summary(lat []time.Duration, missing int) string {
	if len(lat) == 0 {
		return fmt.Sprintf("start->resolvable: n=0 unresolved=%d", missing)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		i := int(p*float64(len(lat))+0.999999) - 1 // nearest rank
		return lat[max(0, min(i, len(lat)-1))]
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }
	return fmt.Sprintf("start->resolvable: n=%d unresolved=%d p50=%s p90=%s p99=%s max=%s",
		len(lat), missing, ms(pct(0.50)), ms(pct(0.90)), ms(pct(0.99)), ms(lat[len(lat)-1]))
}
