// Package grpcresolver lets gRPC clients find a service's replicas through
// sidedns. Importing it registers the scheme "sidedns": dial
// "sidedns:///web.shop.docker:8080" and the client follows the answer set of
// web.shop.docker as sidedns's control API streams it, so drains, weights
// and new or stopped replicas reach the client at once, without DNS polling.
// When the control socket is missing (no sidedns on this host), the target
// is resolved by gRPC's DNS resolver instead.
package grpcresolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"

	"github.com/sidedns/sidedns/control"
	"github.com/sidedns/sidedns/control/controlpb"
)

// Scheme is the target scheme this package resolves.
const Scheme = "sidedns"

// defaultPort is used when the target names none, as gRPC's DNS resolver does.
const defaultPort = "443"

// Reconnect backoff after the watch stream breaks (sidedns restarting): the
// client keeps its last addresses meanwhile.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

func init() {
	resolver.Register(NewBuilder(control.DefaultSocket))
}

// NewBuilder returns a resolver builder for Scheme that watches through the
// control socket at path. Pass it to grpc.WithResolvers to use a socket
// other than the default.
func NewBuilder(socket string) resolver.Builder {
	return &builder{socket: socket}
}

type builder struct{ socket string }

func (*builder) Scheme() string { return Scheme }

// Build starts following the target's answer set, or hands the target to
// gRPC's DNS resolver when there is no control socket.
func (b *builder) Build(t resolver.Target, cc resolver.ClientConn, opts resolver.BuildOptions) (resolver.Resolver, error) {
	endpoint := t.Endpoint()
	host, port, err := net.SplitHostPort(endpoint)
	if err != nil {
		host, port = endpoint, defaultPort
	}
	if host == "" {
		return nil, fmt.Errorf("sidedns resolver: target %q has no name", t.String())
	}
	if _, err := os.Stat(b.socket); errors.Is(err, os.ErrNotExist) {
		dns := resolver.Get("dns")
		if dns == nil {
			return nil, fmt.Errorf("sidedns resolver: no control socket at %s and no dns resolver", b.socket)
		}
		return dns.Build(resolver.Target{URL: url.URL{Scheme: "dns", Path: "/" + net.JoinHostPort(host, port)}}, cc, opts)
	}
	conn, err := control.Dial(b.socket)
	if err != nil {
		return nil, fmt.Errorf("sidedns resolver: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{cc: cc, client: controlpb.NewControlClient(conn), conn: conn, name: host, port: port, cancel: cancel,
		done: make(chan struct{})}
	go w.run(ctx)
	return w, nil
}

// watcher follows one name's answer set.
type watcher struct {
	cc     resolver.ClientConn
	client controlpb.ControlClient
	conn   *grpc.ClientConn
	name   string
	port   string
	cancel context.CancelFunc
	done   chan struct{}
}

// run keeps a Watch stream open, reconnecting with backoff, and pushes each
// answer set to the client.
func (w *watcher) run(ctx context.Context) {
	defer close(w.done)
	backoff := minBackoff
	for {
		err := w.follow(ctx, func() { backoff = minBackoff })
		if ctx.Err() != nil {
			return
		}
		w.cc.ReportError(fmt.Errorf("sidedns resolver: watch %s: %w", w.name, err))
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// follow reads one Watch stream until it breaks; ok is called at each set
// received.
func (w *watcher) follow(ctx context.Context, ok func()) error {
	stream, err := w.client.Watch(ctx, &controlpb.WatchRequest{Name: w.name}, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	for {
		set, err := stream.Recv()
		if err != nil {
			return err
		}
		ok()
		if len(set.Endpoints) == 0 {
			w.cc.ReportError(fmt.Errorf("sidedns resolver: %s has no addresses", w.name))
			continue
		}
		st := resolver.State{}
		for _, e := range set.Endpoints {
			a := resolver.Address{Addr: net.JoinHostPort(e.Address, w.port)}
			st.Addresses = append(st.Addresses, a)
			st.Endpoints = append(st.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{a}})
		}
		// A watch-based resolver can ignore the error: re-resolving would
		// give the same set until the next push.
		_ = w.cc.UpdateState(st)
	}
}

// ResolveNow does nothing: changes are pushed.
func (*watcher) ResolveNow(resolver.ResolveNowOptions) {}

// Close stops the watch and closes the control connection.
func (w *watcher) Close() {
	w.cancel()
	<-w.done
	w.conn.Close()
}
