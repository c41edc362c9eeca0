// Package etcdtest runs a real etcd cluster on loopback for tests: Debian's
// etcd-server binary (etcd on PATH), members in t.TempDir(), and a TCP proxy
// the test can cut to stage a partition.
package etcdtest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Member is one etcd process.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string
	args      []string
	logPath   string
	t         testing.TB
	health    *http.Client // nil: http.DefaultClient
	cmd       *exec.Cmd
	done      chan struct{}
}

// Cluster is a running etcd cluster.
type Cluster struct {
	Members []*Member
}

// freePort returns a loopback port nobody listens on right now.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start runs an n-member cluster and waits until every member is healthy.
// The members stop when the test ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	return start(t, n, nil)
}

// StartTLS is Start with clients served over TLS with certs (NewCerts), and
// client certificates required.
func StartTLS(t testing.TB, n int, certs *Certs) *Cluster {
	t.Helper()
	return start(t, n, certs)
}

func start(t testing.TB, n int, certs *Certs) *Cluster {
	t.Helper()
	scheme := "http"
	if certs != nil {
		scheme = "https"
	}
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd not found (apt-get install etcd-server): %v", err)
	}
	dir := t.TempDir()
	c := &Cluster{}
	var initial []string
	for i := range n {
		m := &Member{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, freePort(t)),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
			t:         t,
		}
		initial = append(initial, m.Name+"="+m.PeerURL)
		c.Members = append(c.Members, m)
	}
	for _, m := range c.Members {
		m.logPath = filepath.Join(dir, m.Name+".log")
		m.args = []string{bin,
			"--name", m.Name,
			"--data-dir", filepath.Join(dir, m.Name),
			"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new", "--initial-cluster-token", filepath.Base(dir),
			"--snapshot-count", "10000",
		}
		if certs != nil {
			m.args = append(m.args, "--cert-file", certs.ServerCert, "--key-file", certs.ServerKey,
				"--trusted-ca-file", certs.CA, "--client-cert-auth")
			m.health = certs.client(t)
		}
		m.Start()
	}
	t.Cleanup(func() {
		for _, m := range c.Members {
			m.Stop()
		}
	})
	for _, m := range c.Members {
		m.WaitHealthy()
	}
	return c
}

// Endpoints are the client URLs of every member.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.ClientURL)
	}
	return out
}

// Start runs the member (again, on its data directory).
func (m *Member) Start() {
	m.t.Helper()
	log, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		m.t.Fatalf("etcd log: %v", err)
	}
	m.cmd = exec.Command(m.args[0], m.args[1:]...)
	m.cmd.Stdout, m.cmd.Stderr = log, log
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("start etcd %s: %v", m.Name, err)
	}
	m.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		log.Close()
		close(done)
	}(m.cmd, m.done)
}

// Stop ends the member and waits for it; stopping a stopped member is a no-op.
func (m *Member) Stop() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(5 * time.Second):
		m.cmd.Process.Kill()
		<-m.done
	}
	m.cmd = nil
}

// WaitHealthy waits until the member reports healthy (it has a leader).
func (m *Member) WaitHealthy() {
	m.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.ClientURL+"/health", nil)
		hc := m.health
		if hc == nil {
			hc = http.DefaultClient
		}
		resp, err := hc.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), `"true"`) {
				cancel()
				return
			}
		}
		cancel()
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(m.logPath)
	m.t.Fatalf("etcd %s not healthy after 30s; log tail:\n%s", m.Name, tail(string(b), 3000))
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Proxy forwards TCP from a loopback port to a target until cut.
type Proxy struct {
	Addr   string
	target string
	l      net.Listener
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
}

// NewProxy listens on a loopback port and forwards to target (host:port).
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{Addr: l.Addr().String(), target: target, l: l, conns: make(map[net.Conn]struct{})}
	go p.serve()
	t.Cleanup(func() { l.Close(); p.Cut() })
	return p
}

// URL is the proxy as an etcd client endpoint.
func (p *Proxy) URL() string { return "http://" + p.Addr }

func (p *Proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *Proxy) pipe(dst, src net.Conn) {
	io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// Cut closes every connection and refuses new ones: the client sees etcd gone.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
}

// Restore lets connections through again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// HostPort strips the scheme of a client URL.
func HostPort(url string) string {
	return strings.TrimPrefix(strings.TrimPrefix(url, "http://"), "https://")
}
