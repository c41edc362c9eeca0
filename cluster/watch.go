package cluster

import (
	"context"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sidedns/sidedns/resolver"
)

// watchLoop keeps n.hosts equal to etcd: a full load, then a watch from the
// loaded revision; after a broken watch it resumes from the last revision it
// saw, and loads everything again when that revision has been compacted.
func (n *Node) watchLoop(ctx context.Context) {
	var rev int64 // 0: load everything
	bad := make(map[string]int64)
	for ctx.Err() == nil {
		if rev == 0 {
			r, err := n.load(ctx, bad)
			if err != nil {
				n.log.Warn("cluster load failed; retrying", zap.Error(err))
				sleep(ctx, n.retryDelay())
				continue
			}
			rev = r
		}
		rev = n.watch(ctx, rev, bad)
		if ctx.Err() != nil {
			return
		}
		n.Stats.WatchRestarts.Add(1)
		sleep(ctx, n.retryDelay()/4)
	}
}

// load reads the whole prefix and replaces the view with it.
func (n *Node) load(ctx context.Context, bad map[string]int64) (int64, error) {
	tctx, cancel := context.WithTimeout(ctx, n.cfg.LeaseTTL)
	defer cancel()
	resp, err := n.cli.Get(tctx, n.cfg.Prefix+hostsDir, clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	n.Stats.FullLoads.Add(1)
	hosts := make(map[string]*hostState)
	for _, kv := range resp.Kvs {
		n.applyPut(hosts, kv.Key, kv.Value, kv.Lease, kv.ModRevision, bad)
	}
	n.view.Lock()
	n.hosts = hosts
	n.view.Unlock()
	n.contact()
	n.emit()
	return resp.Header.Revision, nil
}

// watch follows changes after rev until the watch breaks; it returns the
// revision to resume from, or 0 when only a full load can catch up.
func (n *Node) watch(ctx context.Context, rev int64, bad map[string]int64) int64 {
	// WithRequireLeader: a member cut off from its quorum ends the watch
	// instead of keeping it open with nothing to say.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	ch := n.cli.Watch(wctx, n.cfg.Prefix+hostsDir, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	tick := time.NewTicker(n.cfg.LeaseTTL / 3)
	defer tick.Stop()
	var asking atomic.Bool
	for {
		select {
		case <-ctx.Done():
			return rev
		case <-tick.C:
			// A progress notice proves the watch is alive when nothing
			// changes; without one for a while the data is stale.
			if asking.CompareAndSwap(false, true) {
				go func() {
					pctx, cancel := context.WithTimeout(wctx, n.cfg.LeaseTTL/3)
					n.cli.RequestProgress(pctx)
					cancel()
					asking.Store(false)
				}()
			}
		case wr, ok := <-ch:
			if !ok {
				return rev
			}
			if wr.CompactRevision != 0 {
				n.log.Info("cluster watch revision compacted; loading everything", zap.Int64("revision", rev), zap.Int64("compacted", wr.CompactRevision))
				return 0
			}
			if err := wr.Err(); err != nil {
				n.log.Warn("cluster watch ended; resuming", zap.Int64("revision", rev), zap.Error(err))
				return rev
			}
			if wr.IsProgressNotify() {
				rev = max(rev, wr.Header.Revision)
			}
			if len(wr.Events) > 0 {
				n.view.Lock()
				for _, ev := range wr.Events {
					kv := ev.Kv
					if ev.Type == clientv3.EventTypeDelete {
						n.applyDelete(n.hosts, kv.Key)
					} else {
						n.applyPut(n.hosts, kv.Key, kv.Value, kv.Lease, kv.ModRevision, bad)
					}
					rev = kv.ModRevision
				}
				n.view.Unlock()
			}
			n.contact()
			if len(wr.Events) > 0 {
				n.emit()
			}
		}
	}
}

// applyPut records one key. A key or value that fails validation is logged
// once per revision and drops whatever the key held before: the host meant
// to replace it.
func (n *Node) applyPut(hosts map[string]*hostState, key, value []byte, lease int64, modRev int64, bad map[string]int64) {
	kind, h, name, err := ParseKey(n.cfg.Prefix, string(key))
	if err == nil && h == n.cfg.Advertise.String() {
		return // our own: answered locally
	}
	var rec Record
	var info Host
	if err == nil {
		if kind == KindHost {
			info, err = DecodeHost(h, value)
		} else {
			rec, err = DecodeRecord(name, value)
		}
	}
	if err != nil {
		if bad[string(key)] != modRev {
			bad[string(key)] = modRev
			n.log.Warn("cluster record skipped", zap.ByteString("key", key), zap.Error(err))
		}
		n.applyDelete(hosts, key)
		return
	}
	st := hosts[h]
	if st == nil {
		st = &hostState{records: make(map[string]Record)}
		hosts[h] = st
	}
	if kind == KindHost {
		st.info, st.lease = info, clientv3.LeaseID(lease)
	} else {
		st.records[name] = rec
		st.layer = nil
	}
}

func (n *Node) applyDelete(hosts map[string]*hostState, key []byte) {
	kind, h, name, err := ParseKey(n.cfg.Prefix, string(key))
	st := hosts[h]
	if err != nil || st == nil {
		return
	}
	if kind == KindHost {
		st.info, st.lease = Host{}, 0
	} else {
		delete(st.records, name)
		st.layer = nil
	}
	if !st.info.Addr.IsValid() && len(st.records) == 0 {
		delete(hosts, h)
	}
}

func (n *Node) contact() {
	n.view.Lock()
	n.lastContact = n.cfg.Now()
	wasDropped := n.dropped
	n.dropped = false
	n.view.Unlock()
	if wasDropped {
		n.log.Info("cluster reachable again; remote records restored")
		n.emit()
	}
}

// staleLoop withholds the remote records once etcd has been silent for the
// stale window, checking every heartbeat.
func (n *Node) staleLoop(ctx context.Context) {
	t := time.NewTicker(n.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.checkStale()
		}
	}
}

// Connected reports whether etcd was heard from within two heartbeats.
func (n *Node) Connected() bool {
	n.view.Lock()
	defer n.view.Unlock()
	return !n.lastContact.IsZero() && n.cfg.Now().Sub(n.lastContact) <= n.staleAfter()
}

// checkStale drops the remote records past the stale window.
func (n *Node) checkStale() {
	n.view.Lock()
	age := n.cfg.Now().Sub(n.lastContact)
	drop := !n.dropped && !n.lastContact.IsZero() && age > n.cfg.StaleWindow
	if drop {
		n.dropped = true
	}
	n.view.Unlock()
	if drop {
		n.log.Warn("cluster unreachable past the stale window; remote records dropped", zap.Duration("age", age))
		n.emit()
	}
}

// staleAfter is how long without word from etcd makes remote data stale:
// two heartbeats, so one late progress notice is not an alarm.
func (n *Node) staleAfter() time.Duration { return 2 * n.cfg.LeaseTTL / 3 }

// emit hands the current layer to OnRemote.
func (n *Node) emit() {
	n.cfg.OnRemote(n.layer())
}

func (n *Node) layer() []resolver.Container {
	n.view.Lock()
	defer n.view.Unlock()
	if n.dropped {
		return nil
	}
	var out []resolver.Container
	for _, h := range slices.Sorted(maps.Keys(n.hosts)) {
		st := n.hosts[h]
		if st.layer == nil {
			recs := make([]Record, 0, len(st.records))
			for _, name := range slices.Sorted(maps.Keys(st.records)) {
				recs = append(recs, st.records[name])
			}
			st.layer = Containers(h, recs)
		}
		out = append(out, st.layer...)
	}
	return out
}

// HostView is one other host as the ops surface shows it.
type HostView struct {
	Addr          string    `json:"addr"`
	Version       string    `json:"version,omitempty"`
	Started       time.Time `json:"started,omitzero"`
	LastHeartbeat time.Time `json:"last_heartbeat,omitzero"`
	Records       []Record  `json:"records"`
}

// Status is the cluster as this node sees it.
type Status struct {
	Connected   bool       `json:"connected"`
	Stale       bool       `json:"stale"`
	Dropped     bool       `json:"dropped"`
	LastContact time.Time  `json:"last_contact,omitzero"`
	Hosts       []HostView `json:"hosts"`
}

// Status reports the other hosts with their records. A host's last
// heartbeat is read from its lease: granted TTL minus what remains.
func (n *Node) Status(ctx context.Context) Status {
	n.view.Lock()
	st := Status{LastContact: n.lastContact, Dropped: n.dropped}
	st.Stale = n.lastContact.IsZero() || n.cfg.Now().Sub(n.lastContact) > n.staleAfter()
	leases := make([]clientv3.LeaseID, 0, len(n.hosts))
	for _, h := range slices.Sorted(maps.Keys(n.hosts)) {
		hs := n.hosts[h]
		v := HostView{Addr: h, Version: hs.info.Version, Started: hs.info.Started}
		for _, name := range slices.Sorted(maps.Keys(hs.records)) {
			v.Records = append(v.Records, hs.records[name])
		}
		st.Hosts = append(st.Hosts, v)
		leases = append(leases, hs.lease)
	}
	n.view.Unlock()
	st.Connected = !st.Stale
	for i, id := range leases {
		if id != 0 && !st.Stale {
			st.Hosts[i].LastHeartbeat = n.heartbeat(ctx, id)
		}
	}
	return st
}

// heartbeat asks etcd when lease id was last kept alive, at most once a
// heartbeat per lease: the live page asks on every push.
func (n *Node) heartbeat(ctx context.Context, id clientv3.LeaseID) time.Time {
	now := n.cfg.Now()
	n.hbMu.Lock()
	c, ok := n.hbCache[id]
	n.hbMu.Unlock()
	if ok && now.Sub(c.asked) < n.cfg.LeaseTTL/3 {
		return c.beat
	}
	cli := n.client.Load()
	if cli == nil {
		return c.beat
	}
	tctx, cancel := context.WithTimeout(ctx, time.Second)
	resp, err := cli.TimeToLive(tctx, id)
	cancel()
	if err != nil || resp.TTL <= 0 {
		return c.beat
	}
	c = heartbeatAt{asked: now, beat: now.Add(-time.Duration(resp.GrantedTTL-resp.TTL) * time.Second).Truncate(time.Second)}
	n.hbMu.Lock()
	if n.hbCache == nil || len(n.hbCache) > 4096 {
		n.hbCache = make(map[clientv3.LeaseID]heartbeatAt)
	}
	n.hbCache[id] = c
	n.hbMu.Unlock()
	return c.beat
}

type heartbeatAt struct{ asked, beat time.Time }

// RemoteRecords counts the records in the layer, for metrics.
func (n *Node) RemoteRecords() (hosts, records int, age time.Duration) {
	n.view.Lock()
	defer n.view.Unlock()
	for _, st := range n.hosts {
		records += len(st.records)
	}
	if !n.lastContact.IsZero() {
		age = n.cfg.Now().Sub(n.lastContact)
	}
	if n.dropped {
		return 0, 0, age
	}
	return len(n.hosts), records, age
}
