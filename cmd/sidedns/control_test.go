package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/dockerwatch/dockerfake"
)

// fakeDocker serves a fake Docker engine on a unix socket and points
// DOCKER_HOST at it.
func fakeDocker(t *testing.T) *dockerfake.Engine {
	t.Helper()
	e := dockerfake.New(dockerfake.Options{})
	t.Setenv("DOCKER_HOST", "unix://"+dockerfake.ServeTemp(t, e))
	return e
}

func startReplica(e *dockerfake.Engine, n int, labels map[string]string) string {
	l := map[string]string{"com.docker.compose.project": "shop", "com.docker.compose.service": "web"}
	for k, v := range labels {
		l[k] = v
	}
	return e.StartContainer(dockerfake.ContainerSpec{
		Name:     fmt.Sprintf("shop-web-%d", n),
		Networks: map[string]dockerfake.Endpoint{"shopnet": {IP: fmt.Sprintf("10.77.0.%d", n+1), Aliases: []string{"web"}}},
		Labels:   l,
	})
}

// aAddrs asks name over UDP and returns the A addresses in answer order,
// none when the query fails.
func aAddrs(t *testing.T, server, name string) []string {
	t.Helper()
	c := &dns.Client{Timeout: time.Second}
	r, _, err := c.Exchange(new(dns.Msg).SetQuestion(name, dns.TypeA), server)
	if err != nil {
		t.Logf("query %s: %v", name, err)
		return nil
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

func sortedAddrs(t *testing.T, server, name string) []string {
	out := aAddrs(t, server, name)
	slices.Sort(out)
	return out
}

// ctl runs a control subcommand against socket and returns its exit code
// and output.
func ctl(socket string, args ...string) (int, string) {
	var out syncBuffer
	code := run(append([]string{args[0], "--control-socket", socket}, args[1:]...), envOf(), &out, &out, nil)
	return code, out.String()
}

// The CLI drives a running sidedns over its socket: a drain takes a replica
// out of answers when the command returns, and survives a restart; weights
// and tags from labels shape the answers; watch prints each change.
func TestControlCommands(t *testing.T) {
	e := fakeDocker(t)
	startReplica(e, 1, nil)
	startReplica(e, 2, map[string]string{"sidedns.tags": "canary"})
	dir := t.TempDir()
	socket := filepath.Join(dir, "run", "control.sock")
	up := startFakeUpstream(t)
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := []string{"--listen", dnsAddr, "--upstream", up.addr, "--http", "off", "--control-socket", socket}
	logs, sigs := runInBackground(t, args)
	waitFor(t, "both replicas in answers", func() bool { return len(aAddrs(t, dnsAddr, "web.shop.docker.")) == 2 })

	if got := sortedAddrs(t, dnsAddr, "canary.web.shop.docker."); !slices.Equal(got, []string{"10.77.0.3"}) {
		t.Errorf("canary.web.shop.docker = %v, want the tagged replica only", got)
	}
	if code, out := ctl(socket, "drain", "shop-web-1"); code != 0 || out != "shop-web-1 drained\n" {
		t.Fatalf("drain: %d %q", code, out)
	}
	for range 4 { // every rotation
		if got := aAddrs(t, dnsAddr, "web.shop.docker."); !slices.Equal(got, []string{"10.77.0.3"}) {
			t.Fatalf("after drain web.shop.docker = %v", got)
		}
	}
	code, out := ctl(socket, "ls")
	if code != 0 || !strings.Contains(out, "drained*") || !strings.Contains(out, "canary") {
		t.Errorf("ls: %d\n%s", code, out)
	}

	// Watch prints the current set, then each change.
	var watchOut syncBuffer
	watchSigs := make(chan os.Signal, 1)
	watchDone := make(chan int, 1)
	go func() {
		watchDone <- run([]string{"watch", "--control-socket", socket, "web.shop.docker"}, envOf(), &watchOut, &watchOut, watchSigs)
	}()
	waitFor(t, "the first watch line", func() bool { return strings.Count(watchOut.String(), "\n") >= 1 })
	ctl(socket, "undrain", "shop-web-1")
	waitFor(t, "the second watch line", func() bool { return strings.Count(watchOut.String(), "\n") >= 2 })
	ctl(socket, "drain", "shop-web-1")
	waitFor(t, "the third watch line", func() bool { return strings.Count(watchOut.String(), "\n") >= 3 })
	watchSigs <- syscall.SIGINT
	if code := <-watchDone; code != 0 {
		t.Errorf("watch exited %d", code)
	}
	want := "web.shop.docker: 10.77.0.3 (shop-web-2, weight 100)\n" +
		"web.shop.docker: 10.77.0.2 (shop-web-1, weight 100), 10.77.0.3 (shop-web-2, weight 100)\n" +
		"web.shop.docker: 10.77.0.3 (shop-web-2, weight 100)\n"
	if got := watchOut.String(); got != want {
		t.Errorf("watch printed\n%s\nwant\n%s", got, want)
	}

	// The drain survives a restart.
	sigs <- syscall.SIGTERM
	waitFor(t, "sidedns to stop", func() bool { return strings.Contains(logs.String(), `"stopped"`) })
	runInBackground(t, args)
	waitFor(t, "answers after the restart", func() bool { return len(aAddrs(t, dnsAddr, "web.shop.docker.")) > 0 })
	if got := aAddrs(t, dnsAddr, "web.shop.docker."); !slices.Equal(got, []string{"10.77.0.3"}) {
		t.Errorf("after restart web.shop.docker = %v, want shop-web-1 still drained", got)
	}

	// Destroyed with its container: a new shop-web-1 is not drained.
	e.StopContainer("shop-web-1")
	startReplica(e, 1, nil)
	waitFor(t, "the new shop-web-1 in answers", func() bool { return len(aAddrs(t, dnsAddr, "web.shop.docker.")) == 2 })
	state, err := os.ReadFile(filepath.Join(dir, "run", "overrides.json"))
	if err != nil || strings.Contains(string(state), "shop-web-1") {
		t.Errorf("state file after the container was destroyed: %s, %v", state, err)
	}
}

func TestControlCommandErrors(t *testing.T) {
	e := fakeDocker(t)
	startReplica(e, 1, nil)
	socket := filepath.Join(t.TempDir(), "control.sock")
	up := startFakeUpstream(t)
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runInBackground(t, []string{"--listen", dnsAddr, "--upstream", up.addr, "--http", "off", "--control-socket", socket})
	waitFor(t, "the replica in answers", func() bool { return len(aAddrs(t, dnsAddr, "web.shop.docker.")) == 1 })
	tests := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"drain"}, 2, "want one container"},
		{[]string{"drain", "a", "b"}, 2, "want one container"},
		{[]string{"weight", "shop-web-1", "x"}, 2, "want 0 to 1000"},
		{[]string{"weight", "shop-web-1", "1001"}, 1, "InvalidArgument"},
		{[]string{"weight", "shop-web-1", "250"}, 0, "shop-web-1 weight 250\n"},
		{[]string{"drain", "nope"}, 1, `NotFound: no container "nope"`},
		{[]string{"ls", "extra"}, 2, "no arguments"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out := ctl(socket, tt.args...)
			if code != tt.code || !strings.Contains(out, tt.out) {
				t.Errorf("exit %d, output %q; want %d and %q", code, out, tt.code, tt.out)
			}
		})
	}
	if code, out := ctl(filepath.Join(t.TempDir(), "missing.sock"), "ls"); code != 1 {
		t.Errorf("ls on a missing socket: exit %d, %q", code, out)
	}
}

// A second sidedns on a socket that another one serves runs without it,
// rather than failing or taking it over.
func TestControlSocketInUse(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent.sock")
	socket := filepath.Join(t.TempDir(), "control.sock")
	up := startFakeUpstream(t)
	first := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runInBackground(t, []string{"--listen", first, "--upstream", up.addr, "--http", "off", "--control-socket", socket})
	waitFor(t, "the first sidedns", func() bool { code, _ := ctl(socket, "ls"); return code == 0 })
	second := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	logs, _ := runInBackground(t, []string{"--listen", second, "--upstream", up.addr, "--http", "off", "--control-socket", socket})
	checkForwarded(t, waitForAnswer(t, "udp", second, "example.org."))
	if !strings.Contains(logs.String(), "serving without the control socket") {
		t.Errorf("second sidedns log:\n%s", logs)
	}
	if code, out := ctl(socket, "ls"); code != 0 {
		t.Errorf("the first sidedns lost its socket: %d %s", code, out)
	}
}
