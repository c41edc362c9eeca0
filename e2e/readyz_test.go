package e2e

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// sockProxy relays a unix socket to the Docker socket, so a test can take
// "Docker" away from sidedns and give it back.
type sockProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// startSockProxy listens on path and relays every connection to target. It
// closes when the test ends.
func startSockProxy(t testing.TB, path, target string) *sockProxy {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("listen on proxy socket: %v", err)
	}
	p := &sockProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

func (p *sockProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("unix", p.target)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c, up) {
			return
		}
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

// track registers a connection pair, unless the proxy closed meanwhile.
func (p *sockProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

// pipe copies one way; when either side ends, both close (Docker's event
// stream and hijacked connections must not linger half-open).
func (p *sockProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// Close stops accepting (removing the socket file) and cuts every relayed
// connection. It is safe to call twice.
func (p *sockProxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.ln.Close()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestReadyzFollowsFirstSync: /readyz is 503 until the first Docker sync while
// sidedns already serves, turns 200 once Docker is reachable, and stays 200
// (serving the last table) after Docker goes away again.
func TestReadyzFollowsFirstSync(t *testing.T) {
	requireDocker(t)
	sfx := randSuffix()
	n := createNetwork(t, "sidedns-test-"+sfx+"-rz")
	// The container never resolves on its own; --dns names the gateway.
	web := runContainer(t, ContainerOpts{Name: "sidedns-test-" + sfx + "-web", Network: n.Name, DNS: []string{n.Gateway.String()}})
	webIP := web.IPs[n.Name]
	up := startFakeUpstream(t)

	// A short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "sdrz-")
	if err != nil {
		t.Fatalf("create socket dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "docker.sock")
	s := startSidednsWithDocker(t, up, "unix://"+sock)

	forwards := func(t *testing.T) {
		t.Helper()
		r, err := query(t, s.DNSAddr, upstreamName, dns.TypeA)
		if err != nil || !slices.Equal(answerAddrs(r), []string{upstreamAddr}) {
			t.Errorf("forwarded %s = %v %v, want [%s]", upstreamName, r, err, upstreamAddr)
		}
	}

	t.Run("no docker yet", func(t *testing.T) {
		if code := httpStatus(s.HTTPAddr, "/readyz"); code != http.StatusServiceUnavailable {
			t.Errorf("/readyz = %d before any Docker sync, want 503", code)
		}
		if code := httpStatus(s.HTTPAddr, "/healthz"); code != http.StatusOK {
			t.Errorf("/healthz = %d, want 200", code)
		}
		forwards(t)
		if hostSees(t, s, web.Name, webIP) {
			t.Errorf("%s resolved before sidedns could reach Docker", web.Name)
		}
	})

	proxy := startSockProxy(t, sock, dockerSock)
	t.Run("docker reachable", func(t *testing.T) {
		// The watcher retries with a doubling backoff; a few seconds suffice.
		took, ok := waitFor(15*time.Second, func() bool { return readyz(s.HTTPAddr) })
		if !ok {
			t.Fatalf("/readyz never turned 200 after Docker became reachable")
		}
		t.Logf("ready %v after the socket appeared", took.Round(10*time.Millisecond))
		waitVisible(t, s, n.Name, web)
	})
	if t.Failed() {
		return
	}

	// The watcher logs this once per outage: one was the missing socket.
	const lost = "docker watch interrupted"
	outages := strings.Count(s.Log(), lost)
	proxy.Close()
	t.Run("docker gone", func(t *testing.T) {
		// Wait until sidedns has noticed, so "still ready" is not vacuous.
		if _, ok := waitFor(10*time.Second, func() bool {
			return strings.Count(s.Log(), lost) > outages
		}); !ok {
			t.Errorf("sidedns never logged losing Docker after the socket closed")
		}
		for range 5 {
			if code := httpStatus(s.HTTPAddr, "/readyz"); code != http.StatusOK {
				t.Fatalf("/readyz = %d after Docker went away, want 200 (serving the last table)", code)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !hostSees(t, s, web.Name, webIP) {
			r, err := query(t, s.DNSAddr, web.Name, dns.TypeA)
			t.Errorf("%s not served from the last table: %v %v", web.Name, r, err)
		}
		forwards(t)
	})
}
