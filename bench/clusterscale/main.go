// Command clusterscale measures sidedns with a large cluster (bench/cluster-scale.sh
// runs it): it writes -hosts simulated hosts of -records records each into
// etcd, each host on its own kept-alive lease, starts a fresh sidedns against
// that etcd, and reports
//
//   - the time until the new instance holds every record (from process start,
//     read from its sidedns_cluster_remote_records metric) and its RSS then;
//   - the time from a change on one host to the new answer on sidedns, p50
//     and p99 over -changes changes, for a host that is a real cluster.Node
//     (its Publish, debounce included) and for a raw etcd put.
//
// Everything runs on loopback.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sidedns/sidedns/cluster"
)

func main() {
	var (
		etcd    = flag.String("etcd", "", "comma-separated etcd client URLs")
		bin     = flag.String("sidedns", "", "sidedns binary")
		hosts   = flag.Int("hosts", 50, "simulated hosts")
		records = flag.Int("records", 200, "records per host")
		changes = flag.Int("changes", 100, "changes timed per path")
		port    = flag.Int("port", 15550, "sidedns DNS port; HTTP takes the next one")
	)
	flag.Parse()
	if err := run(strings.Split(*etcd, ","), *bin, *hosts, *records, *changes, *port); err != nil {
		fmt.Fprintln(os.Stderr, "clusterscale:", err)
		os.Exit(1)
	}
}

func hostAddr(h int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, 1, byte(h / 250), byte(h%250 + 1)})
}

func record(h, i, gen int) cluster.Record {
	return cluster.Record{
		Name: fmt.Sprintf("h%d-r%d", h, i), Project: fmt.Sprintf("p%d", h), Service: fmt.Sprintf("s%d", i%20),
		Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, byte(h), byte(gen % 256), byte(i%250 + 1)})},
		Ports:     []cluster.Port{{Name: "8080", Port: 8080, Proto: "tcp"}},
	}
}

func run(endpoints []string, bin string, hosts, records, changes, port int) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer cli.Close()

	// Host 0 is a real node; the others are written directly, each on its
	// own lease, in transactions of 100 puts.
	node, err := cluster.New(cluster.Config{Endpoints: endpoints, LeaseTTL: 15 * time.Second,
		Advertise: hostAddr(0), Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	go node.Run(ctx)
	recs0 := make([]cluster.Record, records)
	for i := range recs0 {
		recs0[i] = record(0, i, 0)
	}
	node.Publish(slices.Clone(recs0))
	start := time.Now()
	leases := make([]clientv3.LeaseID, hosts)
	for h := 1; h < hosts; h++ {
		l, err := cli.Grant(ctx, 60)
		if err != nil {
			return err
		}
		leases[h] = l.ID
		ka, err := cli.KeepAlive(ctx, l.ID)
		if err != nil {
			return err
		}
		go func() {
			for range ka {
			}
		}()
		var ops []clientv3.Op
		for i := range records {
			b, _ := cluster.EncodeRecord(record(h, i, 0))
			ops = append(ops, clientv3.OpPut(cluster.RecordKey(cluster.DefaultPrefix, hostAddr(h).String(), record(h, i, 0).Name), string(b), clientv3.WithLease(l.ID)))
			if len(ops) == 100 {
				if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
					return err
				}
				ops = ops[:0]
			}
		}
		if len(ops) > 0 {
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				return err
			}
		}
	}
	total := hosts * records
	fmt.Printf("wrote %d hosts x %d records = %d records in %v\n", hosts, records, total, time.Since(start).Round(time.Millisecond))

	dnsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	httpAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port+1))
	cmd := exec.CommandContext(ctx, bin, "--listen", dnsAddr, "--http", httpAddr, "--upstream", "127.0.0.1:9",
		"--cache-size", "0", "--log-level", "warn", "--cluster-etcd", strings.Join(endpoints, ","), "--advertise-addr", "127.0.0.99")
	cmd.Env = append(os.Environ(), "DOCKER_HOST=unix:///nonexistent-clusterscale.sock")
	cmd.Stderr = os.Stderr
	began := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
	for {
		if v, err := metric(httpAddr, "sidedns_cluster_remote_records"); err == nil && int(v) == total {
			break
		}
		if time.Since(began) > 2*time.Minute {
			return errors.New("sidedns did not load every record within 2 minutes")
		}
		time.Sleep(5 * time.Millisecond)
	}
	loaded := time.Since(began)
	fmt.Printf("new instance holds all %d records %v after process start; RSS %s\n", total, loaded.Round(time.Millisecond), rss(cmd.Process.Pid))

	// Changes through the real node: Publish -> debounce -> txn -> watch ->
	// table -> answer.
	var viaNode, viaPut []time.Duration
	for gen := 1; gen <= changes; gen++ {
		i := gen % records
		recs0[i] = record(0, i, gen)
		t0 := time.Now()
		node.Publish(slices.Clone(recs0))
		d, err := waitAnswer(dnsAddr, recs0[i].Name+".docker.", recs0[i].Addresses[0], t0)
		if err != nil {
			return err
		}
		viaNode = append(viaNode, d)
	}
	cpu0 := cpuTime(cmd.Process.Pid)
	for gen := 1; gen <= changes; gen++ {
		h, i := 1+gen%(hosts-1), gen%records
		r := record(h, i, gen)
		b, _ := cluster.EncodeRecord(r)
		t0 := time.Now()
		if _, err := cli.Put(ctx, cluster.RecordKey(cluster.DefaultPrefix, hostAddr(h).String(), r.Name), string(b), clientv3.WithLease(leases[h])); err != nil {
			return err
		}
		d, err := waitAnswer(dnsAddr, r.Name+".docker.", r.Addresses[0], t0)
		if err != nil {
			return err
		}
		viaPut = append(viaPut, d)
	}
	fmt.Printf("change -> answer via a cluster node (100 ms debounce included), %d changes: p50 %v p99 %v\n", changes, pct(viaNode, 50), pct(viaNode, 99))
	fmt.Printf("change -> answer via a raw etcd put, %d changes: p50 %v p99 %v; sidedns CPU per change %v\n",
		changes, pct(viaPut, 50), pct(viaPut, 99), ((cpuTime(cmd.Process.Pid) - cpu0) / time.Duration(changes)).Round(100*time.Microsecond))
	fmt.Printf("RSS after the changes: %s\n", rss(cmd.Process.Pid))
	for h := 1; h < hosts; h++ {
		cli.Revoke(context.Background(), leases[h])
	}
	return nil
}

// waitAnswer polls sidedns every millisecond until name answers want.
func waitAnswer(addr, name string, want netip.Addr, since time.Time) (time.Duration, error) {
	c := &dns.Client{Timeout: time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	for time.Since(since) < 30*time.Second {
		r, _, err := c.Exchange(m, addr)
		if err == nil {
			for _, rr := range r.Answer {
				if a, ok := rr.(*dns.A); ok && a.A.String() == want.String() {
					return time.Since(since), nil
				}
			}
		}
		time.Sleep(time.Millisecond)
	}
	return 0, fmt.Errorf("%s never answered %v", name, want)
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)].Round(100 * time.Microsecond)
}

func metric(addr, name string) (float64, error) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == name {
			return strconv.ParseFloat(f[1], 64)
		}
	}
	return 0, fmt.Errorf("no %s", name)
}

func rss(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// cpuTime is the user plus system CPU time of process pid so far.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses: utime and
	// stime are the 12th and 13th of them, in clock ticks (100 a second).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}
