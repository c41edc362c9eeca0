package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/e2e/engine"
)

// Real daemon faults (DESIGN 5, "Docker faults"), on the private engine only: a dockerd killed during a
// burst of starts, restarted with and without --live-restore, and replaced by another daemon on the same
// socket. Each ends with sidedns's table equal to the engine's; while the daemon is away sidedns keeps
// answering from its last table and /readyz stays 200.

// tableEntry is one running container as the table should hold it: name and IPv4 per network.
type tableEntry struct {
	ID   string
	Name string
	IPs  map[string]string // network name -> IPv4
}

func (e tableEntry) String() string {
	keys := make([]string, 0, len(e.IPs))
	for k := range e.IPs {
		keys = append(keys, k+"="+e.IPs[k])
	}
	sort.Strings(keys)
	return e.Name + "(" + e.ID[:12] + ")[" + strings.Join(keys, ",") + "]"
}

// engineTable is what `docker ps` and `docker inspect` say: the running, paused and restarting
// containers, as sidedns lists them.
func engineTable(t testing.TB) ([]string, error) {
	t.Helper()
	out, err := docker("ps", "-q", "--no-trunc")
	if err != nil {
		return nil, err
	}
	ids := strings.Fields(out)
	if len(ids) == 0 {
		return []string{}, nil
	}
	out, err = docker(append([]string{"inspect", "--format", "{{json .}}"}, ids...)...)
	if err != nil {
		// A container can go between ps and inspect; the caller polls again.
		return nil, err
	}
	var rows []string
	for _, line := range strings.Split(out, "\n") {
		var c struct {
			ID              string `json:"Id"`
			Name            string
			NetworkSettings struct {
				Networks map[string]struct{ IPAddress string }
			}
		}
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			return nil, fmt.Errorf("decode inspect: %w", err)
		}
		e := tableEntry{ID: c.ID, Name: strings.TrimPrefix(c.Name, "/"), IPs: map[string]string{}}
		for n, ep := range c.NetworkSettings.Networks {
			if ep.IPAddress != "" {
				e.IPs[n] = ep.IPAddress
			}
		}
		rows = append(rows, e.String())
	}
	sort.Strings(rows)
	return rows, nil
}

// sidednsTable is the same view from /api/v1/records.
func sidednsTable(sd *Sidedns) ([]string, error) {
	var recs struct {
		Containers []struct {
			ID        string
			Name      string
			Addresses []struct{ Network, IPv4 string }
		}
	}
	body, err := httpBody(sd.HTTPAddr, "/api/v1/records")
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(body, &recs); err != nil {
		return nil, fmt.Errorf("decode records: %w", err)
	}
	rows := []string{}
	for _, c := range recs.Containers {
		e := tableEntry{ID: c.ID, Name: c.Name, IPs: map[string]string{}}
		for _, a := range c.Addresses {
			if a.IPv4 != "" {
				e.IPs[a.Network] = a.IPv4
			}
		}
		rows = append(rows, e.String())
	}
	sort.Strings(rows)
	return rows, nil
}

// waitTableEqual polls until sidedns's table equals the engine's twice in a row (the engine may still be
// restarting containers) and returns how long that took.
func waitTableEqual(t *testing.T, sd *Sidedns, timeout time.Duration) time.Duration {
	t.Helper()
	var want, got []string
	var errE, errS error
	streak := 0
	took, ok := waitFor(timeout, func() bool {
		want, errE = engineTable(t)
		got, errS = sidednsTable(sd)
		if errE == nil && errS == nil && slices.Equal(want, got) {
			streak++
		} else {
			streak = 0
		}
		return streak >= 2
	})
	if !ok {
		t.Fatalf("sidedns table never equalled the engine's within %s:\nengine:  %v (%v)\nsidedns: %v (%v)", timeout, want, errE, got, errS)
	}
	t.Logf("table equals the engine's: %d containers", len(want))
	return took
}

// watchdog queries sidedns for local names and /readyz every 50ms until stopped, and counts what went
// unanswered. Every query must get a reply; while mustAns holds (the daemon is away, or its containers
// keep running) it must also carry the name's address. Once the daemon is back, the table follows it and
// a name may go.
type watchdog struct {
	stop     chan struct{}
	done     chan struct{}
	queries  atomic.Int64
	misses   atomic.Int64
	notReady atomic.Int64
	mu       sync.Mutex
	firstBad string
	mustAns  atomic.Bool
}

func startWatchdog(t *testing.T, sd *Sidedns, names map[string]netip.Addr) *watchdog {
	w := &watchdog{stop: make(chan struct{}), done: make(chan struct{})}
	w.mustAns.Store(true)
	go func() {
		defer close(w.done)
		for {
			for name, ip := range names {
				w.queries.Add(1)
				r, err := query(t, sd.DNSAddr, name, dns.TypeA)
				bad := ""
				switch {
				case err != nil:
					bad = fmt.Sprintf("%s: no reply: %v", name, err)
				case w.mustAns.Load() && !slices.Equal(answerAddrs(r), []string{ip.String()}):
					bad = fmt.Sprintf("%s: %s %v, want %s", name, dns.RcodeToString[r.Rcode], answerAddrs(r), ip)
				}
				if bad != "" {
					w.misses.Add(1)
					w.mu.Lock()
					if w.firstBad == "" {
						w.firstBad = bad
					}
					w.mu.Unlock()
				}
			}
			if !readyz(sd.HTTPAddr) {
				w.notReady.Add(1)
			}
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(w.halt)
	return w
}

func (w *watchdog) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// check stops the watchdog and fails the test for any miss.
func (w *watchdog) check(t *testing.T) {
	t.Helper()
	w.halt()
	t.Logf("during the fault: %d local queries, %d unanswered, %d /readyz not 200", w.queries.Load(), w.misses.Load(), w.notReady.Load())
	if w.misses.Load() > 0 {
		t.Errorf("%d local queries unanswered during the fault; first: %s", w.misses.Load(), w.firstBad)
	}
	if w.notReady.Load() > 0 {
		t.Errorf("/readyz was not 200 %d times during the fault", w.notReady.Load())
	}
}

// restoreDaemon puts the default daemon back after a test that changed it, so later tests find the
// engine (and its images) as the run started it.
func restoreDaemon(t *testing.T, e *engine.Engine) {
	t.Cleanup(func() {
		if e.Daemon() == (engine.DaemonOptions{}) {
			return
		}
		if err := e.StopDaemon(); err != nil {
			t.Errorf("stop daemon: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := e.StartDaemon(ctx, engine.DaemonOptions{}); err != nil {
			t.Errorf("restart the default daemon: %v", err)
		}
	})
}

func restartDaemon(t *testing.T, e *engine.Engine, opts engine.DaemonOptions) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.StartDaemon(ctx, opts); err != nil {
		t.Fatalf("start dockerd: %v", err)
	}
}

// TestFaultKillDuringBurst: SIGKILL dockerd while 50 containers are being started, start it again,
// and check that sidedns catches up with whatever the engine then runs.
func TestFaultKillDuringBurst(t *testing.T) {
	e := requirePrivateEngine(t)
	restoreDaemon(t, e)
	sfx := randSuffix()
	n := createNetwork(t, "sidedns-test-"+sfx+"-k")
	up := startFakeUpstream(t)
	sd := startSidedns(t, up, "--allow", "127.0.0.0/8")
	// --restart always: the daemon starts these again when it comes back (without --live-restore it
	// first stops them), so the table to catch up with is not empty.
	run := func(name string) error {
		t.Cleanup(func() { docker("rm", "-f", "-v", name) })
		_, err := docker("run", "-d", "--name", name, "--label", runLabel+"="+runID, "--network", n.Name,
			"--dns", n.Gateway.String(), "--restart", "always", probeImage)
		return err
	}
	steadyName := "sidedns-test-" + sfx + "-steady"
	if err := run(steadyName); err != nil {
		t.Fatal(err)
	}
	steady := inspectContainer(t, steadyName)
	waitVisible(t, sd, n.Name, steady)
	w := startWatchdog(t, sd, map[string]netip.Addr{steady.Name: steady.IPs[n.Name]})

	const burst, workers = 50, 5
	var started atomic.Int64
	killed := make(chan struct{})
	var killOnce sync.Once
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := run(fmt.Sprintf("sidedns-test-%s-burst%02d", sfx, i)); err == nil {
					if started.Add(1) == 15 {
						killOnce.Do(func() {
							if err := e.KillDaemon(); err != nil {
								t.Errorf("kill dockerd: %v", err)
							}
							close(killed)
						})
					}
				}
			}
		})
	}
	for i := range burst {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case <-killed:
	default:
		t.Fatalf("only %d of %d starts succeeded before the kill", started.Load(), burst)
	}
	t.Logf("dockerd killed after %d successful starts of %d", started.Load(), burst)
	// Away for a moment: sidedns notices, and keeps serving.
	time.Sleep(2 * time.Second)
	w.mustAns.Store(false)
	restartDaemon(t, e, engine.DaemonOptions{})
	took := waitTableEqual(t, sd, time.Minute)
	t.Logf("FIGURE kill during burst: table equal to the engine's %v after dockerd answered again", took.Round(10*time.Millisecond))
	waitVisible(t, sd, n.Name, inspectContainer(t, steady.Name))
	w.check(t)
}

// TestFaultGracefulRestart: a daemon stopped with SIGTERM and started again. Without --live-restore
// its containers stop and must leave the table; with it they keep running and must stay.
func TestFaultGracefulRestart(t *testing.T) {
	e := requirePrivateEngine(t)
	restoreDaemon(t, e)
	for _, live := range []bool{false, true} {
		t.Run(fmt.Sprintf("live-restore=%v", live), func(t *testing.T) {
			opts := engine.DaemonOptions{LiveRestore: live}
			if e.Daemon() != opts {
				if err := e.StopDaemon(); err != nil {
					t.Fatal(err)
				}
				restartDaemon(t, e, opts)
			}
			sfx := randSuffix()
			n := createNetwork(t, "sidedns-test-"+sfx+"-g")
			up := startFakeUpstream(t)
			sd := startSidedns(t, up, "--allow", "127.0.0.0/8")
			var cs []Container
			for i := range 3 {
				cs = append(cs, runContainer(t, ContainerOpts{Name: fmt.Sprintf("sidedns-test-%s-g%d", sfx, i), Network: n.Name,
					DNS: []string{n.Gateway.String()}}))
			}
			waitVisible(t, sd, n.Name, cs...)
			names := map[string]netip.Addr{}
			for _, c := range cs {
				names[c.Name] = c.IPs[n.Name]
			}
			w := startWatchdog(t, sd, names)
			if !live {
				// The daemon stops its containers on the way down: their names go, legitimately.
				w.mustAns.Store(false)
			}
			if err := e.StopDaemon(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Second)
			restartDaemon(t, e, opts)
			took := waitTableEqual(t, sd, time.Minute)
			t.Logf("FIGURE graceful restart (live-restore=%v): table equal to the engine's %v after dockerd answered again", live, took.Round(10*time.Millisecond))
			running := 0
			for _, c := range cs {
				if mustDocker(t, "inspect", "--format", "{{.State.Running}}", c.Name) == "true" {
					running++
				}
			}
			if live && running != len(cs) {
				t.Errorf("with --live-restore %d of %d containers still run, want all", running, len(cs))
			}
			if !live && running != 0 {
				t.Errorf("without --live-restore %d of %d containers still run, want none", running, len(cs))
			}
			w.check(t)
		})
	}
}

// TestFaultSocketReplaced: the daemon dies, its socket is removed, and a different daemon (another data
// root: none of the old containers) creates the socket again. The table must become the new daemon's.
func TestFaultSocketReplaced(t *testing.T) {
	e := requirePrivateEngine(t)
	sfx := randSuffix()
	img := filepath.Join(t.TempDir(), "probe.tar")
	mustDocker(t, "save", "-o", img, probeImage)
	n := createNetwork(t, "sidedns-test-"+sfx+"-o")
	up := startFakeUpstream(t)
	sd := startSidedns(t, up, "--allow", "127.0.0.0/8")
	old := runContainer(t, ContainerOpts{Name: "sidedns-test-" + sfx + "-old", Network: n.Name, DNS: []string{n.Gateway.String()}})
	waitVisible(t, sd, n.Name, old)
	// Registered after old and n: the default daemon is back before their cleanups run.
	restoreDaemon(t, e)
	w := startWatchdog(t, sd, map[string]netip.Addr{old.Name: old.IPs[n.Name]})

	if err := e.KillDaemon(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e.Socket()); err != nil && !os.IsNotExist(err) {
		t.Fatalf("remove socket: %v", err)
	}
	time.Sleep(2 * time.Second)
	w.check(t) // the old name answered while no daemon was there

	restartDaemon(t, e, engine.DaemonOptions{Data: "other"})
	mustDocker(t, "load", "-q", "-i", img)
	n2 := createNetwork(t, "sidedns-test-"+sfx+"-o2")
	var news []Container
	for i := range 2 {
		news = append(news, runContainer(t, ContainerOpts{Name: fmt.Sprintf("sidedns-test-%s-new%d", sfx, i), Network: n2.Name,
			DNS: []string{n2.Gateway.String()}}))
	}
	took := waitTableEqual(t, sd, time.Minute)
	t.Logf("FIGURE socket replaced: table equal to the new daemon's %v after its containers started", took.Round(10*time.Millisecond))
	waitVisible(t, sd, n2.Name, news...)
	if hostSees(t, sd, old.Name, old.IPs[n.Name]) {
		t.Errorf("%s, a container of the old daemon, still answers", old.Name)
	}
}

// httpBody GETs path and returns the body of a 200 reply.
func httpBody(addr, path string) ([]byte, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return b, nil
}
