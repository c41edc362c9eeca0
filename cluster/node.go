package cluster

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sidedns/sidedns/resolver"
)

// Config configures a Node. Zero durations take the defaults below.
type Config struct {
	Endpoints   []string
	Prefix      string        // default "/sidedns/"
	LeaseTTL    time.Duration // default 15s: the heartbeat is TTL/3
	StaleWindow time.Duration // default 5m
	Advertise   netip.Addr    // this host as others reach it; also its key
	Version     string        // written in the host record
	TLS         *tls.Config
	Username    string
	Password    string
	// Debounce gathers changes into one transaction; default 100ms.
	Debounce time.Duration
	Logger   *zap.Logger
	Now      func() time.Time // default time.Now
	// OnRemote receives the other hosts' records as zone-only containers
	// whenever they change, on the node's own goroutine. It replaces the
	// previous layer as a whole.
	OnRemote func([]resolver.Container)
}

const (
	DefaultPrefix      = "/sidedns/"
	DefaultLeaseTTL    = 15 * time.Second
	DefaultStaleWindow = 5 * time.Minute
	defaultDebounce    = 100 * time.Millisecond
	// maxTxnOps is etcd's default --max-txn-ops; a larger change is written
	// in several transactions.
	maxTxnOps = 128
)

// Stats are the node's counters; cmd exports them as metrics.
type Stats struct {
	WatchRestarts atomic.Uint64 // watches opened again after a failure or compaction
	FullLoads     atomic.Uint64 // full reads of the prefix
	KeepAliveFail atomic.Uint64 // leases lost: keep-alive stopped before the lease ended
	Txns          atomic.Uint64 // write transactions committed
}

// Node publishes this host's records and watches everyone else's.
type Node struct {
	cfg Config
	// cli is set by Run before its loops start, which alone use it; Status
	// runs on other goroutines and reads client.
	cli    *clientv3.Client
	client atomic.Pointer[clientv3.Client]
	log    *zap.Logger
	Stats  Stats

	want    chan struct{} // one slot: records changed
	mu      sync.Mutex
	records []Record // desired, set by Publish
	started time.Time

	view sync.Mutex // guards the fields below, read by Hosts
	// hosts is the last known state of every other host.
	hosts       map[string]*hostState
	lastContact time.Time
	dropped     bool // past the stale window: the layer is withheld

	hbMu    sync.Mutex
	hbCache map[clientv3.LeaseID]heartbeatAt
}

type hostState struct {
	info    Host
	lease   clientv3.LeaseID
	records map[string]Record
	// layer is the records as containers, in name order; nil after a
	// change. Kept so a change on one host does not convert every host's.
	layer []resolver.Container
}

// New connects a client (lazily: etcd may be down at start) and returns a
// node; Run does the work.
func New(cfg Config) (*Node, error) {
	cfg.Prefix = cmp.Or(cfg.Prefix, DefaultPrefix)
	cfg.LeaseTTL = cmp.Or(cfg.LeaseTTL, DefaultLeaseTTL)
	cfg.StaleWindow = cmp.Or(cfg.StaleWindow, DefaultStaleWindow)
	cfg.Debounce = cmp.Or(cfg.Debounce, defaultDebounce)
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OnRemote == nil {
		cfg.OnRemote = func([]resolver.Container) {}
	}
	if !cfg.Advertise.IsValid() {
		return nil, errors.New("cluster: an advertise address is required")
	}
	if cfg.LeaseTTL < 2*time.Second {
		return nil, fmt.Errorf("cluster: lease TTL %v below etcd's 2s minimum", cfg.LeaseTTL)
	}
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("cluster: no etcd endpoints")
	}
	return &Node{
		cfg: cfg, log: cfg.Logger, want: make(chan struct{}, 1),
		started: cfg.Now(), hosts: make(map[string]*hostState),
	}, nil
}

// connect makes the etcd client, retrying until it succeeds: with auth the
// client fetches a token at once, and etcd may be down when sidedns starts.
func (n *Node) connect(ctx context.Context) (*clientv3.Client, error) {
	beat := n.cfg.LeaseTTL / 3
	for {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:            n.cfg.Endpoints,
			DialTimeout:          max(beat, 5*time.Second),
			DialKeepAliveTime:    beat,
			DialKeepAliveTimeout: beat,
			TLS:                  n.cfg.TLS,
			Username:             n.cfg.Username,
			Password:             n.cfg.Password,
			Logger:               n.cfg.Logger.Named("etcd").WithOptions(zap.IncreaseLevel(zap.ErrorLevel)),
		})
		if err == nil {
			return cli, nil
		}
		n.log.Warn("connect etcd; retrying", zap.Strings("endpoints", n.cfg.Endpoints), zap.Error(err))
		if !sleep(ctx, n.retryDelay()) {
			return nil, ctx.Err()
		}
	}
}

// Publish sets the records this host publishes. The node writes the
// difference after the debounce delay, as one transaction.
func (n *Node) Publish(recs []Record) {
	n.mu.Lock()
	n.records = recs
	n.mu.Unlock()
	select {
	case n.want <- struct{}{}:
	default:
	}
}

// Run publishes and watches until ctx ends, then revokes the lease so this
// host's records vanish at once rather than after the TTL.
func (n *Node) Run(ctx context.Context) error {
	cli, err := n.connect(ctx)
	if err != nil {
		return nil // stopped before etcd was reached
	}
	defer cli.Close()
	n.cli = cli
	n.client.Store(cli)
	var wg sync.WaitGroup
	wg.Go(func() { n.watchLoop(ctx) })
	wg.Go(func() { n.publishLoop(ctx) })
	wg.Go(func() { n.staleLoop(ctx) })
	wg.Wait()
	return nil
}

// retryDelay spaces retries against an etcd that refuses: a heartbeat, so a
// recovered cluster is used again within one beat.
func (n *Node) retryDelay() time.Duration { return n.cfg.LeaseTTL / 3 }

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// publishLoop holds a lease and keeps the host's keys equal to the desired
// records. A lost lease (etcd unreachable past the TTL) means a new lease and
// everything written again.
func (n *Node) publishLoop(ctx context.Context) {
	for ctx.Err() == nil {
		err := n.session(ctx)
		if ctx.Err() != nil {
			return
		}
		n.log.Warn("cluster lease lost; starting a new one", zap.Error(err))
		sleep(ctx, n.retryDelay())
	}
}

var errLeaseLost = errors.New("lease keep-alive ended")

func (n *Node) session(ctx context.Context) error {
	tctx, cancel := context.WithTimeout(ctx, n.cfg.LeaseTTL)
	lease, err := n.cli.Grant(tctx, int64(n.cfg.LeaseTTL/time.Second))
	cancel()
	if err != nil {
		return fmt.Errorf("grant lease: %w", err)
	}
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	ka, err := n.cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		return fmt.Errorf("keep lease alive: %w", err)
	}
	defer func() {
		if ctx.Err() != nil {
			// Going away: take the records with us.
			rctx, cancel := context.WithTimeout(context.Background(), time.Second)
			n.cli.Revoke(rctx, lease.ID)
			cancel()
		}
	}()

	// The keys in etcd under this host's prefix, as last written.
	written, err := n.ownKeys(ctx)
	if err != nil {
		return err
	}
	// Keys left from an earlier lease (a restart) are rewritten on this one.
	for k := range written {
		written[k] = nil
	}
	dirty := true
	var debounce <-chan time.Time
	for {
		if dirty && debounce == nil {
			if err := n.sync(ctx, lease.ID, written); err != nil {
				n.log.Warn("cluster write failed; retrying", zap.Error(err))
				debounce = time.After(n.retryDelay())
			} else {
				dirty = false
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-ka:
			if !ok {
				n.Stats.KeepAliveFail.Add(1)
				return errLeaseLost
			}
		case <-n.want:
			dirty = true
			if debounce == nil {
				debounce = time.After(n.cfg.Debounce)
			}
		case <-debounce:
			debounce = nil
		}
	}
}

// ownKeys reads this host's keys and values.
func (n *Node) ownKeys(ctx context.Context) (map[string][]byte, error) {
	tctx, cancel := context.WithTimeout(ctx, n.cfg.LeaseTTL)
	defer cancel()
	resp, err := n.cli.Get(tctx, hostPrefix(n.cfg.Prefix, n.cfg.Advertise.String()), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read own keys: %w", err)
	}
	out := make(map[string][]byte, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = kv.Value
	}
	return out, nil
}

// desired is every key this host should hold, with its value.
func (n *Node) desired() map[string][]byte {
	n.mu.Lock()
	recs := n.records
	n.mu.Unlock()
	h := n.cfg.Advertise.String()
	hb, _ := json.Marshal(Host{Addr: n.cfg.Advertise, Version: n.cfg.Version, Started: n.started.UTC()})
	out := map[string][]byte{HostKey(n.cfg.Prefix, h): hb}
	for _, r := range recs {
		b, err := EncodeRecord(r)
		if err != nil || len(b) > MaxValueSize {
			n.log.Warn("record not published: too large or unencodable", zap.String("record", r.Name), zap.Error(err))
			continue
		}
		out[RecordKey(n.cfg.Prefix, h, r.Name)] = b
	}
	return out
}

// sync writes the difference between written and desired, in one
// transaction when it fits etcd's operation limit, and updates written.
func (n *Node) sync(ctx context.Context, lease clientv3.LeaseID, written map[string][]byte) error {
	want := n.desired()
	var ops []clientv3.Op
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if old, ok := written[k]; !ok || old == nil || string(old) != string(want[k]) {
			ops = append(ops, clientv3.OpPut(k, string(want[k]), clientv3.WithLease(lease)))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(written)) {
		if _, ok := want[k]; !ok {
			ops = append(ops, clientv3.OpDelete(k))
		}
	}
	for chunk := range slices.Chunk(ops, maxTxnOps) {
		tctx, cancel := context.WithTimeout(ctx, n.cfg.LeaseTTL)
		_, err := n.cli.Txn(tctx).Then(chunk...).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("write %d changes: %w", len(chunk), err)
		}
		n.Stats.Txns.Add(1)
		for _, op := range chunk {
			k := string(op.KeyBytes())
			if op.IsDelete() {
				delete(written, k)
			} else {
				written[k] = want[k]
			}
		}
	}
	return nil
}
