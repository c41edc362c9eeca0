// Command sidedns is a DNS server for one Docker host: it answers for the
// host's containers and networks and forwards every other name upstream
// through a cache. Run sidedns --help for its flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sidedns/sidedns/control"
	"github.com/sidedns/sidedns/dnsserver"
	"github.com/sidedns/sidedns/dockerwatch"
	"github.com/sidedns/sidedns/ops"
	"github.com/sidedns/sidedns/resolver"
	"github.com/sidedns/sidedns/servicemap"
	"github.com/sidedns/sidedns/upstream"
)

// drainTimeout bounds the wait for in-flight queries on SIGTERM; it stays
// under Docker's default 10 s stop grace period.
const drainTimeout = 5 * time.Second

// defaultBridge is the interface whose IPv4 address is listened on by default:
// containers on the default bridge reach the host there.
const defaultBridge = "docker0"

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr, sigs))
}

// run is main without the process globals. It returns the exit code: 0 after
// a clean drain, 1 when start-up fails, 2 for a bad flag or env value.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer, sigs <-chan os.Signal) int {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(args[1:], getenv, stderr)
	}
	if len(args) > 0 && controlCommands[args[0]] != nil {
		return runControl(args[0], args[1:], getenv, stdout, stderr, sigs)
	}
	cfg, err := parseConfig(args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stdout)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "sidedns: %v\nRun 'sidedns --help' for usage.\n", err)
		return 2
	}
	log := newLogger(cfg, stderr)
	defer log.Sync()

	a, err := start(cfg, log)
	if err != nil {
		log.Error("start-up failed", zap.Error(err))
		fmt.Fprintf(stderr, "sidedns: %v\n", err)
		if errors.As(err, new(usageError)) {
			return 2
		}
		return 1
	}
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			next, err := parseConfig(args, getenv)
			if err != nil {
				log.Error("reload: keeping the running settings", zap.Error(err))
				continue
			}
			a.reload(cfg, next)
			cfg = next
			continue
		}
		log.Info("draining", zap.Stringer("signal", sig))
		break
	}
	a.stop()
	return 0
}

func newLogger(cfg config, w io.Writer) *zap.Logger {
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if cfg.LogFormat == "console" {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		enc = zapcore.NewJSONEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), cfg.LogLevel))
}

// app is the running server: every component, for reload and stop.
type app struct {
	log       *zap.Logger
	listen    []netip.AddrPort
	res       *resolver.Resolver
	fwd       *upstream.Forwarder
	cache     *upstream.Cache // nil when --cache-size is 0
	srv       *dnsserver.Server
	docker    io.Closer            // nil when no Docker client could be made
	watcher   *dockerwatch.Watcher // nil when no Docker client could be made
	stopWatch context.CancelFunc
	watchDone chan struct{}
	stopHTTP  func(context.Context) error
	ops       *ops.Server     // nil with --http=off
	smap      *servicemap.Map // nil with --http=off
	overrides *control.Store
	pub       *control.Publisher // publishes the watcher's topologies with the overrides
	ctl       *control.Server
	layers    *layers // nil without --records-file and --cluster-etcd

	stopLoopbackCheck func() // nil until started
}

// start builds and starts every component. On error, what was started is
// stopped again.
func start(cfg config, log *zap.Logger) (_ *app, err error) {
	a := &app{log: log, stopWatch: func() {}, stopHTTP: func(context.Context) error { return nil }}
	defer func() {
		if err != nil {
			a.stop()
		}
	}()

	listen, err := listenAddrs(cfg.Listen)
	if err != nil {
		return nil, err
	}
	a.listen = listen
	specs, err := a.upstreams(cfg)
	if err != nil {
		return nil, err
	}

	a.res = resolver.New(resolverOptions(cfg, listen))
	a.fwd, err = upstream.NewForwarder(upstream.Config{
		Servers:       specs,
		Timeout:       cfg.Timeout,
		MaxConcurrent: cfg.MaxConcurrent,
		Logger:        log.Named("upstream"),
	})
	if err != nil {
		return nil, err
	}
	// One forward may time out on one upstream and then need a full try on
	// the next, so it gets at least two tries' worth of time.
	forwardBudget := max(upstream.DefaultForwardBudget, 2*cfg.Timeout+time.Second)
	stale := cfg.StaleWindow
	if stale == 0 {
		stale = -1 // the cache reads 0 as its default
	}
	size := cfg.CacheSize
	if size == 0 {
		size = -1 // --cache-size 0: store nothing; identical misses still share one exchange
	}
	a.cache, err = upstream.NewCache(a.fwd, upstream.CacheConfig{
		Size:           size,
		MinTTL:         cfg.CacheMinTTL,
		MaxTTL:         cfg.CacheMaxTTL,
		StaleWindow:    stale,
		RefreshTimeout: forwardBudget,
		Logger:         log.Named("cache"),
	})
	if err != nil {
		return nil, err
	}

	listenStrs := make([]string, len(listen))
	for i, ap := range listen {
		listenStrs[i] = ap.String()
	}
	a.srv, err = dnsserver.New(dnsserver.Config{
		Listen:         listenStrs,
		Local:          a.res,
		Upstream:       a.cache,
		Allow:          cfg.Allow,
		RateLimit:      dnsserver.RateLimit{QPS: cfg.RateLimit, Slip: dnsserver.DefaultSlip},
		ForwardTimeout: forwardBudget,
		Logger:         log.Named("dns"),
		LogQueries:     cfg.LogQueries,
		Recorder:       a.recorder(cfg),
	})
	if err != nil {
		return nil, err
	}
	if err := a.srv.Start(); err != nil {
		a.srv = nil
		return nil, err
	}

	if err := a.startCluster(cfg); err != nil {
		return nil, err
	}
	a.newWatcher(cfg)
	if err := a.startHTTP(cfg); err != nil {
		return nil, err
	}
	if err := a.startControl(cfg); err != nil {
		return nil, err
	}
	a.runWatcher()
	a.watchLoopbackOnly()
	log.Info("sidedns started",
		zap.Stringers("listen", a.srv.Addrs()),
		zap.Stringers("upstreams", specs),
		zap.String("domain", cfg.Domain),
		zap.Int("cache_size", cfg.CacheSize),
		zap.String("http", cfg.HTTP))
	return a, nil
}

// newWatcher makes the Docker watcher. Without a daemon sidedns still
// serves: the watcher logs the reason once and retries with backoff.
func (a *app) newWatcher(cfg config) {
	cli, err := dockerwatch.NewClient()
	if err != nil {
		a.log.Warn("no docker client; serving forwarded names only", zap.Error(err))
		return
	}
	a.docker = cli
	// a.pub is set by startControl, before the watcher runs.
	publish := func(t resolver.Topology) { a.pub.Publish(t) }
	a.watcher = dockerwatch.New(cli, publish, a.log.Named("docker"),
		dockerwatch.Options{ResyncInterval: cfg.ResyncInterval, OnEvent: a.notifyPage})
}

// notifyPage shows a Docker event in the live page's event list.
func (a *app) notifyPage(ev dockerwatch.Event) {
	if a.ops != nil {
		a.ops.Notify(ops.Event{Time: ev.Time, Kind: ev.Kind, Action: ev.Action, Name: ev.Name})
	}
}

// runWatcher starts the watcher in the background.
func (a *app) runWatcher() {
	if a.watcher == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.stopWatch = cancel
	a.watchDone = make(chan struct{})
	go func() {
		defer close(a.watchDone)
		a.watcher.Run(ctx)
	}()
}

// upstreams returns --upstream, or else the nameservers in --resolv-conf
// minus our own listen addresses.
func (a *app) upstreams(cfg config) ([]upstream.Spec, error) {
	if len(cfg.Upstream) > 0 {
		return cfg.Upstream, nil
	}
	specs, err := upstream.FromResolvConf(cfg.ResolvConf, a.listen)
	if err != nil {
		return nil, usageErrorf("find upstreams: %w (pass --upstream)", err)
	}
	return specs, nil
}

// resolverOptions: ns.<zone> answers with the addresses sidedns listens on.
func resolverOptions(cfg config, listen []netip.AddrPort) resolver.Options {
	ns := make([]netip.Addr, len(listen))
	for i, ap := range listen {
		ns[i] = ap.Addr()
	}
	return resolver.Options{
		TTL:          uint32(cfg.TTL / time.Second),
		Domain:       cfg.Domain,
		StrictHealth: cfg.StrictHealth,
		NSAddrs:      ns,
	}
}

// reload applies what can change without a restart (SIGHUP): the upstreams
// (re-reading --resolv-conf unless --upstream is given), the TTL, domain and
// health policy, and the allow list. next comes from a fresh read of the
// flags, the environment and --config; a failed upstream read keeps the
// current ones. Other changed settings are reported as needing a restart.
func (a *app) reload(prev, next config) {
	fields := []zap.Field{}
	if specs, err := a.upstreams(next); err != nil {
		a.log.Error("reload upstreams; keeping the current ones", zap.Error(err))
	} else if err := a.fwd.SetServers(specs); err != nil {
		a.log.Error("reload upstreams; keeping the current ones", zap.Error(err))
	} else {
		fields = append(fields, zap.Stringers("upstreams", specs))
	}
	if next.TTL != prev.TTL || next.Domain != prev.Domain || next.StrictHealth != prev.StrictHealth {
		a.res.SetOptions(resolverOptions(next, a.listen))
		a.pub.Changed()
		fields = append(fields, zap.Duration("ttl", next.TTL), zap.String("domain", next.Domain),
			zap.Bool("strict_health", next.StrictHealth))
	}
	if !slices.Equal(next.Allow, prev.Allow) {
		a.srv.SetAllow(next.Allow)
		allow := "loopback and docker networks"
		if len(next.Allow) > 0 {
			allow = fmt.Sprint(next.Allow)
		}
		fields = append(fields, zap.String("allow", allow))
	}
	a.reloadCluster()
	a.log.Info("reloaded", fields...)
	if allApplied := reflect.DeepEqual(withReloadable(prev, next), next); !allApplied {
		a.log.Warn("some changed settings take effect only after a restart")
	}
}

// withReloadable returns prev with next's reloadable settings, so comparing
// it with next shows whether anything else changed.
func withReloadable(prev, next config) config {
	prev.Upstream, prev.TTL, prev.Domain, prev.StrictHealth, prev.Allow =
		next.Upstream, next.TTL, next.Domain, next.StrictHealth, next.Allow
	return prev
}

// stop drains the DNS server, then stops the rest. It is safe on a partly
// started app.
func (a *app) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if a.srv != nil {
		if err := a.srv.Shutdown(ctx); err != nil {
			a.log.Warn("drain incomplete", zap.Error(err))
		}
	}
	if a.ctl != nil {
		a.ctl.Stop()
	}
	if err := a.stopHTTP(ctx); err != nil {
		a.log.Warn("stop http", zap.Error(err))
	}
	if a.stopLoopbackCheck != nil {
		a.stopLoopbackCheck()
	}
	a.stopWatch()
	if a.watchDone != nil {
		<-a.watchDone
	}
	a.stopCluster()
	if a.docker != nil {
		a.docker.Close()
	}
	if a.cache != nil {
		a.cache.Close() // waits for prefetches, which use the forwarder
	}
	if a.fwd != nil {
		a.fwd.Close()
	}
	a.log.Info("stopped")
}

// listenAddrs returns --listen, or 127.0.0.1:53 plus the default bridge's
// IPv4 address when that interface exists.
func listenAddrs(flagged []string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, l := range flagged {
		ap, err := dnsserver.ParseListenAddr(l)
		if err != nil {
			return nil, usageError{err}
		}
		if !slices.Contains(out, ap) {
			out = append(out, ap)
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	out = append(out, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), dnsserver.DefaultPort))
	if ip, ok := interfaceIPv4(defaultBridge); ok {
		out = append(out, netip.AddrPortFrom(ip, dnsserver.DefaultPort))
	}
	return out, nil
}

func interfaceIPv4(name string) (netip.Addr, bool) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return netip.Addr{}, false
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, false
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
			return p.Addr(), true
		}
	}
	return netip.Addr{}, false
}
