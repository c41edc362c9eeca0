package upstream

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// seenQuery is one query a fake upstream received.
type seenQuery struct {
	Net string // "udp" or "tcp" (tls counts as tcp)
	Msg *dns.Msg
}

// fakeUpstream is a real miekg/dns server on 127.0.0.1, UDP and TCP on one
// port (or TLS only). Its behaviour can be switched while it runs, and it
// records every query and counts accepted stream connections.
type fakeUpstream struct {
	Addr     netip.AddrPort
	handler  atomic.Pointer[dns.HandlerFunc]
	accepted atomic.Int32

	mu   sync.Mutex
	seen []seenQuery
	// arrived has a token after each query, for waits on the next one.
	arrived chan struct{}
}

// setHandler switches the fake's behaviour.
func (f *fakeUpstream) setHandler(h dns.HandlerFunc) { f.handler.Store(&h) }

func (f *fakeUpstream) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	network := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	f.mu.Lock()
	f.seen = append(f.seen, seenQuery{Net: network, Msg: r.Copy()})
	f.mu.Unlock()
	poke(f.arrived)
	(*f.handler.Load())(w, r)
}

// queries returns the queries received for name (case-insensitive), which
// leaves out health probes.
func (f *fakeUpstream) queries(name string) []seenQuery {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []seenQuery
	for _, q := range f.seen {
		if strings.EqualFold(q.Msg.Question[0].Name, name) {
			out = append(out, q)
		}
	}
	return out
}

// spec says how to reach the fake over proto.
func (f *fakeUpstream) spec(proto string) Spec {
	return Spec{Proto: proto, Addr: f.Addr.String(), AddrPort: f.Addr}
}

type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// startFake starts a fake upstream on UDP and TCP of one loopback port.
func startFake(tb testing.TB, h dns.HandlerFunc) *fakeUpstream {
	tb.Helper()
	f := &fakeUpstream{arrived: make(chan struct{}, 1)}
	f.setHandler(h)
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	// UDP takes a free port; TCP on the same port is almost always free too.
	for range 20 {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("listen udp: %v", err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		tb.Fatalf("listen tcp next to udp: %v", err)
	}
	f.Addr = netip.MustParseAddrPort(pc.LocalAddr().String())
	serve(tb, &dns.Server{PacketConn: pc, Handler: f})
	serve(tb, &dns.Server{Listener: countingListener{ln, &f.accepted}, Handler: f})
	return f
}

// startTLSFake starts a DNS-over-TLS fake upstream with a fresh self-signed
// certificate for serverName; the pool trusts it.
func startTLSFake(tb testing.TB, serverName string, h dns.HandlerFunc) (*fakeUpstream, *x509.CertPool) {
	tb.Helper()
	cert, pool := selfSigned(tb, serverName)
	f := &fakeUpstream{arrived: make(chan struct{}, 1)}
	f.setHandler(h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen tcp: %v", err)
	}
	f.Addr = netip.MustParseAddrPort(ln.Addr().String())
	tln := tls.NewListener(countingListener{ln, &f.accepted}, &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	})
	serve(tb, &dns.Server{Net: "tcp-tls", Listener: tln, Handler: f})
	return f, pool
}

func serve(tb testing.TB, srv *dns.Server) {
	tb.Helper()
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan error, 1)
	go func() { done <- srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-done:
		tb.Fatalf("start fake upstream: %v", err)
	}
	tb.Cleanup(func() {
		if err := srv.Shutdown(); err != nil {
			tb.Logf("stop fake upstream: %v", err)
		}
		<-done
	})
}

func selfSigned(tb testing.TB, serverName string) (tls.Certificate, *x509.CertPool) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("generate key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: serverName},
		DNSNames:              []string{serverName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("create certificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("parse certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// answerA answers every A query with ip, echoing the question lower-cased
// (as some servers do), so tests can check the client's case comes back.
func answerA(ip string) dns.HandlerFunc {
	return func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Question[0].Name = strings.ToLower(m.Question[0].Name)
		m.Answer = append(m.Answer, aRecord(m.Question[0].Name, ip))
		w.WriteMsg(m)
	}
}

func aRecord(name, ip string) *dns.A {
	return &dns.A{
		Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
		A:   net.ParseIP(ip).To4(),
	}
}

// answerRcode replies with an empty answer and rcode.
func answerRcode(rcode int) dns.HandlerFunc {
	return func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, rcode)
		w.WriteMsg(m)
	}
}

// blackhole never answers, like a server behind a dropped route.
func blackhole(dns.ResponseWriter, *dns.Msg) {}

// query builds the query the cache would send upstream for name and qtype.
func query(name string, qtype uint16) *dns.Msg {
	return upstreamQuery(name, qtype, dns.ClassINET, false, false)
}

// firstA returns the first A record's address in r, or "".
func firstA(r *dns.Msg) string {
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			return a.A.String()
		}
	}
	return ""
}

// waitOn checks cond each time changed has a token, until it holds or 3 s
// pass.
func waitOn(tb testing.TB, changed <-chan struct{}, what string, cond func() bool) {
	tb.Helper()
	deadline := time.After(3 * time.Second)
	for !cond() {
		select {
		case <-changed:
		case <-deadline:
			tb.Fatalf("timed out waiting for %s", what)
		}
	}
}

// poke leaves a token in ch unless one is already there.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// nopConn is a net.Conn that does nothing, for pool tests.
type nopConn struct{ net.Conn }

func (nopConn) Close() error { return nil }
