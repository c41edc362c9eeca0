package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sidedns/sidedns/cluster"
	"github.com/sidedns/sidedns/control"
	"github.com/sidedns/sidedns/ops"
	"github.com/sidedns/sidedns/recordsfile"
	"github.com/sidedns/sidedns/resolver"
)

// clusterConfig is the multi-host part of the command line (DESIGN 7).
type clusterConfig struct {
	ClusterEtcd        []string
	ClusterPrefix      string
	ClusterLeaseTTL    time.Duration
	AdvertiseAddr      string
	ClusterStaleWindow time.Duration
	ClusterCA          string
	ClusterCert        string
	ClusterKey         string
	ClusterUser        string
	ClusterPassword    string
	RecordsFile        string
}

// recordsFilePoll is how often --records-file is checked for changes: a
// stat, cheap enough to do every second.
const recordsFilePoll = time.Second

func clusterFlags(c *clusterConfig) []flagSpec {
	c.ClusterPrefix = cluster.DefaultPrefix
	c.ClusterLeaseTTL = cluster.DefaultLeaseTTL
	c.ClusterStaleWindow = cluster.DefaultStaleWindow
	optional := func(s string) (string, error) { return s, nil }
	return []flagSpec{
		{"cluster-etcd", "url", "etcd endpoints (http:// or https://) to share records with other hosts; empty: this host only",
			true, &listValue[string]{dst: &c.ClusterEtcd, parse: checkEtcdURL}},
		{"cluster-prefix", "key", "etcd key prefix of the cluster's records",
			false, &stringValue{dst: &c.ClusterPrefix, parse: checkPrefix}},
		{"cluster-lease-ttl", "duration", "lease of this host's records: kept alive every third of it, and the records vanish from other hosts when it runs out",
			false, &durationValue{dst: &c.ClusterLeaseTTL, min: 2 * time.Second, whole: true}},
		{"advertise-addr", "ip", "this host's address as other hosts reach it; published with the containers' published ports. Required with --cluster-etcd",
			false, &stringValue{dst: &c.AdvertiseAddr, parse: checkAddr}},
		{"cluster-stale-window", "duration", "how long remote records keep answering while etcd is unreachable",
			false, &durationValue{dst: &c.ClusterStaleWindow, min: time.Second}},
		{"cluster-ca", "path", "CA bundle that signs the etcd servers' certificates",
			false, &stringValue{dst: &c.ClusterCA, parse: optional}},
		{"cluster-cert", "path", "client certificate for etcd (with --cluster-key)",
			false, &stringValue{dst: &c.ClusterCert, parse: optional}},
		{"cluster-key", "path", "client key for etcd (with --cluster-cert)",
			false, &stringValue{dst: &c.ClusterKey, parse: optional}},
		{"cluster-user", "name", "etcd user (with --cluster-password)",
			false, &stringValue{dst: &c.ClusterUser, parse: optional}},
		{"cluster-password", "password", "etcd password; prefer the environment twin to the command line",
			false, &stringValue{dst: &c.ClusterPassword, parse: optional}},
		{"records-file", "path", "YAML or JSON file of services that are not containers, answered under the zone and published to the cluster; re-read when it changes and on SIGHUP",
			false, &stringValue{dst: &c.RecordsFile, parse: optional}},
	}
}

func checkEtcdURL(s string) (string, error) {
	if !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://") {
		return "", errors.New("want http://host:port or https://host:port")
	}
	return s, nil
}

func checkPrefix(s string) (string, error) {
	if !strings.HasPrefix(s, "/") || !strings.HasSuffix(s, "/") {
		return "", errors.New("want a key prefix that starts and ends with /, e.g. /sidedns/")
	}
	return s, nil
}

func checkAddr(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.IsUnspecified() || a.Zone() != "" {
		return "", errors.New("want the IP address other hosts reach this one at")
	}
	return a.String(), nil
}

// check reports settings that only make sense together.
func (c clusterConfig) check() error {
	switch {
	case len(c.ClusterEtcd) > 0 && c.AdvertiseAddr == "":
		return usageErrorf("--cluster-etcd needs --advertise-addr: the address other hosts reach this one at")
	case (c.ClusterCert == "") != (c.ClusterKey == ""):
		return usageErrorf("--cluster-cert and --cluster-key go together")
	case (c.ClusterUser == "") != (c.ClusterPassword == ""):
		return usageErrorf("--cluster-user and --cluster-password go together")
	}
	return nil
}

func (c clusterConfig) tls() (*tls.Config, error) {
	if c.ClusterCA == "" && c.ClusterCert == "" && !slices.ContainsFunc(c.ClusterEtcd, func(u string) bool { return strings.HasPrefix(u, "https://") }) {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.ClusterCA != "" {
		pem, err := os.ReadFile(c.ClusterCA)
		if err != nil {
			return nil, fmt.Errorf("read --cluster-ca: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cluster-ca %s: no PEM certificate", c.ClusterCA)
		}
	}
	if c.ClusterCert != "" {
		cert, err := tls.LoadX509KeyPair(c.ClusterCert, c.ClusterKey)
		if err != nil {
			return nil, fmt.Errorf("load --cluster-cert/--cluster-key: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// layers is the table as published: the Docker topology, then the records
// file, then the other hosts' records, each replaced as a whole. It also
// tells the cluster node what this host publishes.
type layers struct {
	res       *resolver.Resolver
	node      *cluster.Node // nil without --cluster-etcd
	advertise netip.Addr
	after     func() // after each publish: refresh the live page
	// changed wakes the control API's Watch streams after a change that
	// did not come through it: the records file, other hosts. Called
	// without mu, as it takes the Publisher's lock, which is held around
	// setLocal.
	changed func()

	mu       sync.Mutex
	local    resolver.Topology
	file     []cluster.Record
	remote   []resolver.Container
	stop     context.CancelFunc
	done     sync.WaitGroup
	fileWait *recordsfile.Watcher
}

// Publish takes the Docker topology; with AnswerSet, layers is a
// control.Target.
func (l *layers) Publish(t resolver.Topology) { l.setLocal(t) }

// AnswerSet and Topology are the resolver's.
func (l *layers) AnswerSet(name string) []resolver.Answer { return l.res.AnswerSet(name) }
func (l *layers) Topology() resolver.Topology             { return l.res.Topology() }

// notify makes f wake the control API at each change of the records file
// or the other hosts' records.
func (l *layers) notify(f func()) {
	l.mu.Lock()
	l.changed = f
	l.mu.Unlock()
}

func (l *layers) setLocal(t resolver.Topology) {
	l.mu.Lock()
	l.local = t
	l.publishLocked(true)
	l.mu.Unlock()
}

func (l *layers) setFile(recs []cluster.Record) {
	l.replace(func() { l.file = recs }, true)
}

func (l *layers) setRemote(cs []resolver.Container) {
	l.replace(func() { l.remote = cs }, false)
}

// replace swaps one of the layers the control API does not see change (set,
// under mu), publishes, and then wakes the Watch streams.
func (l *layers) replace(set func(), own bool) {
	l.mu.Lock()
	set()
	l.publishLocked(own)
	changed := l.changed
	l.mu.Unlock()
	if changed != nil {
		changed()
	}
}

// publishLocked publishes the merged table and, when this host's own
// records changed, hands them to the node.
func (l *layers) publishLocked(own bool) {
	t := resolver.Topology{Networks: l.local.Networks}
	t.Containers = slices.Concat(l.local.Containers, cluster.Containers(resolver.OriginRecordsFile, l.file), l.remote)
	l.res.Publish(t)
	if l.after != nil {
		l.after()
	}
	if own && l.node != nil {
		l.node.Publish(slices.Concat(cluster.LocalRecords(l.local, l.advertise), l.file))
	}
}

// startCluster starts the records file watcher and the cluster node when
// configured. Without either, Docker topologies go straight to the resolver.
func (a *app) startCluster(cfg config) error {
	cc := cfg.clusterConfig
	if len(cc.ClusterEtcd) == 0 && cc.RecordsFile == "" {
		return nil
	}
	l := &layers{res: a.res}
	l.after = func() {
		if a.ops != nil {
			a.ops.Refresh()
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.stop = cancel
	if cc.RecordsFile != "" {
		w, recs, err := recordsfile.NewWatcher(cc.RecordsFile, recordsFilePoll, l.setFile, a.log.Named("records-file"))
		if err != nil {
			cancel()
			return usageErrorf("--records-file: %w", err)
		}
		l.file, l.fileWait = recs, w
		l.done.Go(func() { w.Run(ctx) })
	}
	if len(cc.ClusterEtcd) > 0 {
		tc, err := cc.tls()
		if err != nil {
			cancel()
			return usageErrorf("%w", err)
		}
		l.advertise = netip.MustParseAddr(cc.AdvertiseAddr) // checked by checkAddr
		l.node, err = cluster.New(cluster.Config{
			Endpoints: cc.ClusterEtcd, Prefix: cc.ClusterPrefix, LeaseTTL: cc.ClusterLeaseTTL,
			StaleWindow: cc.ClusterStaleWindow, Advertise: l.advertise, Version: buildVersion(),
			TLS: tc, Username: cc.ClusterUser, Password: cc.ClusterPassword,
			Logger: a.log.Named("cluster"), OnRemote: l.setRemote,
		})
		if err != nil {
			cancel()
			return err
		}
		l.done.Go(func() { l.node.Run(ctx) })
	}
	a.layers = l
	l.mu.Lock()
	l.publishLocked(true)
	l.mu.Unlock()
	a.log.Info("cluster layer started", zap.Strings("etcd", cc.ClusterEtcd),
		zap.String("advertise", cc.AdvertiseAddr), zap.String("records_file", cc.RecordsFile))
	return nil
}

// publishTarget is where the Docker topology (with the control API's
// overrides) goes: the layers when they exist, else the resolver.
func (a *app) publishTarget() control.Target {
	if a.layers != nil {
		return a.layers
	}
	return a.res
}

// reloadCluster re-reads the records file (SIGHUP).
func (a *app) reloadCluster() {
	if a.layers != nil && a.layers.fileWait != nil {
		a.layers.fileWait.Reload()
	}
}

// stopCluster stops the node, which revokes this host's lease so its
// records leave the other hosts at once.
func (a *app) stopCluster() {
	if a.layers != nil {
		a.layers.stop()
		a.layers.done.Wait()
	}
}

var (
	descClusterConnected = desc("cluster_etcd_connected", "1 while the cluster watch hears from etcd.")
	descClusterHosts     = desc("cluster_hosts", "Other hosts whose records are in the table.")
	descClusterRecords   = desc("cluster_remote_records", "Records of other hosts in the table.")
	descClusterAge       = desc("cluster_remote_data_age_seconds", "Time since etcd was last heard from; the remote records are that old.")
	descClusterRestarts  = desc("cluster_watch_restarts_total", "Cluster watches opened again after a failure or a compaction.")
	descClusterLoads     = desc("cluster_full_loads_total", "Full reads of the cluster prefix.")
	descClusterKAFail    = desc("cluster_lease_keepalive_failures_total", "Leases lost because keep-alives stopped getting through.")
	descClusterTxns      = desc("cluster_write_txns_total", "Transactions that wrote this host's records.")
)

// registerClusterMetrics exports the node's counters.
func (a *app) registerClusterMetrics(reg *prometheus.Registry) {
	if a.layers == nil || a.layers.node == nil {
		return
	}
	n := a.layers.node
	reg.MustRegister(ops.NewFuncCollector(
		[]*prometheus.Desc{descClusterConnected, descClusterHosts, descClusterRecords, descClusterAge,
			descClusterRestarts, descClusterLoads, descClusterKAFail, descClusterTxns},
		func(ch chan<- prometheus.Metric) {
			g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
			c := func(d *prometheus.Desc, v uint64) {
				ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
			}
			hosts, recs, age := n.RemoteRecords()
			conn := 0.0
			if n.Connected() {
				conn = 1
			}
			g(descClusterConnected, conn)
			g(descClusterHosts, float64(hosts))
			g(descClusterRecords, float64(recs))
			g(descClusterAge, age.Seconds())
			c(descClusterRestarts, n.Stats.WatchRestarts.Load())
			c(descClusterLoads, n.Stats.FullLoads.Load())
			c(descClusterKAFail, n.Stats.KeepAliveFail.Load())
			c(descClusterTxns, n.Stats.Txns.Load())
		}))
}

// clusterStatus is the cluster as the ops surface shows it; nil (no
// cluster) keeps it out of the JSON.
func (a *app) clusterStatus() any {
	if a.layers == nil || a.layers.node == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return a.layers.node.Status(ctx)
}

// buildVersion is the module version sidedns was built as, for the host
// record.
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.Main.Version
	}
	return ""
}

// clusterPage adds the cluster to the live page's state: the etcd link, and
// one table row per other host with its last heartbeat and records.
func (a *app) clusterPage(out map[string]any) {
	if a.layers == nil || a.layers.node == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st := a.layers.node.Status(ctx)
	out["cluster"] = map[string]any{"connected": st.Connected, "stale": st.Stale, "dropped": st.Dropped,
		"last contact": st.LastContact.Format(time.RFC3339), "hosts": len(st.Hosts)}
	hosts := make([]map[string]any, 0, len(st.Hosts))
	for _, h := range st.Hosts {
		var recs []string
		for _, r := range h.Records {
			addrs := make([]string, len(r.Addresses))
			for i, ad := range r.Addresses {
				addrs[i] = ad.String()
			}
			recs = append(recs, r.Name+" "+strings.Join(addrs, ","))
		}
		row := map[string]any{"host": h.Addr, "version": h.Version, "records": strings.Join(recs, "; ")}
		if !h.LastHeartbeat.IsZero() {
			row["last heartbeat"] = h.LastHeartbeat.Format(time.RFC3339)
		}
		hosts = append(hosts, row)
	}
	if len(hosts) > 0 {
		out["cluster hosts"] = hosts
	}
}
