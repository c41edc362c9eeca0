package dnsserver

import (
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/servicemap"
)

// The service map sees each lookup once, with where its answer came from.
func TestServiceMapSeesLookups(t *testing.T) {
	res := realResolver()
	m := servicemap.New(res, time.Now)
	up := answerA(1)
	_, addr := startServer(t, Config{Local: res, Upstream: cached(t, up, 0), Recorder: m})
	for _, network := range []string{"udp", "udp", "tcp"} {
		mustQuery(t, addr, network, "WEB.", 0)
	}
	for range 3 {
		mustQuery(t, addr, "udp", "api.Example.TEST.", 1232)
	}
	got := map[string]servicemap.Counts{}
	for _, e := range m.Graph(time.Time{}).Edges {
		got[e.From+" -> "+e.To] = e.Counts
	}
	want := map[string]servicemap.Counts{
		"host:127.0.0.1 -> container:web":         {Queries: 3},
		"host:127.0.0.1 -> external:example.test": {Queries: 3, Cached: 2},
	}
	if len(got) != len(want) {
		t.Fatalf("edges %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("edge %s: %+v, want %+v", k, got[k], v)
		}
	}
}

// The fast path allocates nothing, with the service map or without it.
func TestRespondLocalAllocatesNothing(t *testing.T) {
	for _, on := range []bool{false, true} {
		s := benchServer(t, on)
		pkt, _ := new(dns.Msg).SetQuestion("web.", dns.TypeA).Pack()
		r := &request{src: netip.MustParseAddr("172.18.0.2")}
		buf := make([]byte, 0, 512)
		s.respond(buf, pkt, r) // the first sighting of the edge
		if on {
			s.recorder.(*servicemap.Map).Stats() // the writer inserts it
		}
		if n := testing.AllocsPerRun(1000, func() { s.respond(buf, pkt, r) }); n != 0 {
			t.Errorf("recording %v: %v allocations per query, want 0", on, n)
		}
	}
}

func benchServer(tb testing.TB, record bool) *Server {
	tb.Helper()
	res := realResolver()
	cfg := Config{Listen: []string{"127.0.0.1:0"}, Local: res}
	if record {
		cfg.Recorder = servicemap.New(res, time.Now)
	}
	s, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// BenchmarkRespondLocal is the fast path for a local name, with edge
// recording off and on.
func BenchmarkRespondLocal(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "recording=off"
		if on {
			name = "recording=on"
		}
		b.Run(name, func(b *testing.B) {
			s := benchServer(b, on)
			pkt, _ := new(dns.Msg).SetQuestion("web.", dns.TypeA).Pack()
			r := &request{src: netip.MustParseAddr("172.18.0.2")}
			buf := make([]byte, 0, 512)
			s.respond(buf, pkt, r)
			if on {
				s.recorder.(*servicemap.Map).Stats()
			}
			b.ReportAllocs()
			for b.Loop() {
				s.respond(buf, pkt, r)
			}
		})
	}
}
