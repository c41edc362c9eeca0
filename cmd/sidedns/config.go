package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap/zapcore"

	"github.com/sidedns/sidedns/control"
	"github.com/sidedns/sidedns/dnsserver"
	"github.com/sidedns/sidedns/dockerwatch"
	"github.com/sidedns/sidedns/resolver"
	"github.com/sidedns/sidedns/upstream"
)

// envPrefix starts every flag's environment twin: --cache-size is SIDEDNS_CACHE_SIZE.
const envPrefix = "SIDEDNS_"

// defaultHTTP is where the ops surface listens unless --http says otherwise.
const defaultHTTP = "127.0.0.1:8053"

// config is the validated command line. Empty Listen, Upstream and Allow mean
// "work it out at start-up" (docker0, resolv.conf, Docker's subnets), so
// parsing does not depend on the machine it runs on.
type config struct {
	Config         string // file of flag=value lines, re-read on SIGHUP
	Listen         []string
	Upstream       []upstream.Spec
	ResolvConf     string
	HTTP           string // empty disables the HTTP surface
	NoServiceMap   bool   // --service-map off: no lookup is recorded
	Domain         string
	TTL            time.Duration
	StrictHealth   bool
	CacheSize      int // 0 disables the cache
	CacheMinTTL    time.Duration
	CacheMaxTTL    time.Duration
	StaleWindow    time.Duration // 0 disables serve-stale
	Timeout        time.Duration
	MaxConcurrent  int
	Allow          []netip.Prefix
	RateLimit      float64 // queries per second per source; 0 disables
	LogFormat      string
	LogLevel       zapcore.Level
	LogQueries     float64
	ResyncInterval time.Duration
	ControlSocket  string // empty disables the unix socket
	ControlTCP     string // empty: no TCP listener
	ControlCA      string
	ControlCert    string
	ControlKey     string
	StateFile      string // empty: overrides.json beside ControlSocket
	clusterConfig
}

// usageError is a bad flag or environment value, or a setting that cannot
// work on this host: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// flagSpec is a flag with its help text; order is the order of --help.
type flagSpec struct {
	name, arg, help string
	repeatable      bool
	value           flag.Value
}

func flagSpecs(c *config) []flagSpec {
	*c = config{
		ResolvConf:     "/etc/resolv.conf",
		HTTP:           defaultHTTP,
		Domain:         resolver.DefaultDomain,
		TTL:            resolver.DefaultTTL * time.Second,
		CacheSize:      upstream.DefaultCacheSize,
		CacheMaxTTL:    upstream.DefaultMaxTTL,
		StaleWindow:    upstream.DefaultStaleWindow,
		Timeout:        upstream.DefaultTimeout,
		MaxConcurrent:  upstream.DefaultMaxConcurrent,
		RateLimit:      dnsserver.DefaultRateLimitQPS,
		LogFormat:      "json",
		LogLevel:       zapcore.InfoLevel,
		ResyncInterval: dockerwatch.DefaultResyncInterval,
		ControlSocket:  control.DefaultSocket,
	}
	return append([]flagSpec{
		{"config", "path", "file of flag=value lines (the flags below, without dashes; # starts a comment), " +
			"for flags not given on the command line or in the environment; re-read on SIGHUP",
			false, &stringValue{dst: &c.Config, parse: nonEmpty}},
		{"listen", "ip[:port]", "address to serve DNS on, UDP and TCP (port 53 if omitted). " +
			"Default: 127.0.0.1:53, plus the docker0 bridge's IPv4 address (usually 172.17.0.1:53) when that interface exists",
			true, &listValue[string]{dst: &c.Listen, parse: checkListen}},
		{"upstream", "server", "upstream resolver: ip[:port], tcp://ip[:port], tls://host[:port][#tls-name]. " +
			"Default: the nameservers in --resolv-conf, minus sidedns's own addresses and 127.0.0.11",
			true, &listValue[upstream.Spec]{dst: &c.Upstream, parse: upstream.ParseSpec}},
		{"resolv-conf", "path", "resolv.conf to take upstreams from when --upstream is not given; re-read on SIGHUP",
			false, &stringValue{dst: &c.ResolvConf, parse: nonEmpty}},
		{"http", "ip:port", "address for /metrics, /healthz, /readyz, /api/v1/records and the live page; empty or off disables",
			false, &stringValue{dst: &c.HTTP, parse: checkHTTP}},
		{"service-map", "on|off", "record who looks up whom (/api/v1/graph, /api/v1/problems, the page's map and charts; needs --http); off keeps no lookup history, and those two paths answer 404",
			false, &onOffValue{off: &c.NoServiceMap}},
		{"domain", "zone", "zone sidedns is authoritative for (<name>.<zone>, <service>.<project>.<zone>)",
			false, &stringValue{dst: &c.Domain, parse: checkDomain}},
		{"ttl", "duration", "TTL of local answers, e.g. 5s or 5 (seconds)",
			false, &durationValue{dst: &c.TTL, min: time.Second, whole: true}},
		{"health-policy", "failopen|strict", "when no healthy container is left for a name: failopen answers with the running ones, strict answers NODATA",
			false, &policyValue{dst: &c.StrictHealth}},
		{"cache-size", "entries", "upstream answer cache size in entries; 0 disables the cache",
			false, &intValue{dst: &c.CacheSize, min: 0}},
		{"cache-min-ttl", "duration", "lowest TTL a cached answer is kept for",
			false, &durationValue{dst: &c.CacheMinTTL}},
		{"cache-max-ttl", "duration", "highest TTL a cached answer is kept for",
			false, &durationValue{dst: &c.CacheMaxTTL, min: time.Second}},
		{"stale-window", "duration", "how long after expiry a cached answer may be served when every upstream fails (RFC 8767); 0 disables",
			false, &durationValue{dst: &c.StaleWindow}},
		{"timeout", "duration", "timeout of one upstream try",
			false, &durationValue{dst: &c.Timeout, min: time.Millisecond}},
		{"max-concurrent", "n", "outstanding upstream queries; past it clients get REFUSED",
			false, &intValue{dst: &c.MaxConcurrent, min: 1}},
		{"allow", "cidr", "sources allowed to query. Default: loopback plus the subnets of the Docker networks sidedns sees",
			true, &listValue[netip.Prefix]{dst: &c.Allow, parse: parsePrefix}},
		{"rate-limit", "qps", "queries per second per source (burst: twice that); past it some UDP queries get an empty TC=1 reply " +
			"(so that honest clients retry over TCP), the rest are dropped, and TCP queries get REFUSED; 0 disables",
			false, &floatValue{dst: &c.RateLimit, min: 0, max: 1e9}},
		{"log-format", "json|console", "log encoding",
			false, &stringValue{dst: &c.LogFormat, parse: oneOf("json", "console")}},
		{"log-level", "level", "lowest level logged: debug, info, warn or error",
			false, &levelValue{dst: &c.LogLevel}},
		{"log-queries", "rate", "fraction of queries written to the query log, 0 to 1",
			false, &floatValue{dst: &c.LogQueries, min: 0, max: 1}},
		{"resync-interval", "duration", "period of the full Docker resync that backs up the event stream",
			false, &durationValue{dst: &c.ResyncInterval, min: time.Second}},
		{"control-socket", "path", "unix socket of the control API (drain, weight, ls, watch), mode 0660; empty or off disables",
			false, &stringValue{dst: &c.ControlSocket, parse: offOrPath}},
		{"control-tcp", "ip:port", "also serve the control API on TCP, with mutual TLS (needs --control-ca, --control-cert, --control-key)",
			false, &stringValue{dst: &c.ControlTCP, parse: checkControlTCP}},
		{"control-ca", "path", "PEM CA certificate that control API clients on TCP must be signed by",
			false, &stringValue{dst: &c.ControlCA, parse: nonEmpty}},
		{"control-cert", "path", "PEM certificate of the control API on TCP",
			false, &stringValue{dst: &c.ControlCert, parse: nonEmpty}},
		{"control-key", "path", "PEM private key of --control-cert",
			false, &stringValue{dst: &c.ControlKey, parse: nonEmpty}},
		{"state-file", "path", "where drains and weights set at run time are kept across restarts. Default: overrides.json beside --control-socket",
			false, &stringValue{dst: &c.StateFile, parse: nonEmpty}},
	}, clusterFlags(&c.clusterConfig)...)
}

// envName is the environment twin of a flag.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseConfig reads flags from args and, for flags not on the command line,
// their SIDEDNS_* twins from getenv. It returns flag.ErrHelp for --help and a
// usageError for any bad value.
func parseConfig(args []string, getenv func(string) string) (config, error) {
	var c config
	specs := flagSpecs(&c)
	fs := flag.NewFlagSet("sidedns", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned; main prints them
	for _, s := range specs {
		fs.Var(s.value, s.name, s.help)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		// The flag package names flags with one dash; our help uses two.
		msg := strings.NewReplacer("flag -", "flag --", "defined: -", "defined: --").Replace(err.Error())
		return c, usageError{errors.New(msg)}
	}
	if fs.NArg() > 0 {
		return c, usageErrorf("unexpected argument %q (all settings are --flags)", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, s := range specs {
		if given[s.name] {
			continue
		}
		env := envName(s.name)
		v := getenv(env)
		if v == "" {
			continue
		}
		if err := s.value.Set(v); err != nil {
			return c, usageErrorf("invalid value %q for %s (--%s): %w", v, env, s.name, err)
		}
	}
	if c.Config != "" {
		if err := applyConfigFile(c.Config, specs, func(name string) bool {
			return given[name] || getenv(envName(name)) != ""
		}); err != nil {
			return c, err
		}
	}
	if err := c.clusterConfig.check(); err != nil {
		return c, err
	}
	if c.ControlTCP != "" && (c.ControlCA == "" || c.ControlCert == "" || c.ControlKey == "") {
		return c, usageErrorf("--control-tcp needs --control-ca, --control-cert and --control-key")
	}
	if c.CacheMinTTL > c.CacheMaxTTL {
		return c, usageErrorf("--cache-min-ttl %s is above --cache-max-ttl %s", c.CacheMinTTL, c.CacheMaxTTL)
	}
	return c, nil
}

// printUsage writes --help: every flag with its default and its env twin.
func printUsage(w io.Writer) {
	var c config
	fmt.Fprint(w, `sidedns: a DNS server for one Docker host. It answers for the host's
containers and networks and forwards every other name to upstream resolvers
through a cache.

Usage: sidedns [flags]
       sidedns healthcheck [URL]
`+controlUsage+`
healthcheck asks URL (default: /readyz on --http) and exits 0 on HTTP 200,
1 otherwise; it is for container healthchecks in images without a shell.

`+controlHelp+`
Every flag has an environment twin, SIDEDNS_<FLAG> (upper case, dashes as
underscores); the command line wins over the environment. Repeatable flags
take the flag several times, or a comma-separated list in either place.
SIGHUP re-reads --config and --resolv-conf and applies the upstreams, TTL,
domain, health policy and allow list; SIGTERM and SIGINT drain queries and exit.

Flags:
`)
	for _, s := range flagSpecs(&c) {
		fmt.Fprintf(w, "  --%s %s\n", s.name, s.arg)
		fmt.Fprintf(w, "      %s", s.help)
		if def := s.value.String(); def != "" && !s.repeatable {
			fmt.Fprintf(w, " (default %q)", def)
		}
		fmt.Fprintf(w, "\n      env %s", envName(s.name))
		if s.repeatable {
			fmt.Fprint(w, "; repeatable")
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "  --help\n      show this help")
}

// Flag values. Each validates in Set, so a bad value fails at start-up.

type stringValue struct {
	dst   *string
	parse func(string) (string, error)
}

func (v *stringValue) String() string {
	if v.dst == nil {
		return ""
	}
	return *v.dst
}

func (v *stringValue) Set(s string) error {
	s, err := v.parse(s)
	if err != nil {
		return err
	}
	*v.dst = s
	return nil
}

func nonEmpty(s string) (string, error) {
	if s == "" {
		return "", errors.New("must not be empty")
	}
	return s, nil
}

func oneOf(choices ...string) func(string) (string, error) {
	return func(s string) (string, error) {
		for _, c := range choices {
			if strings.EqualFold(s, c) {
				return c, nil
			}
		}
		return "", fmt.Errorf("want one of %s", strings.Join(choices, ", "))
	}
}

func checkHTTP(s string) (string, error) {
	if s == "" || s == "off" {
		return "", nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", errors.New("want ip:port, e.g. 127.0.0.1:8053")
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return "", fmt.Errorf("host %q is not an IP address", host)
		}
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || (p == 0 && port != "0") {
		return "", fmt.Errorf("bad port %q", port)
	}
	return s, nil
}

func checkDomain(s string) (string, error) {
	s = dns.CanonicalName(strings.TrimSpace(s))
	if s == "." {
		return "", errors.New("the root zone cannot be sidedns's zone")
	}
	if _, ok := dns.IsDomainName(s); !ok {
		return "", errors.New("not a domain name")
	}
	return s, nil
}

func offOrPath(s string) (string, error) {
	if s == "off" {
		return "", nil
	}
	return s, nil
}

// checkControlTCP takes ip:port; unlike --http, the host is required, so
// the control API is never on every interface by accident.
func checkControlTCP(s string) (string, error) {
	host, _, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return "", errors.New("want ip:port, e.g. 10.0.0.5:8054")
	}
	return checkHTTP(s)
}

func checkListen(s string) (string, error) {
	ap, err := dnsserver.ParseListenAddr(s)
	if err != nil {
		return "", err
	}
	return ap.String(), nil
}

// setList calls add for every comma-separated item of s.
func setList(s string, add func(string) error) error {
	n := 0
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if err := add(item); err != nil {
			return err
		}
		n++
	}
	if n == 0 {
		return errors.New("empty list")
	}
	return nil
}

// listValue is a repeatable flag: the first Set replaces the default, later
// ones append, and each takes a comma-separated list.
type listValue[T any] struct {
	dst   *[]T
	parse func(string) (T, error)
	set   bool
}

func (v *listValue[T]) String() string {
	if v.dst == nil {
		return ""
	}
	b := make([]string, 0, len(*v.dst))
	for _, x := range *v.dst {
		b = append(b, fmt.Sprint(x)) // Spec and Prefix print as they parse
	}
	return strings.Join(b, ",")
}

func (v *listValue[T]) Set(s string) error {
	return setList(s, func(item string) error {
		x, err := v.parse(item)
		if err != nil {
			return err
		}
		if !v.set {
			*v.dst, v.set = nil, true
		}
		*v.dst = append(*v.dst, x)
		return nil
	})
}

// parsePrefix takes a CIDR, or a bare IP as a single-address prefix.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	if ip, err := netip.ParseAddr(s); err == nil && ip.Zone() == "" {
		return netip.PrefixFrom(ip, ip.BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("%q is not a CIDR (e.g. 172.16.0.0/12) or an IP", s)
}

// durationValue takes a Go duration ("5s", "1m30s") or whole seconds ("5").
type durationValue struct {
	dst   *time.Duration
	min   time.Duration
	whole bool // must be whole seconds (DNS TTLs are)
}

func (v *durationValue) String() string {
	if v.dst == nil {
		return ""
	}
	// "24h" and "5m" rather than "24h0m0s" and "5m0s".
	s := v.dst.String()
	s, _ = strings.CutSuffix(s, "m0s")
	if s != v.dst.String() {
		s += "m"
	}
	s, _ = strings.CutSuffix(s, "h0m")
	if strings.HasSuffix(v.dst.String(), "h0m0s") {
		s += "h"
	}
	return s
}

func (v *durationValue) Set(s string) error {
	var d time.Duration
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		d = time.Duration(n) * time.Second
	} else if d, err = time.ParseDuration(s); err != nil {
		return errors.New("want a duration like 5s, 2m or 24h, or whole seconds")
	}
	switch {
	case d < 0:
		return errors.New("must not be negative")
	case d < v.min:
		return fmt.Errorf("must be at least %s", v.min)
	case v.whole && d%time.Second != 0:
		return errors.New("must be whole seconds")
	case v.whole && d > time.Duration(1<<31-1)*time.Second:
		return errors.New("too long for a DNS TTL")
	}
	*v.dst = d
	return nil
}

type intValue struct {
	dst *int
	min int
}

func (v *intValue) String() string {
	if v.dst == nil {
		return ""
	}
	return strconv.Itoa(*v.dst)
}

func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("want an integer")
	}
	if n < v.min {
		return fmt.Errorf("must be at least %d", v.min)
	}
	*v.dst = n
	return nil
}

type floatValue struct {
	dst      *float64
	min, max float64
}

func (v *floatValue) String() string {
	if v.dst == nil {
		return ""
	}
	return strconv.FormatFloat(*v.dst, 'g', -1, 64)
}

func (v *floatValue) Set(s string) error {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != f { // f != f: NaN
		return errors.New("want a number")
	}
	if f < v.min || f > v.max {
		return fmt.Errorf("want a number from %g to %g", v.min, v.max)
	}
	*v.dst = f
	return nil
}

type policyValue struct{ dst *bool }

func (v *policyValue) String() string {
	if v.dst != nil && *v.dst {
		return "strict"
	}
	return "failopen"
}

func (v *policyValue) Set(s string) error {
	switch strings.ToLower(s) {
	case "failopen", "fail-open":
		*v.dst = false
	case "strict":
		*v.dst = true
	default:
		return errors.New("want failopen or strict")
	}
	return nil
}

// onOffValue is a switch that is on by default; off records true in *off.
type onOffValue struct{ off *bool }

func (v *onOffValue) String() string {
	if v.off != nil && *v.off {
		return "off"
	}
	return "on"
}

func (v *onOffValue) Set(s string) error {
	switch strings.ToLower(s) {
	case "on", "true", "1":
		*v.off = false
	case "off", "false", "0":
		*v.off = true
	default:
		return errors.New("want on or off")
	}
	return nil
}

type levelValue struct{ dst *zapcore.Level }

func (v *levelValue) String() string {
	if v.dst == nil {
		return ""
	}
	return v.dst.String()
}

func (v *levelValue) Set(s string) error {
	l, err := zapcore.ParseLevel(s)
	if err != nil || l > zapcore.ErrorLevel {
		return errors.New("want debug, info, warn or error")
	}
	*v.dst = l
	return nil
}

// applyConfigFile sets, from path, the flags that skip says were not given
// elsewhere. A line is "name=value" (or "name value"); a repeatable flag may
// appear on several lines.
func applyConfigFile(path string, specs []flagSpec, skip func(name string) bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return usageErrorf("read --config: %w", err)
	}
	byName := make(map[string]flagSpec, len(specs))
	for _, s := range specs {
		byName[s.name] = s
	}
	for i, line := range strings.Split(string(data), "\n") {
		line, _, _ = strings.Cut(line, "#")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		name, value, _ := strings.Cut(line, "=")
		if !strings.Contains(line, "=") {
			name, value, _ = strings.Cut(line, " ")
		}
		name, value = strings.TrimPrefix(strings.TrimSpace(name), "--"), strings.TrimSpace(value)
		s, ok := byName[name]
		if !ok || name == "config" {
			return usageErrorf("%s:%d: unknown setting %q", path, i+1, name)
		}
		if skip(name) {
			continue
		}
		if err := s.value.Set(value); err != nil {
			return usageErrorf("%s:%d: invalid value %q for %s: %w", path, i+1, value, name, err)
		}
	}
	return nil
}
