package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/sidedns/sidedns/upstream"
)

func envOf(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func mustSpec(tb testing.TB, s string) upstream.Spec {
	tb.Helper()
	spec, err := upstream.ParseSpec(s)
	if err != nil {
		tb.Fatal(err)
	}
	return spec
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := parseConfig(nil, envOf())
	if err != nil {
		t.Fatal(err)
	}
	want := config{
		ResolvConf:     "/etc/resolv.conf",
		HTTP:           "127.0.0.1:8053",
		Domain:         "docker.",
		TTL:            5 * time.Second,
		CacheSize:      100000,
		CacheMaxTTL:    24 * time.Hour,
		StaleWindow:    24 * time.Hour,
		Timeout:        2 * time.Second,
		MaxConcurrent:  1024,
		RateLimit:      10000,
		LogFormat:      "json",
		LogLevel:       zapcore.InfoLevel,
		ResyncInterval: 5 * time.Minute,
		ControlSocket:  "/run/sidedns/control.sock",
		clusterConfig: clusterConfig{
			ClusterPrefix: "/sidedns/", ClusterLeaseTTL: 15 * time.Second, ClusterStaleWindow: 5 * time.Minute,
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}
}

func TestParseConfig(t *testing.T) {
	defaults, err := parseConfig(nil, envOf())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		env  func(string) string
		want func(*config)
	}{
		{"env twin", nil, envOf("SIDEDNS_TTL", "10", "SIDEDNS_HEALTH_POLICY", "strict", "SIDEDNS_CACHE_SIZE", "5",
			"SIDEDNS_RESOLV_CONF", "/tmp/r.conf", "SIDEDNS_LOG_QUERIES", "0.25", "SIDEDNS_STALE_WINDOW", "0"),
			func(c *config) {
				c.TTL, c.StrictHealth, c.CacheSize, c.ResolvConf, c.LogQueries, c.StaleWindow =
					10*time.Second, true, 5, "/tmp/r.conf", 0.25, 0
			}},
		{"flag overrides env", []string{"--ttl", "7s", "--log-format=console"},
			envOf("SIDEDNS_TTL", "10", "SIDEDNS_LOG_FORMAT", "json", "SIDEDNS_LOG_LEVEL", "debug"),
			func(c *config) { c.TTL, c.LogFormat, c.LogLevel = 7*time.Second, "console", zapcore.DebugLevel }},
		{"repeated flags", []string{"--listen", "127.0.0.1:5300", "--listen", "[::1]", "--upstream", "192.0.2.1", "--upstream", "tcp://192.0.2.2:5353"}, envOf(),
			func(c *config) {
				c.Listen = []string{"127.0.0.1:5300", "[::1]:53"}
				c.Upstream = []upstream.Spec{mustSpec(t, "192.0.2.1"), mustSpec(t, "tcp://192.0.2.2:5353")}
			}},
		{"comma-separated env", nil, envOf("SIDEDNS_ALLOW", "10.0.0.0/8, 192.0.2.7", "SIDEDNS_UPSTREAM", "192.0.2.1,192.0.2.2:5353"),
			func(c *config) {
				c.Allow = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32")}
				c.Upstream = []upstream.Spec{mustSpec(t, "192.0.2.1"), mustSpec(t, "192.0.2.2:5353")}
			}},
		{"repeatable flag replaces env list", []string{"--allow", "172.16.0.0/12"}, envOf("SIDEDNS_ALLOW", "10.0.0.0/8"),
			func(c *config) { c.Allow = []netip.Prefix{netip.MustParsePrefix("172.16.0.0/12")} }},
		{"cidr is masked", []string{"--allow", "172.18.3.4/16"}, envOf(),
			func(c *config) { c.Allow = []netip.Prefix{netip.MustParsePrefix("172.18.0.0/16")} }},
		{"durations", []string{"--cache-min-ttl", "30", "--cache-max-ttl", "1h", "--timeout", "500ms", "--resync-interval", "90s"}, envOf(),
			func(c *config) {
				c.CacheMinTTL, c.CacheMaxTTL, c.Timeout, c.ResyncInterval = 30*time.Second, time.Hour, 500*time.Millisecond, 90*time.Second
			}},
		{"domain made canonical", []string{"--domain", "Local.Test"}, envOf(), func(c *config) { c.Domain = "local.test." }},
		{"http off", nil, envOf("SIDEDNS_HTTP", "off"), func(c *config) { c.HTTP = "" }},
		{"http empty flag", []string{"--http="}, envOf(), func(c *config) { c.HTTP = "" }},
		{"rate limit off", []string{"--rate-limit", "0"}, envOf(), func(c *config) { c.RateLimit = 0 }},
		{"service map off", []string{"--service-map", "off"}, envOf(), func(c *config) { c.NoServiceMap = true }},
		{"service map on over env", []string{"--service-map=on"}, envOf("SIDEDNS_SERVICE_MAP", "off"), func(c *config) {}},
		{"service map off in env", nil, envOf("SIDEDNS_SERVICE_MAP", "false"), func(c *config) { c.NoServiceMap = true }},
		{"policy", []string{"--health-policy", "failopen"}, envOf("SIDEDNS_HEALTH_POLICY", "strict"), func(c *config) {}},
		{"control socket off", nil, envOf("SIDEDNS_CONTROL_SOCKET", "off"), func(c *config) { c.ControlSocket = "" }},
		{"control over tcp", []string{"--control-tcp", "127.0.0.1:8054", "--control-ca", "ca.pem", "--control-cert", "c.pem",
			"--control-key", "k.pem", "--state-file", "/var/lib/sidedns/o.json"}, envOf(),
			func(c *config) {
				c.ControlTCP, c.ControlCA, c.ControlCert, c.ControlKey, c.StateFile =
					"127.0.0.1:8054", "ca.pem", "c.pem", "k.pem", "/var/lib/sidedns/o.json"
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConfig(tt.args, tt.env)
			if err != nil {
				t.Fatalf("parseConfig: %v", err)
			}
			want := defaults
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  func(string) string
		want string // in the message
	}{
		{"bad cidr", []string{"--allow", "10.0.0.0/33"}, envOf(), `"10.0.0.0/33" is not a CIDR`},
		{"bad cidr in env", nil, envOf("SIDEDNS_ALLOW", "10.0.0.0/8,nope"), `SIDEDNS_ALLOW (--allow)`},
		{"bad duration", []string{"--timeout", "soon"}, envOf(), `flag --timeout: want a duration`},
		{"negative duration", []string{"--stale-window", "-1s"}, envOf(), `must not be negative`},
		{"zero ttl", []string{"--ttl", "0"}, envOf(), `must be at least 1s`},
		{"fractional ttl", nil, envOf("SIDEDNS_TTL", "2.5s"), `must be whole seconds`},
		{"bad upstream", []string{"--upstream", "ftp://192.0.2.1"}, envOf(), `unknown scheme`},
		{"upstream host name", []string{"--upstream", "dns.example"}, envOf(), `parse upstream "dns.example"`},
		{"bad policy", []string{"--health-policy", "lenient"}, envOf(), `want failopen or strict`},
		{"bad service map", []string{"--service-map", "maybe"}, envOf(), `want on or off`},
		{"bad policy in env", nil, envOf("SIDEDNS_HEALTH_POLICY", "x"), `SIDEDNS_HEALTH_POLICY`},
		{"bad listen", []string{"--listen", "localhost:53"}, envOf(), `want ip[:port]`},
		{"control tcp without certs", []string{"--control-tcp", "127.0.0.1:8054"}, envOf(), `--control-tcp needs --control-ca`},
		{"control tcp without host", []string{"--control-tcp", ":8054"}, envOf(), `want ip:port`},
		{"empty listen", []string{"--listen", ""}, envOf(), `empty list`},
		{"bad http", []string{"--http", "8053"}, envOf(), `want ip:port`},
		{"bad domain", []string{"--domain", "."}, envOf(), `root zone`},
		{"bad log format", []string{"--log-format", "xml"}, envOf(), `want one of json, console`},
		{"bad log level", []string{"--log-level", "fatal"}, envOf(), `want debug, info, warn or error`},
		{"log rate above 1", []string{"--log-queries", "2"}, envOf(), `from 0 to 1`},
		{"log rate NaN", []string{"--log-queries", "NaN"}, envOf(), `want a number`},
		{"negative cache", []string{"--cache-size", "-1"}, envOf(), `at least 0`},
		{"zero concurrency", nil, envOf("SIDEDNS_MAX_CONCURRENT", "0"), `at least 1`},
		{"bad rate limit", []string{"--rate-limit", "lots"}, envOf(), `want a number`},
		{"min above max", []string{"--cache-min-ttl", "2h", "--cache-max-ttl", "1h"}, envOf(), `above --cache-max-ttl`},
		{"unknown flag", []string{"--colour"}, envOf(), `not defined: --colour`},
		{"positional", []string{"serve"}, envOf(), `unexpected argument "serve"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig(tt.args, tt.env)
			if err == nil {
				t.Fatal("parseConfig succeeded")
			}
			if !errors.As(err, new(usageError)) {
				t.Errorf("error %v is not a usage error (exit 2)", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		if _, err := parseConfig([]string{arg}, envOf()); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("parseConfig(%s) = %v, want flag.ErrHelp", arg, err)
		}
	}
	var out bytes.Buffer
	if code := run([]string{"--help"}, envOf(), &out, &out, nil); code != 0 {
		t.Errorf("--help exits %d, want 0", code)
	}
	help := out.String()
	var c config
	for _, s := range flagSpecs(&c) {
		if !strings.Contains(help, "--"+s.name+" ") || !strings.Contains(help, "env "+envName(s.name)) {
			t.Errorf("--help does not document --%s with its env twin %s", s.name, envName(s.name))
		}
	}
	for _, def := range []string{`(default "5s")`, `(default "100000")`, `(default "24h")`, `(default "failopen")`, "127.0.0.1:53"} {
		if !strings.Contains(help, def) {
			t.Errorf("--help does not show %s", def)
		}
	}
}

func TestEnvName(t *testing.T) {
	for flagName, want := range map[string]string{
		"listen": "SIDEDNS_LISTEN", "cache-min-ttl": "SIDEDNS_CACHE_MIN_TTL", "resolv-conf": "SIDEDNS_RESOLV_CONF",
	} {
		if got := envName(flagName); got != want {
			t.Errorf("envName(%q) = %q, want %q", flagName, got, want)
		}
	}
}

func TestBadValueExitsTwo(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"--allow", "10.0.0.0/33"}, envOf(), &out, &out, nil); code != 2 {
		t.Errorf("exit code %d, want 2", code)
	}
	if !strings.Contains(out.String(), "--help") {
		t.Errorf("message %q does not point at --help", out.String())
	}
}

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	file := func(body string) string {
		p := filepath.Join(dir, fmt.Sprint(len(body))+".conf")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	conf := file("ttl=7s\n--domain internal.\nallow=10.0.0.0/8\nallow=10.1.0.0/16 # two lines\n")
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantTTL time.Duration
		wantErr string
	}{
		{name: "file", args: []string{"--config", conf}, wantTTL: 7 * time.Second},
		{name: "flag wins", args: []string{"--config", conf, "--ttl", "3s"}, wantTTL: 3 * time.Second},
		{name: "env wins", args: []string{"--config", conf}, env: map[string]string{"SIDEDNS_TTL": "4s"}, wantTTL: 4 * time.Second},
		{name: "unknown setting", args: []string{"--config", file("tll=3s\n")}, wantErr: `:1: unknown setting "tll"`},
		{name: "bad value", args: []string{"--config", file("\nttl=soon\n")}, wantErr: `:2: invalid value "soon" for ttl`},
		{name: "missing file", args: []string{"--config", filepath.Join(dir, "nope")}, wantErr: "read --config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.TTL != tt.wantTTL || c.Domain != "internal." || len(c.Allow) != 2 {
				t.Fatalf("ttl %v domain %q allow %v", c.TTL, c.Domain, c.Allow)
			}
		})
	}
}
