package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fakeUpstream is an in-process DNS server on 127.0.0.1 that answers every A
// query with 192.0.2.1. Tests forward only to it, never to the host resolver.
type fakeUpstream struct {
	addr    string
	queries atomic.Int64
}

func startFakeUpstream(tb testing.TB) *fakeUpstream {
	tb.Helper()
	f := &fakeUpstream{}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		f.queries.Add(1)
		m := new(dns.Msg).SetReply(req)
		m.RecursionAvailable = true
		if req.Question[0].Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{
				Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   net.IPv4(192, 0, 2, 1),
			}}
		}
		w.WriteMsg(m)
	})
	// UDP takes a free port; TCP on the same port is almost always free too,
	// but other packages' tests run at the same time: retry when it is not.
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	for range 20 {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			tb.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		tb.Fatalf("listen tcp next to udp: %v", err)
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		tb.Cleanup(func() { srv.Shutdown() })
	}
	f.addr = pc.LocalAddr().String()
	return f
}

// freePort returns a port that was free on 127.0.0.1 for both UDP and TCP.
func freePort(tb testing.TB) int {
	tb.Helper()
	for range 10 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		pc.Close()
		if err == nil {
			ln.Close()
			return port
		}
	}
	tb.Fatal("no free port on 127.0.0.1")
	return 0
}

// syncBuffer collects logs written by another goroutine or process.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitForAnswer queries addr until the server answers, and returns the reply.
func waitForAnswer(tb testing.TB, network, addr, name string) *dns.Msg {
	tb.Helper()
	c := &dns.Client{Net: network, Timeout: 500 * time.Millisecond}
	var r *dns.Msg
	waitFor(tb, "an answer from "+addr, func() bool {
		var err error
		r, _, err = c.Exchange(new(dns.Msg).SetQuestion(name, dns.TypeA), addr)
		return err == nil
	})
	return r
}

func checkForwarded(tb testing.TB, r *dns.Msg) {
	tb.Helper()
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
		tb.Fatalf("got %v, want the fake upstream's 192.0.2.1", r)
	}
}

// TestRunForwardsReloadsAndDrains runs the whole wiring in-process, without a
// Docker daemon.
func TestRunForwardsReloadsAndDrains(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent.sock")
	up := startFakeUpstream(t)
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := []string{"--listen", dnsAddr, "--upstream", up.addr, "--http", "off", "--log-level", "debug"}

	var logs syncBuffer
	sigs := make(chan os.Signal, 1)
	code := make(chan int, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		code <- run(args, envOf(), &logs, &logs, sigs)
	}()
	t.Cleanup(func() {
		select {
		case <-finished:
		default:
			sigs <- syscall.SIGTERM
			<-finished
		}
	})

	checkForwarded(t, waitForAnswer(t, "udp", dnsAddr, "example.test."))
	checkForwarded(t, waitForAnswer(t, "tcp", dnsAddr, "other.example.test."))
	if up.queries.Load() != 2 {
		t.Errorf("fake upstream saw %d queries, want 2", up.queries.Load())
	}
	// The second time comes from the cache.
	checkForwarded(t, waitForAnswer(t, "udp", dnsAddr, "example.test."))
	if up.queries.Load() != 2 {
		t.Errorf("fake upstream saw %d queries after a repeat, want 2 (cached)", up.queries.Load())
	}

	sigs <- syscall.SIGHUP
	waitFor(t, "the reload log line", func() bool { return strings.Contains(logs.String(), `"msg":"reloaded"`) })
	checkForwarded(t, waitForAnswer(t, "udp", dnsAddr, "after-reload.test."))

	sigs <- syscall.SIGTERM
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("exit code %d after SIGTERM, want 0\n%s", c, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after SIGTERM")
	}
	if !strings.Contains(logs.String(), `"msg":"stopped"`) {
		t.Errorf("no stop log line:\n%s", logs.String())
	}
}

func TestRunBindFailure(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent.sock")
	up := startFakeUpstream(t)
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	var out syncBuffer
	code := run([]string{"--listen", busy.LocalAddr().String(), "--upstream", up.addr, "--http", "off"}, envOf(), &out, &out, nil)
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	want := "sidedns: listen udp " + busy.LocalAddr().String() + ": bind: address already in use (use --listen to pick another address)"
	if !strings.Contains(out.String(), want) {
		t.Errorf("output does not say %q:\n%s", want, out.String())
	}
}

func TestRunNoUsableResolvConf(t *testing.T) {
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(rc, []byte("nameserver 127.0.0.11\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	code := run([]string{"--listen", "127.0.0.1:0", "--resolv-conf", rc, "--http", "off"}, envOf(), &out, &out, nil)
	if code != 2 {
		t.Errorf("exit code %d, want 2", code)
	}
	if !strings.Contains(out.String(), "pass --upstream") {
		t.Errorf("output does not suggest --upstream:\n%s", out.String())
	}
}

// TestBinary builds sidedns and runs it as a user would, without Docker.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "sidedns")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	up := startFakeUpstream(t)
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(bin, "--listen", dnsAddr, "--http", httpAddr)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SIDEDNS_") && !strings.HasPrefix(kv, "DOCKER_") {
			env = append(env, kv)
		}
	}
	// The upstream goes through the env twin, to cover it end to end.
	cmd.Env = append(env, "DOCKER_HOST=unix:///nonexistent.sock", "SIDEDNS_UPSTREAM="+up.addr, "SIDEDNS_CONTROL_SOCKET=off")
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	checkForwarded(t, waitForAnswer(t, "udp", dnsAddr, "example.test."))
	checkForwarded(t, waitForAnswer(t, "tcp", dnsAddr, "example.test."))

	for path, want := range map[string]int{"/healthz": http.StatusOK, "/readyz": http.StatusServiceUnavailable} {
		resp, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d (no Docker daemon)", path, resp.StatusCode, want)
		}
	}

	// Without a daemon the watcher logs the reason once, however often it retries.
	const dockerWarn = "docker watch interrupted"
	waitFor(t, "the docker warning", func() bool { return strings.Contains(logs.String(), dockerWarn) })
	time.Sleep(500 * time.Millisecond) // a few retries at the initial backoff
	if n := strings.Count(logs.String(), dockerWarn); n != 1 {
		t.Errorf("docker warning logged %d times, want once:\n%s", n, logs.String())
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		var exit *exec.ExitError
		if errors.As(err, &exit) || err != nil {
			t.Errorf("exit after SIGTERM: %v, want status 0\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("sidedns did not exit after SIGTERM\n%s", logs.String())
	}
}

func TestHealthcheck(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
		}
	}))
	defer ok.Close()
	host := strings.TrimPrefix(ok.URL, "http://")
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want int
	}{
		{"ready", []string{ok.URL + "/readyz"}, nil, 0},
		{"not found", []string{ok.URL + "/nope"}, nil, 1},
		{"refused", []string{"http://127.0.0.1:1/readyz"}, nil, 1},
		{"default URL from env twin", nil, map[string]string{"SIDEDNS_HTTP": host}, 0},
		{"two URLs", []string{"a", "b"}, nil, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr strings.Builder
			got := run(append([]string{"healthcheck"}, tt.args...), func(k string) string { return tt.env[k] }, io.Discard, &stderr, nil)
			if got != tt.want {
				t.Fatalf("exit %d, want %d (stderr %q)", got, tt.want, stderr.String())
			}
		})
	}
}

// SIGHUP re-reads --config: a new allow list and TTL apply without a restart.
func TestReloadFromConfigFile(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent.sock")
	up := startFakeUpstream(t)
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := filepath.Join(t.TempDir(), "sidedns.conf")
	write := func(body string) {
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("# only a host that is not us\nallow = 127.0.0.2/32\nttl=7s\n")
	args := []string{"--listen", dnsAddr, "--upstream", up.addr, "--http", "off", "--config", conf}
	logs, sigs := runInBackground(t, args)
	soa := func() *dns.Msg {
		t.Helper()
		var r *dns.Msg
		waitFor(t, "an answer", func() bool {
			m := new(dns.Msg).SetQuestion("docker.", dns.TypeSOA)
			var err error
			r, _, err = (&dns.Client{Timeout: time.Second}).Exchange(m, dnsAddr)
			return err == nil
		})
		return r
	}
	if r := soa(); r.Rcode != dns.RcodeRefused {
		t.Fatalf("rcode %s from a source outside the configured allow list", dns.RcodeToString[r.Rcode])
	}
	write("allow=127.0.0.0/8\nttl=9s\n")
	sigs <- syscall.SIGHUP
	waitFor(t, "the reload", func() bool { return strings.Contains(logs.String(), `"msg":"reloaded"`) })
	r := soa()
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 9 {
		t.Fatalf("after reload: %v; want the SOA with TTL 9", r)
	}
	write("allow=127.0.0.0/8\nttl=9s\nnot-a-flag=1\n")
	sigs <- syscall.SIGHUP
	waitFor(t, "the reload error", func() bool { return strings.Contains(logs.String(), "unknown setting") })
	if r := soa(); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("a bad config file changed the running settings: %v", r)
	}
}

// runInBackground runs sidedns in-process with args and no environment; it
// is stopped with SIGTERM when the test ends.
func runInBackground(t *testing.T, args []string) (*syncBuffer, chan<- os.Signal) {
	t.Helper()
	logs := new(syncBuffer)
	sigs := make(chan os.Signal, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		// No control socket unless the test names one: the default path is
		// the machine's, not the test's. (The last --control-socket wins.)
		run(append([]string{"--control-socket", "off"}, args...), envOf(), logs, logs, sigs)
	}()
	t.Cleanup(func() {
		sigs <- syscall.SIGTERM
		<-finished
	})
	return logs, sigs
}
