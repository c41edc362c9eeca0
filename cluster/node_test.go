package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sidedns/sidedns/cluster/etcdtest"
	"github.com/sidedns/sidedns/resolver"
)

const (
	testTTL   = 2 * time.Second // etcd's floor is about 1.5 s
	testStale = 4 * time.Second
)

// testNode is a running Node and the last layer it handed out.
type testNode struct {
	*Node
	mu    sync.Mutex
	layer []resolver.Container
	stop  context.CancelFunc
	done  chan struct{}
}

func startNode(t *testing.T, endpoints []string, adv string) *testNode {
	t.Helper()
	return startNodeWith(t, endpoints, adv, zaptest.NewLogger(t).Named(adv))
}

func startNodeWith(t *testing.T, endpoints []string, adv string, log *zap.Logger, opts ...func(*Config)) *testNode {
	t.Helper()
	tn := &testNode{done: make(chan struct{})}
	cfg := Config{
		Endpoints: endpoints, LeaseTTL: testTTL, StaleWindow: testStale,
		Advertise: netip.MustParseAddr(adv), Version: "test",
		Logger: log,
		OnRemote: func(cs []resolver.Container) {
			tn.mu.Lock()
			tn.layer = cs
			tn.mu.Unlock()
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tn.Node = n
	ctx, cancel := context.WithCancel(context.Background())
	tn.stop = func() { cancel(); <-tn.done }
	go func() { n.Run(ctx); close(tn.done) }()
	t.Cleanup(tn.stop)
	return tn
}

// view renders the layer as sorted "host name address" lines.
func (tn *testNode) view() []string {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	var out []string
	for _, c := range tn.layer {
		for _, ep := range c.Endpoints {
			out = append(out, c.Origin+" "+c.Name+" "+ep.IPv4.String())
		}
	}
	slices.Sort(out)
	return out
}

func rec(name, addr string) Record {
	return Record{Name: name, Addresses: []netip.Addr{netip.MustParseAddr(addr)}}
}

func lines(host string, recs []Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, host+" "+r.Name+" "+r.Addresses[0].String())
	}
	return out
}

func sorted(parts ...[]string) []string {
	out := slices.Concat(parts...)
	slices.Sort(out)
	if out == nil {
		out = []string{}
	}
	return out
}

// waitView waits until tn's view equals want.
func waitView(t *testing.T, tn *testNode, within time.Duration, want []string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := tn.view()
		if got == nil {
			got = []string{}
		}
		if slices.Equal(got, want) {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("view after %v:\n  %v\nwant\n  %v", within, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func rawClient(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func TestCluster(t *testing.T) {
	ec := etcdtest.Start(t, 3)
	eps := ec.Endpoints()

	t.Run("a burst of 50 changes is one transaction", func(t *testing.T) {
		cli := rawClient(t, eps)
		// A debounce long enough that the burst fits in it however loaded
		// the machine is: the test is about batching, not about timing.
		a := startNodeWith(t, eps, "127.0.1.1", zaptest.NewLogger(t).Named("127.0.1.1"),
			func(c *Config) { c.Debounce = 2 * time.Second })
		// The write on connecting is immediate; the burst must come after it,
		// or it is split between that write and the debounced one.
		for deadline := time.Now().Add(10 * time.Second); ; {
			resp, err := cli.Get(context.Background(), DefaultPrefix+"hosts/127.0.1.1/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err == nil && resp.Count > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the node wrote nothing within 10 s")
			}
			time.Sleep(20 * time.Millisecond)
		}
		wch := cli.Watch(context.Background(), DefaultPrefix+"hosts/127.0.1.1/rec/", clientv3.WithPrefix())
		var recs []Record
		for i := range 50 {
			recs = append(recs, rec(fmt.Sprintf("burst-%d", i), "10.1.0.1"))
			a.Publish(slices.Clone(recs))
		}
		revs := map[int64]int{}
		for puts := 0; puts < 50; {
			select {
			case wr := <-wch:
				for _, ev := range wr.Events {
					revs[ev.Kv.ModRevision]++
					puts++
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("saw %d of 50 puts", puts)
			}
		}
		if len(revs) != 1 {
			t.Fatalf("50 changes written in %d transactions (%v), want 1", len(revs), revs)
		}
		a.stop()
	})

	t.Run("records cross hosts; a dead host is gone within the lease TTL", func(t *testing.T) {
		a := startNode(t, eps, "127.0.1.1")
		// B talks to etcd through a proxy; cutting it for good is, for
		// etcd, the same as B being SIGKILLed: no revoke, no more beats.
		px := etcdtest.NewProxy(t, etcdtest.HostPort(eps[0]))
		b := startNode(t, []string{px.URL()}, "127.0.1.2")
		bRecs := []Record{rec("b-1", "10.2.0.1"), rec("b-2", "10.2.0.2")}
		b.Publish(bRecs)
		a.Publish([]Record{rec("a-1", "10.1.0.1")})
		waitView(t, a, 5*time.Second, sorted(lines("127.0.1.2", bRecs)))
		waitView(t, b, 5*time.Second, sorted(lines("127.0.1.1", []Record{rec("a-1", "10.1.0.1")})))

		px.Cut()
		cut := time.Now()
		took := waitView(t, a, testTTL+time.Second, sorted())
		t.Logf("records of a cut-off host gone after %v (lease TTL %v)", time.Since(cut).Round(10*time.Millisecond), testTTL)
		_ = took
		a.stop()
		b.stop()
	})

	t.Run("a graceful stop revokes at once", func(t *testing.T) {
		a := startNode(t, eps, "127.0.1.1")
		b := startNode(t, eps, "127.0.1.2")
		b.Publish([]Record{rec("b-1", "10.2.0.1")})
		waitView(t, a, 5*time.Second, sorted([]string{"127.0.1.2 b-1 10.2.0.1"}))
		b.stop()
		waitView(t, a, time.Second, sorted())
		a.stop()
	})

	t.Run("partition: stale, dropped after the window, caught up after", func(t *testing.T) {
		a := startNode(t, eps, "127.0.1.1")
		var pxs []*etcdtest.Proxy
		var urls []string
		for _, e := range eps {
			px := etcdtest.NewProxy(t, etcdtest.HostPort(e))
			pxs = append(pxs, px)
			urls = append(urls, px.URL())
		}
		c := startNode(t, urls, "127.0.1.3")
		a.Publish([]Record{rec("a-1", "10.1.0.1")})
		c.Publish([]Record{rec("c-1", "10.3.0.1")})
		waitView(t, c, 5*time.Second, []string{"127.0.1.1 a-1 10.1.0.1"})
		waitView(t, a, 5*time.Second, []string{"127.0.1.3 c-1 10.3.0.1"})
		loads := c.Stats.FullLoads.Load()

		for _, px := range pxs {
			px.Cut()
		}
		a.Publish([]Record{rec("a-1", "10.1.0.1"), rec("a-2", "10.1.0.2")})
		time.Sleep(testTTL)
		if got := c.view(); !slices.Equal(got, []string{"127.0.1.1 a-1 10.1.0.1"}) {
			t.Fatalf("cut-off view %v, want the last records kept", got)
		}
		if st := c.Status(context.Background()); !st.Stale || c.Connected() {
			t.Fatalf("cut-off status %+v, want stale and not connected", st)
		}
		waitView(t, a, time.Second, sorted()) // C's lease ran out
		waitView(t, c, testStale, sorted())
		if !c.Status(context.Background()).Dropped {
			t.Fatal("status does not say the data was dropped")
		}

		for _, px := range pxs {
			px.Restore()
		}
		waitView(t, c, 3*testTTL, []string{"127.0.1.1 a-1 10.1.0.1", "127.0.1.1 a-2 10.1.0.2"})
		// C wrote its records again on a new lease.
		waitView(t, a, 3*testTTL, []string{"127.0.1.3 c-1 10.3.0.1"})
		if c.Stats.KeepAliveFail.Load() == 0 {
			t.Error("the lost lease was not counted")
		}
		if st := c.Status(context.Background()); st.Stale || len(st.Hosts) != 1 || st.Hosts[0].LastHeartbeat.IsZero() {
			t.Fatalf("status after restore %+v", st)
		}
		if n := c.Stats.FullLoads.Load() - loads; n != 0 {
			t.Errorf("%d full loads after the cut: the watch should resume from its revision", n)
		}
		a.stop()
		c.stop()
	})

	t.Run("a compacted revision means a full reload", func(t *testing.T) {
		cli := rawClient(t, eps)
		a := startNode(t, eps, "127.0.1.1")
		var pxs []*etcdtest.Proxy
		var urls []string
		for _, e := range eps {
			px := etcdtest.NewProxy(t, etcdtest.HostPort(e))
			pxs = append(pxs, px)
			urls = append(urls, px.URL())
		}
		c := startNode(t, urls, "127.0.1.3")
		a.Publish([]Record{rec("a-1", "10.1.0.1"), rec("a-2", "10.1.0.2")})
		waitView(t, c, 5*time.Second, []string{"127.0.1.1 a-1 10.1.0.1", "127.0.1.1 a-2 10.1.0.2"})
		loads := c.Stats.FullLoads.Load()

		for _, px := range pxs {
			px.Cut()
		}
		a.Publish([]Record{rec("a-1", "10.1.0.9"), rec("a-3", "10.1.0.3")}) // a-2 deleted
		time.Sleep(500 * time.Millisecond)
		// Compact past the revision of A's change: etcd 3.4 serves a watch
		// that starts exactly at the compacted revision without that
		// revision's deletions, so this test stays clear of it.
		resp, err := cli.Put(context.Background(), "/elsewhere", "x")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Compact(context.Background(), resp.Header.Revision); err != nil {
			t.Fatal(err)
		}
		for _, px := range pxs {
			px.Restore()
		}
		waitView(t, c, 3*testTTL, []string{"127.0.1.1 a-1 10.1.0.9", "127.0.1.1 a-3 10.1.0.3"})
		if c.Stats.FullLoads.Load() == loads {
			t.Fatal("caught up across a compaction without a full load")
		}
		a.stop()
		c.stop()
	})

	t.Run("a stopped etcd member changes nothing", func(t *testing.T) {
		a := startNode(t, eps, "127.0.1.1")
		b := startNode(t, eps, "127.0.1.2")
		a.Publish([]Record{rec("a-1", "10.1.0.1")})
		b.Publish([]Record{rec("b-1", "10.2.0.1")})
		waitView(t, a, 5*time.Second, []string{"127.0.1.2 b-1 10.2.0.1"})
		waitView(t, b, 5*time.Second, []string{"127.0.1.1 a-1 10.1.0.1"})
		ec.Members[0].Stop()
		defer func() { ec.Members[0].Start(); ec.Members[0].WaitHealthy() }()
		deadline := time.Now().Add(2 * testTTL)
		for time.Now().Before(deadline) {
			if got := a.view(); !slices.Equal(got, []string{"127.0.1.2 b-1 10.2.0.1"}) {
				t.Fatalf("a's view changed to %v with one member down", got)
			}
			if got := b.view(); !slices.Equal(got, []string{"127.0.1.1 a-1 10.1.0.1"}) {
				t.Fatalf("b's view changed to %v with one member down", got)
			}
			time.Sleep(50 * time.Millisecond)
		}
		b.Publish([]Record{rec("b-1", "10.2.0.1"), rec("b-2", "10.2.0.2")})
		waitView(t, a, 5*time.Second, []string{"127.0.1.2 b-1 10.2.0.1", "127.0.1.2 b-2 10.2.0.2"})
		a.stop()
		b.stop()
	})

	t.Run("500 random adds and removes over three instances converge", func(t *testing.T) {
		hosts := []string{"127.0.1.1", "127.0.1.2", "127.0.1.3"}
		var nodes []*testNode
		for i, h := range hosts {
			nodes = append(nodes, startNode(t, eps[i:i+1], h))
		}
		sets := make([]map[string]Record, 3)
		for i := range sets {
			sets[i] = make(map[string]Record)
		}
		rng := rand.New(rand.NewPCG(8, 8))
		for op := range 500 {
			i := rng.IntN(3)
			name := fmt.Sprintf("r%d", rng.IntN(60))
			if _, ok := sets[i][name]; ok && rng.IntN(2) == 0 {
				delete(sets[i], name)
			} else {
				sets[i][name] = rec(name, fmt.Sprintf("10.%d.%d.%d", i, op/250, op%250+1))
			}
			recs := make([]Record, 0, len(sets[i]))
			for _, r := range sets[i] {
				recs = append(recs, r)
			}
			nodes[i].Publish(recs)
			if op%25 == 0 {
				time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
			}
		}
		for i, n := range nodes {
			var want []string
			for j, h := range hosts {
				if j == i {
					continue
				}
				for _, r := range sets[j] {
					want = append(want, h+" "+r.Name+" "+r.Addresses[0].String())
				}
			}
			waitView(t, n, 5*time.Second, sorted(want))
			if got := n.view(); len(got) != len(slices.Compact(slices.Clone(got))) {
				t.Fatalf("duplicates in %v", got)
			}
		}
		t.Logf("converged: %d records on the three hosts", len(sets[0])+len(sets[1])+len(sets[2]))
		for _, n := range nodes {
			n.stop()
		}
	})
}

func TestBadRecordsSkipped(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	cli := rawClient(t, ec.Endpoints())
	core, logs := observer.New(zap.WarnLevel)
	a := startNodeWith(t, ec.Endpoints(), "127.0.1.1", zap.New(core))
	ctx := context.Background()
	for k, v := range map[string]string{
		RecordKey(DefaultPrefix, "127.0.2.1", "good"):  `{"name":"good","addresses":["10.3.0.1"]}`,
		RecordKey(DefaultPrefix, "127.0.2.1", "bad"):   `{"name":"bad","addresses":["not-an-ip"]}`,
		RecordKey(DefaultPrefix, "127.0.2.1", "huge"):  `{"name":"huge","addresses":["10.3.0.2"],"project":"` + strings.Repeat("p", 5000) + `"}`,
		RecordKey(DefaultPrefix, "127.0.2.1", "a..b"):  `{}`,
		DefaultPrefix + "hosts/notanaddress/rec/x":     `{"name":"x","addresses":["10.3.0.3"]}`,
		RecordKey(DefaultPrefix, "127.0.2.1", "other"): `{"name":"different","addresses":["10.3.0.4"]}`,
		RecordKey(DefaultPrefix, "127.0.2.1", "multi"): `{"name":"multi","addresses":["224.1.1.1"]}`,
	} {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	waitView(t, a, 5*time.Second, []string{"127.0.2.1 good 10.3.0.1"})
	// More changes from the same host do not log the bad keys again.
	if _, err := cli.Put(ctx, RecordKey(DefaultPrefix, "127.0.2.1", "good2"), `{"name":"good2","addresses":["10.3.0.5"]}`); err != nil {
		t.Fatal(err)
	}
	waitView(t, a, 5*time.Second, []string{"127.0.2.1 good 10.3.0.1", "127.0.2.1 good2 10.3.0.5"})
	if n := logs.FilterMessage("cluster record skipped").Len(); n != 6 {
		t.Fatalf("%d skipped-record warnings for 6 bad keys, want one each", n)
	}
}

// With etcd auth on, a node with the right user and password works, and one
// without is refused (and keeps retrying without crashing).
func TestAuth(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	cli := rawClient(t, ec.Endpoints())
	ctx := context.Background()
	for _, step := range []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.UserAdd(ctx, "sidedns", "s3cret"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "sidedns"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "sidedns", DefaultPrefix, clientv3.GetPrefixRangeEnd(DefaultPrefix), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserGrantRole(ctx, "sidedns", "sidedns"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("set up auth: %v", err)
		}
	}
	start := func(adv, user, pw string, eps ...string) *testNode {
		if eps == nil {
			eps = ec.Endpoints()
		}
		tn := &testNode{done: make(chan struct{})}
		n, err := New(Config{Endpoints: eps, LeaseTTL: testTTL, StaleWindow: testStale,
			Advertise: netip.MustParseAddr(adv), Username: user, Password: pw, Logger: zaptest.NewLogger(t).Named(adv),
			OnRemote: func(cs []resolver.Container) { tn.mu.Lock(); tn.layer = cs; tn.mu.Unlock() }})
		if err != nil {
			t.Fatal(err)
		}
		tn.Node = n
		ctx, cancel := context.WithCancel(context.Background())
		tn.stop = func() { cancel(); <-tn.done }
		go func() { n.Run(ctx); close(tn.done) }()
		t.Cleanup(tn.stop)
		return tn
	}
	a := start("127.0.1.1", "sidedns", "s3cret")
	b := start("127.0.1.2", "sidedns", "s3cret")
	anon := start("127.0.1.3", "", "")
	b.Publish([]Record{rec("b-1", "10.2.0.1")})
	anon.Publish([]Record{rec("x-1", "10.3.0.1")})
	waitView(t, a, 5*time.Second, []string{"127.0.1.2 b-1 10.2.0.1"})
	time.Sleep(testTTL)
	if got := a.view(); !slices.Equal(got, []string{"127.0.1.2 b-1 10.2.0.1"}) {
		t.Fatalf("view %v: an unauthenticated host got records in", got)
	}
	if got := anon.view(); len(got) != 0 {
		t.Fatalf("an unauthenticated host read %v", got)
	}

	// etcd unreachable when a node with auth starts: it keeps trying, and
	// publishes once etcd is there.
	px := etcdtest.NewProxy(t, etcdtest.HostPort(ec.Endpoints()[0]))
	px.Cut()
	late := start("127.0.1.4", "sidedns", "s3cret", px.URL())
	late.Publish([]Record{rec("late-1", "10.4.0.1")})
	time.Sleep(testTTL)
	px.Restore()
	waitView(t, a, 15*time.Second, []string{"127.0.1.2 b-1 10.2.0.1", "127.0.1.4 late-1 10.4.0.1"})
}
