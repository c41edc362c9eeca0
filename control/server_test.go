package control

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/sidedns/sidedns/control/controlpb"
	"github.com/sidedns/sidedns/resolver"
)

func replica(n string, ip string, weight uint16, tags ...string) resolver.Container {
	return resolver.Container{
		ID: rid(n), Name: "shop-web-" + n, Project: "shop", Service: "web", Weight: weight, Tags: tags,
		Endpoints: []resolver.Endpoint{{NetworkID: "id-shopnet", NetworkName: "shopnet", Aliases: []string{"web"},
			IPv4: netip.MustParseAddr(ip)}},
	}
}

// rid is a replica's ID: the first 12 digits are shared, so only a longer
// prefix tells them apart.
func rid(n string) string { return cid("c0ffeec0ffee" + n) }

func shop(cs ...resolver.Container) resolver.Topology {
	return resolver.Topology{
		Networks:   []resolver.Network{{ID: "id-shopnet", Name: "shopnet", Subnets: []netip.Prefix{netip.MustParsePrefix("10.40.0.0/16")}}},
		Containers: cs,
	}
}

// stack is a control API on a unix socket over a real resolver.
type stack struct {
	res    *resolver.Resolver
	pub    *Publisher
	store  *Store
	socket string
	client controlpb.ControlClient
}

func startStack(t *testing.T, cfg Config, top resolver.Topology) *stack {
	t.Helper()
	dir := t.TempDir()
	st := &stack{res: resolver.New(resolver.Options{}), socket: filepath.Join(dir, "run", "control.sock")}
	var err error
	if st.store, err = OpenStore(filepath.Join(dir, "overrides.json")); err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t)
	st.pub = NewPublisher(st.res, st.store, log, nil)
	st.pub.Publish(top)
	if cfg.Socket == "" {
		cfg.Socket = st.socket
	}
	st.socket = cfg.Socket
	cfg.Logger = log
	srv, err := Start(cfg, NewService(st.store, st.pub, log))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	conn, err := Dial(st.socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	st.client = controlpb.NewControlClient(conn)
	return st
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func addrsOf(set []resolver.Answer) []string {
	var out []string
	for _, a := range set {
		out = append(out, a.Addr.String())
	}
	return out
}

func TestDrainUndrainWeightList(t *testing.T) {
	st := startStack(t, Config{}, shop(replica("1", "10.40.0.2", 0), replica("2", "10.40.0.3", 0, "canary")))
	ctx := ctxT(t)
	fi, err := os.Stat(st.socket)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %v, %v; want 0660", fi.Mode(), err)
	}

	r, err := st.client.Drain(ctx, &controlpb.Target{Container: "shop-web-1"})
	if err != nil || !r.Changed || !r.Replica.Drained || r.Replica.Weight != 0 {
		t.Fatalf("Drain = %v, %v", r, err)
	}
	if got := addrsOf(st.res.AnswerSet("web.shop.docker")); !slices.Equal(got, []string{"10.40.0.3"}) {
		t.Errorf("after drain web.shop.docker answers %v", got)
	}
	if r, err := st.client.Drain(ctx, &controlpb.Target{Container: rid("1")[:13]}); err != nil || r.Changed {
		t.Errorf("second Drain by ID prefix = %v, %v; want unchanged", r, err)
	}
	r, err = st.client.SetWeight(ctx, &controlpb.SetWeightRequest{Container: rid("2"), Weight: 900})
	if err != nil || !r.Changed || r.Replica.Weight != 900 || !r.Replica.Overridden {
		t.Fatalf("SetWeight = %v, %v", r, err)
	}
	list, err := st.client.List(ctx, &controlpb.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, rp := range list.Replicas {
		got = append(got, fmt.Sprintf("%s w=%d drained=%v tags=%v %v", rp.Name, rp.Weight, rp.Drained, rp.Tags, rp.Addresses))
	}
	want := []string{"shop-web-1 w=0 drained=true tags=[] [10.40.0.2]", "shop-web-2 w=900 drained=false tags=[canary] [10.40.0.3]"}
	if !slices.Equal(got, want) {
		t.Errorf("List = %q, want %q", got, want)
	}
	if _, err := st.client.Undrain(ctx, &controlpb.Target{Container: "shop-web-1"}); err != nil {
		t.Fatal(err)
	}
	if got := addrsOf(st.res.AnswerSet("web.shop.docker")); len(got) != 2 {
		t.Errorf("after undrain web.shop.docker answers %v", got)
	}
}

func TestMalformedRequests(t *testing.T) {
	st := startStack(t, Config{}, shop(replica("1", "10.40.0.2", 0), replica("2", "10.40.0.3", 0)))
	ctx := ctxT(t)
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"empty target", func() error { _, err := st.client.Drain(ctx, &controlpb.Target{}); return err }, codes.InvalidArgument},
		{"unknown", func() error { _, err := st.client.Drain(ctx, &controlpb.Target{Container: "nope"}); return err }, codes.NotFound},
		{"short prefix", func() error { _, err := st.client.Drain(ctx, &controlpb.Target{Container: "c0ffeec0ffe"}); return err }, codes.NotFound},
		{"ambiguous prefix", func() error {
			_, err := st.client.Undrain(ctx, &controlpb.Target{Container: "C0FFEEC0FFEE"})
			return err
		}, codes.InvalidArgument},
		{"huge target", func() error {
			_, err := st.client.Drain(ctx, &controlpb.Target{Container: strings.Repeat("x", 1<<16)})
			return err
		}, codes.InvalidArgument},
		{"weight too big", func() error {
			_, err := st.client.SetWeight(ctx, &controlpb.SetWeightRequest{Container: "shop-web-1", Weight: 1001})
			return err
		}, codes.InvalidArgument},
		{"watch empty", func() error { return firstWatchErr(ctx, st.client, "") }, codes.InvalidArgument},
		{"watch bad name", func() error { return firstWatchErr(ctx, st.client, "a..b") }, codes.InvalidArgument},
		{"watch long name", func() error { return firstWatchErr(ctx, st.client, strings.Repeat("a", 300)) }, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := status.Code(tt.call()); got != tt.want {
				t.Errorf("code %v, want %v", got, tt.want)
			}
		})
	}
	// Garbage on the socket is not a crash either.
	c, err := net.Dial("unix", st.socket)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x01\x00\x00\x00\x00\x01garbage"))
	c.Close()
	if _, err := st.client.List(ctx, &controlpb.ListRequest{}); err != nil {
		t.Errorf("List after garbage: %v", err)
	}
}

func firstWatchErr(ctx context.Context, c controlpb.ControlClient, name string) error {
	s, err := c.Watch(ctx, &controlpb.WatchRequest{Name: name})
	if err != nil {
		return err
	}
	_, err = s.Recv()
	return err
}

// Watch sends the current set first, then each change: a drain, a new
// replica, a reweigh; an unchanged republish sends nothing.
func TestWatch(t *testing.T) {
	top := shop(replica("1", "10.40.0.2", 0), replica("2", "10.40.0.3", 0))
	st := startStack(t, Config{}, top)
	ctx := ctxT(t)
	stream, err := st.client.Watch(ctx, &controlpb.WatchRequest{Name: "web.shop.docker."})
	if err != nil {
		t.Fatal(err)
	}
	next := func() string {
		t.Helper()
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var parts []string
		for _, e := range m.Endpoints {
			parts = append(parts, fmt.Sprintf("%s=%s/%d", e.Container, e.Address, e.Weight))
		}
		return strings.Join(parts, " ")
	}
	steps := []struct {
		do   func()
		want string
	}{
		{func() {}, "shop-web-1=10.40.0.2/100 shop-web-2=10.40.0.3/100"},
		{func() { st.client.Drain(ctx, &controlpb.Target{Container: "shop-web-1"}) }, "shop-web-2=10.40.0.3/100"},
		{func() {
			st.pub.Republish() // nothing changed: no message
			st.pub.Publish(shop(top.Containers[0], top.Containers[1], replica("3", "10.40.0.4", 300)))
		}, "shop-web-2=10.40.0.3/100 shop-web-3=10.40.0.4/300"},
		{func() { st.client.SetWeight(ctx, &controlpb.SetWeightRequest{Container: "shop-web-2", Weight: 5}) },
			"shop-web-2=10.40.0.3/5 shop-web-3=10.40.0.4/300"},
		{func() { st.pub.Publish(shop(top.Containers[0])) }, "shop-web-1=10.40.0.2/0"}, // the drained one is all that is left
	}
	for i, s := range steps {
		s.do()
		if got := next(); got != s.want {
			t.Fatalf("step %d: got %q, want %q", i, got, s.want)
		}
	}
	// shop-web-2 and -3 are gone: their overrides went with them.
	if got := len(st.store.List()); got != 1 {
		t.Errorf("%d overrides left, want shop-web-1's", got)
	}
}

func TestListenUnixStaleAndInUse(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.sock")
	l, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(path); !errors.Is(err, ErrSocketInUse) {
		t.Errorf("second listen: %v, want ErrSocketInUse", err)
	}
	l.SetUnlinkOnClose(false) // a crash leaves the file behind
	l.Close()
	l2, err := ListenUnix(path)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	l2.Close()
	os.WriteFile(path, nil, 0o600)
	if _, err := ListenUnix(path); err == nil {
		t.Error("listened over a regular file")
	}
}

// helperEnv makes the test binary, run as another user, call List on the
// socket it names and print the gRPC code.
const helperEnv = "SIDEDNS_CONTROL_TEST_SOCKET"

func TestHelperCallList(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper for TestSocketPermission")
	}
	conn, err := Dial(path)
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = controlpb.NewControlClient(conn).List(ctx, &controlpb.ListRequest{})
	fmt.Printf("code=%v\n", status.Code(err))
}

// A caller without permission is refused: by the socket's mode, and by
// the server's credential check where the mode would let it in.
func TestSocketPermission(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	// A directory every user can reach, for the socket and the test binary.
	dir, err := os.MkdirTemp("", "sidedns-control-perm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "control.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "run", "control.sock")
	startStack(t, Config{Socket: socket}, shop(replica("1", "10.40.0.2", 0)))

	call := func(uid, gid uint32) string {
		cmd := exec.Command(bin, "-test.run=^TestHelperCallList$", "-test.v")
		cmd.Env = append(os.Environ(), helperEnv+"="+socket)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
		out, _ := cmd.CombinedOutput()
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "code=") || strings.HasPrefix(line, "dial:") {
				t.Logf("uid %d gid %d: %s", uid, gid, line)
				return line
			}
		}
		return string(out)
	}
	const nobody = 65534
	if got := call(nobody, nobody); got == "code=OK" {
		t.Errorf("nobody through a 0660 root socket: %s", got)
	}
	if got := call(nobody, 0); got != "code=OK" {
		t.Errorf("a member of the socket's group: %s, want OK", got)
	}
	// With the mode opened up, the credential check still refuses.
	os.Chmod(socket, 0o666)
	if got := call(nobody, nobody); got != "code=PermissionDenied" {
		t.Errorf("nobody through a 0666 socket: %s, want PermissionDenied", got)
	}
}

// certs is a CA and certificates it signed, as PEM files in a directory.
type certs struct{ dir string }

func (c certs) path(name string) string { return filepath.Join(c.dir, name) }

func newCerts(t *testing.T) certs {
	t.Helper()
	c := certs{dir: t.TempDir()}
	ca, caKey := makeCert(t, c, "ca", nil, nil)
	makeCert(t, c, "server", ca, caKey)
	makeCert(t, c, "client", ca, caKey)
	other, otherKey := makeCert(t, c, "otherca", nil, nil)
	makeCert(t, c, "stranger", other, otherKey)
	return c
}

// makeCert writes name.pem and name-key.pem: a CA when parent is nil,
// otherwise a leaf for 127.0.0.1 signed by parent.
func makeCert(t *testing.T, c certs, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "sidedns test " + name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	signer, signKey := tmpl, key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign
	} else {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		signer, signKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(c.path(name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(c.path(name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func freeTCP(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TCP needs a client certificate from the configured CA.
func TestTCPMutualTLS(t *testing.T) {
	c := newCerts(t)
	addr := freeTCP(t)
	startStack(t, Config{TCP: addr, CA: c.path("ca.pem"), Cert: c.path("server.pem"), Key: c.path("server-key.pem")},
		shop(replica("1", "10.40.0.2", 0)))
	caPEM, _ := os.ReadFile(c.path("ca.pem"))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	list := func(client string) error {
		tc := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
		if client != "" {
			cert, err := tls.LoadX509KeyPair(c.path(client+".pem"), c.path(client+"-key.pem"))
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := controlpb.NewControlClient(conn).List(ctx, &controlpb.ListRequest{})
		if err == nil && len(r.Replicas) != 1 {
			t.Errorf("List over TCP: %v", r)
		}
		return err
	}
	if err := list("client"); err != nil {
		t.Errorf("client with a certificate from the CA: %v", err)
	}
	for _, client := range []string{"", "stranger"} {
		if err := list(client); status.Code(err) != codes.Unavailable {
			t.Errorf("client %q: %v, want refused (Unavailable)", client, err)
		}
	}
	if _, err := Start(Config{TCP: freeTCP(t), CA: c.path("ca.pem")}, nil); err == nil {
		t.Error("TCP without a server certificate started")
	}
}

// Stopping the server ends open Watch streams with Unavailable, so a client
// knows to reconnect.
func TestStopEndsWatch(t *testing.T) {
	dir := t.TempDir()
	store, _ := OpenStore("")
	log := zaptest.NewLogger(t)
	pub := NewPublisher(resolver.New(resolver.Options{}), store, log, nil)
	pub.Publish(shop(replica("1", "10.40.0.2", 0)))
	socket := filepath.Join(dir, "control.sock")
	srv, err := Start(Config{Socket: socket, Logger: log}, NewService(store, pub, log))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := Dial(socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := controlpb.NewControlClient(conn).Watch(ctxT(t), &controlpb.WatchRequest{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("after Stop: %v, want Unavailable", err)
	}
	if _, err := os.Stat(socket); err == nil {
		t.Error("socket file left behind")
	}
}

// withRemote is a Target that adds other hosts' records to every topology,
// as cmd/sidedns's cluster layers do.
type withRemote struct {
	*resolver.Resolver
	remote []resolver.Container
}

func (w withRemote) Publish(t resolver.Topology) {
	t.Containers = slices.Concat(t.Containers, w.remote)
	w.Resolver.Publish(t)
}

// TestRemoteReplicas: another host's replicas are listed with their host,
// and a drain of one names the host to drain it on instead of "not found".
func TestRemoteReplicas(t *testing.T) {
	remote := func(name, origin, ip string, weight uint16, drained bool) resolver.Container {
		return resolver.Container{ID: origin + "/" + name, Name: name, Project: "shop", Service: "web",
			Origin: origin, Weight: weight, Drained: drained,
			Endpoints: []resolver.Endpoint{{NetworkName: origin, IPv4: netip.MustParseAddr(ip)}}}
	}
	log := zaptest.NewLogger(t)
	store, _ := OpenStore("")
	target := withRemote{resolver.New(resolver.Options{}), []resolver.Container{
		remote("b-web-1", "192.0.2.2", "10.50.0.2", 800, false),
		remote("b-web-2", "192.0.2.2", "10.50.0.3", 0, true),
		remote("db-1", resolver.OriginRecordsFile, "10.60.0.2", 0, false),
	}}
	pub := NewPublisher(target, store, log, nil)
	pub.Publish(shop(replica("1", "10.40.0.2", 0)))
	svc := NewService(store, pub, log)
	ctx := ctxT(t)

	list, err := svc.List(ctx, &controlpb.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range list.Replicas {
		got = append(got, fmt.Sprintf("%s@%s w%d d%v", r.Name, r.Host, r.Weight, r.Drained))
	}
	want := []string{"b-web-1@192.0.2.2 w800 dfalse", "b-web-2@192.0.2.2 w0 dtrue", "db-1@file w100 dfalse", "shop-web-1@ w100 dfalse"}
	if !slices.Equal(got, want) {
		t.Errorf("List = %q, want %q", got, want)
	}

	tests := []struct {
		target   string
		want     codes.Code
		contains string
	}{
		{"b-web-1", codes.FailedPrecondition, "runs on host 192.0.2.2"},
		{"192.0.2.2/b-web-2", codes.FailedPrecondition, "runs on host 192.0.2.2"},
		{"db-1", codes.FailedPrecondition, "--records-file"},
		{"nope", codes.NotFound, "no container"},
	}
	for _, tt := range tests {
		_, err := svc.Drain(ctx, &controlpb.Target{Container: tt.target})
		if status.Code(err) != tt.want || !strings.Contains(err.Error(), tt.contains) {
			t.Errorf("Drain(%s) = %v, want %v containing %q", tt.target, err, tt.want, tt.contains)
		}
	}
	if len(store.List()) != 0 {
		t.Errorf("a refused drain left overrides: %+v", store.List())
	}
}
