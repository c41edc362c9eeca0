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
// -hosts FILE writes the populated containers as a hosts file ("IP name", one
// a line), and -check ip:port asks that DNS server for every populated name
// (bare, A) and compares the answer with the container's address, then exits
// without serving: 0 when every name matched, 1 otherwise.
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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/dockerwatch/dockerfake"
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
	fs.StringVar(&c.domain, "domain", "docker.", "zone the probed names are in (<name>.<domain>)")
	fs.DurationVar(&c.probeWait, "probe-timeout", 2*time.Second, "give up on a name that does not resolve within this")
	fs.DurationVar(&c.syncWait, "sync-timeout", 2*time.Minute, "with -probe, how long to wait for c0000 to resolve before churning")
	fs.BoolVar(&c.churnSignal, "churn-on-signal", false, "wait for SIGUSR1 before churning (lets a script measure other things first)")
	fs.BoolVar(&c.exitOnChurn, "exit-after-churn", false, "exit after -churn-count starts and their probes")
	fs.StringVar(&c.hosts, "hosts", "", "write the populated containers to this file as a hosts file (\"IP name\" lines) before serving")
	fs.StringVar(&c.check, "check", "", "do not serve: ask this loopback DNS server (ip:port) for every populated name (bare, A), compare with the containers' addresses and exit 1 on any mismatch")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("parse flags: %w", err)
	}
	if c.networks < 1 || c.networks > 150 || c.containers < 0 {
		return errors.New("need 1 to 150 networks and a non-negative container count")
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
	ids := e.Populate(c.containers)
	logger.Printf("populated %d containers over %d networks in %v", c.containers, c.networks, time.Since(t0).Round(time.Millisecond))
	recs, err := hostRecords(e, ids)
	if err != nil {
		return err
	}
	if c.check != "" {
		return check(logger, c.check, recs)
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

// hostRecord is one container's name and its IPv4 address.
type hostRecord struct {
	name string
	ip   netip.Addr
}

// hostRecords lists the name and the (only) IPv4 address of each container.
func hostRecords(e *dockerfake.Engine, ids []string) ([]hostRecord, error) {
	recs := make([]hostRecord, 0, len(ids))
	for _, id := range ids {
		resp, ok := e.Inspect(id)
		if !ok {
			return nil, fmt.Errorf("inspect container %s: not found", id)
		}
		var ips []netip.Addr
		for _, es := range resp.NetworkSettings.Networks {
			if a, err := netip.ParseAddr(es.IPAddress); err == nil {
				ips = append(ips, a)
			}
		}
		// One network per container keeps one answer per name, the same for every server.
		if len(ips) != 1 {
			return nil, fmt.Errorf("container %s has %d IPv4 addresses, want 1", resp.Name, len(ips))
		}
		recs = append(recs, hostRecord{name: strings.TrimPrefix(resp.Name, "/"), ip: ips[0]})
	}
	return recs, nil
}

// writeHosts writes recs in hosts-file format, atomically so a reader never sees half of it.
func writeHosts(path string, recs []hostRecord) error {
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, "%s %s\n", r.ip, r.name)
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

// check asks server for every name in recs, bare, type A, and wants NOERROR
// with exactly the container's address. It reports the first few mismatches.
func check(logger *log.Logger, server string, recs []hostRecord) error {
	cl := &dns.Client{Net: "udp", Timeout: time.Second}
	bad := 0
	for _, r := range recs {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(r.name), dns.TypeA)
		var (
			resp *dns.Msg
			err  error
		)
		for try := 0; try < 3; try++ { // loopback UDP under load may drop one
			if resp, _, err = cl.Exchange(m, server); err == nil {
				break
			}
		}
		got := "no answer"
		switch {
		case err != nil:
			got = err.Error()
		case resp.Rcode != dns.RcodeSuccess:
			got = dns.RcodeToString[resp.Rcode]
		default:
			var as []string
			for _, rr := range resp.Answer {
				if a, ok := rr.(*dns.A); ok {
					as = append(as, a.A.String())
				}
			}
			if len(as) == 1 && as[0] == r.ip.String() {
				continue
			}
			if len(as) > 0 {
				got = strings.Join(as, ",")
			}
		}
		bad++
		if bad <= 5 {
			logger.Printf("check %s: %s A: got %s, want %s", server, r.name, got, r.ip)
		}
	}
	fmt.Printf("check %s: %d/%d names answered with the right address\n", server, len(recs)-bad, len(recs))
	if bad > 0 {
		return fmt.Errorf("check %s: %d of %d names wrong", server, bad, len(recs))
	}
	return nil
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
