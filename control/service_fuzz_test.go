package control

import (
	"context"
	"testing"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sidedns/sidedns/control/controlpb"
	"github.com/sidedns/sidedns/resolver"
)

// watchOnce is a Watch stream that ends the call after the first set.
type watchOnce struct {
	grpc.ServerStream
	ctx    context.Context
	cancel context.CancelFunc
	sent   *controlpb.AnswerSet
}

func (w *watchOnce) Context() context.Context { return w.ctx }

func (w *watchOnce) Send(m *controlpb.AnswerSet) error {
	w.sent = m
	w.cancel()
	return nil
}

// Whatever a caller sends, the service answers or returns a status error;
// it never panics, and only valid weights are stored.
func FuzzService(f *testing.F) {
	f.Add("shop-web-1", "web.shop.docker", uint32(5))
	f.Add(rid("1")[:14], "canary.web.shop.docker.", uint32(1001))
	f.Add("", "..", uint32(0))
	f.Add("/shop-web-2", "\x00\xff", uint32(1<<31))
	f.Fuzz(func(t *testing.T, target, name string, weight uint32) {
		store, _ := OpenStore("")
		pub := NewPublisher(resolver.New(resolver.Options{}), store, zap.NewNop(), nil)
		pub.Publish(shop(replica("1", "10.40.0.2", 0), replica("2", "10.40.0.3", 0, "canary")))
		svc := NewService(store, pub, zap.NewNop())
		ctx := context.Background()
		check := func(err error) {
			if _, ok := status.FromError(err); !ok {
				t.Fatalf("error %v is not a gRPC status", err)
			}
		}
		_, err := svc.Drain(ctx, &controlpb.Target{Container: target})
		check(err)
		_, err = svc.Undrain(ctx, &controlpb.Target{Container: target})
		check(err)
		_, err = svc.SetWeight(ctx, &controlpb.SetWeightRequest{Container: target, Weight: weight})
		check(err)
		if weight > resolver.MaxWeight && status.Code(err) != codes.InvalidArgument {
			t.Fatalf("weight %d: %v", weight, err)
		}
		for _, o := range store.List() {
			if o.Weight > resolver.MaxWeight {
				t.Fatalf("stored %+v", o)
			}
		}
		wctx, cancel := context.WithCancel(ctx)
		w := &watchOnce{ctx: wctx, cancel: cancel}
		check(svc.Watch(&controlpb.WatchRequest{Name: name}, w))
		cancel()
	})
}
