package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
)

// newForwarder builds a Forwarder with a test logger and short timeouts,
// closed when the test ends.
func newForwarder(tb testing.TB, cfg Config) *Forwarder {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(tb)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 300 * time.Millisecond
	}
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = 20 * time.Millisecond
		cfg.ProbeMaxInterval = 50 * time.Millisecond
	}
	f, err := NewForwarder(cfg)
	if err != nil {
		tb.Fatalf("NewForwarder: %v", err)
	}
	tb.Cleanup(func() { f.Close() })
	return f
}

// deadUDP returns an address where nothing listens: UDP to it fails fast
// with "connection refused".
func deadUDP(tb testing.TB) Spec {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	s, err := ParseSpec(addr)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func exchange(tb testing.TB, f *Forwarder, ctx context.Context, name string) (*dns.Msg, error) {
	tb.Helper()
	return f.Exchange(ctx, query(name, dns.TypeA), false)
}

func TestForwarderFailover(t *testing.T) {
	tests := []struct {
		name      string
		first     dns.HandlerFunc // nil: nothing listens
		firstDown bool            // the first server is marked down afterwards
	}{
		{name: "timeout", first: blackhole, firstDown: true},
		{name: "servfail", first: answerRcode(dns.RcodeServerFailure)},
		{name: "refused", first: answerRcode(dns.RcodeRefused)},
		{name: "connection refused", first: nil, firstDown: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var first Spec
			if tt.first != nil {
				first = startFake(t, tt.first).spec(ProtoUDP)
			} else {
				first = deadUDP(t)
			}
			second := startFake(t, answerA("192.0.2.2"))
			// A long probe interval keeps the health view still while we look.
			f := newForwarder(t, Config{
				Servers:       []Spec{first, second.spec(ProtoUDP)},
				ProbeInterval: time.Hour,
			})

			r, err := exchange(t, f, context.Background(), "www.example.test.")
			if err != nil {
				t.Fatalf("Exchange: %v", err)
			}
			if got := firstA(r); got != "192.0.2.2" {
				t.Fatalf("answer %q, want the second upstream's 192.0.2.2", got)
			}
			stats := f.ServerStats()
			if stats[0].Up == tt.firstDown {
				t.Errorf("first upstream up = %v, want %v", stats[0].Up, !tt.firstDown)
			}
			if stats[0].Failures != 1 || stats[0].Queries != 1 {
				t.Errorf("first upstream stats %+v, want 1 query and 1 failure", stats[0])
			}
			if stats[1].Answers != 1 || !stats[1].Up {
				t.Errorf("second upstream stats %+v, want 1 answer and up", stats[1])
			}
		})
	}
}

func TestForwarderAllFailed(t *testing.T) {
	a := startFake(t, answerRcode(dns.RcodeServerFailure))
	b := startFake(t, answerRcode(dns.RcodeRefused))
	c := startFake(t, blackhole)
	f := newForwarder(t, Config{
		Servers: []Spec{a.spec(ProtoUDP), b.spec(ProtoUDP), c.spec(ProtoUDP)},
		Timeout: 100 * time.Millisecond,
	})
	r, err := exchange(t, f, context.Background(), "fail.test.")
	if !errors.Is(err, ErrAllFailed) {
		t.Fatalf("Exchange = %v, %v; want ErrAllFailed", r, err)
	}
	if r != nil {
		t.Errorf("reply %v, want nil with the error", r)
	}
	for i, fake := range []*fakeUpstream{a, b, c} {
		if n := len(fake.queries("fail.test.")); n != 1 {
			t.Errorf("upstream %d got %d queries, want 1", i, n)
		}
	}
}

// When every upstream is down, one is tried anyway: the health view may be
// stale, and an answer beats a certain SERVFAIL.
func TestForwarderAllDownFailsOpen(t *testing.T) {
	up := startFake(t, blackhole)
	f := newForwarder(t, Config{
		Servers:       []Spec{up.spec(ProtoUDP)},
		Timeout:       100 * time.Millisecond,
		ProbeInterval: time.Hour, // no probe brings it back; only the query may
	})
	if _, err := exchange(t, f, context.Background(), "a.test."); !errors.Is(err, ErrAllFailed) {
		t.Fatalf("first Exchange error = %v, want ErrAllFailed", err)
	}
	if f.ServerStats()[0].Up {
		t.Fatal("upstream still up after a timeout")
	}
	up.setHandler(answerA("192.0.2.9"))
	r, err := exchange(t, f, context.Background(), "b.test.")
	if err != nil {
		t.Fatalf("Exchange with all upstreams down: %v", err)
	}
	if firstA(r) != "192.0.2.9" {
		t.Fatalf("answer %q, want 192.0.2.9", firstA(r))
	}
	if !f.ServerStats()[0].Up {
		t.Error("upstream that answered is still down")
	}
}

func TestForwarderProbeRecovery(t *testing.T) {
	first := startFake(t, blackhole)
	second := startFake(t, answerA("192.0.2.2"))
	// The forwarder logs "upstream up" once it marks the server up.
	logged := make(chan struct{}, 1)
	f := newForwarder(t, Config{
		Servers: []Spec{first.spec(ProtoUDP), second.spec(ProtoUDP)},
		Timeout: 100 * time.Millisecond,
		Logger:  zaptest.NewLogger(t, zaptest.WrapOptions(zap.Hooks(func(zapcore.Entry) error { poke(logged); return nil }))),
	})

	if _, err := exchange(t, f, context.Background(), "one.test."); err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	if f.ServerStats()[0].Up {
		t.Fatal("first upstream up after a timeout")
	}
	// Down: skipped without waiting for it.
	r, err := exchange(t, f, context.Background(), "two.test.")
	if err != nil || firstA(r) != "192.0.2.2" {
		t.Fatalf("Exchange = %v, %v; want the second upstream's answer", r, err)
	}
	if n := len(first.queries("two.test.")); n != 0 {
		t.Fatalf("down upstream got %d queries, want 0", n)
	}
	// The probe keeps asking the down server and finds it back.
	waitOn(t, first.arrived, "a probe", func() bool { return len(first.queries(".")) > 0 })
	first.setHandler(answerA("192.0.2.1"))
	waitOn(t, logged, "the first upstream to come back", func() bool { return f.ServerStats()[0].Up })

	r, err = exchange(t, f, context.Background(), "three.test.")
	if err != nil || firstA(r) != "192.0.2.1" {
		t.Fatalf("Exchange after recovery = %v, %v; want the first upstream's answer", r, err)
	}
}

func TestForwarderTruncatedRetriesOverTCP(t *testing.T) {
	const n = 60 // 60 A records do not fit 512 bytes
	full := func(r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		for i := range n {
			m.Answer = append(m.Answer, aRecord(r.Question[0].Name, net.IPv4(192, 0, 2, byte(i)).String()))
		}
		return m
	}
	tests := []struct {
		name string
		udp  func(w dns.ResponseWriter, r *dns.Msg) // the UDP reply
	}{
		{name: "TC, empty", udp: func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			m.Truncated = true
			w.WriteMsg(m)
		}},
		{name: "TC, cut mid-record", udp: func(w dns.ResponseWriter, r *dns.Msg) {
			m := full(r)
			m.Truncated = true
			b, _ := m.Pack()
			w.Write(b[:500]) // does not parse
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := startFake(t, func(w dns.ResponseWriter, r *dns.Msg) {
				if _, ok := w.RemoteAddr().(*net.UDPAddr); ok {
					tt.udp(w, r)
					return
				}
				w.WriteMsg(full(r))
			})
			f := newForwarder(t, Config{Servers: []Spec{up.spec(ProtoUDP)}})

			r, err := exchange(t, f, context.Background(), "big.test.")
			if err != nil {
				t.Fatalf("Exchange: %v", err)
			}
			if r.Truncated || len(r.Answer) != n {
				t.Fatalf("reply TC=%v with %d answers, want the full %d", r.Truncated, len(r.Answer), n)
			}
			seen := up.queries("big.test.")
			if len(seen) != 2 || seen[0].Net != "udp" || seen[1].Net != "tcp" {
				t.Fatalf("upstream saw %v, want udp then tcp", nets(seen))
			}
			if seen[0].Msg.Id == seen[1].Msg.Id {
				t.Errorf("TCP retry reused ID %d; every message gets a fresh one", seen[0].Msg.Id)
			}
		})
	}
}

func nets(qs []seenQuery) []string {
	var out []string
	for _, q := range qs {
		out = append(out, q.Net)
	}
	return out
}

func TestForwarderTransport(t *testing.T) {
	tests := []struct {
		name  string
		proto string
		tcp   bool // client came over TCP
		want  string
	}{
		{name: "udp client, udp upstream", proto: ProtoUDP, want: "udp"},
		{name: "tcp client, udp upstream", proto: ProtoUDP, tcp: true, want: "tcp"},
		{name: "udp client, tcp upstream", proto: ProtoTCP, want: "tcp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := startFake(t, answerA("192.0.2.1"))
			f := newForwarder(t, Config{Servers: []Spec{up.spec(tt.proto)}})
			if _, err := f.Exchange(context.Background(), query("t.test.", dns.TypeA), tt.tcp); err != nil {
				t.Fatalf("Exchange: %v", err)
			}
			if got := nets(up.queries("t.test.")); len(got) != 1 || got[0] != tt.want {
				t.Fatalf("upstream saw %v, want [%s]", got, tt.want)
			}
		})
	}
}

func TestForwarderReusesTCPConnections(t *testing.T) {
	up := startFake(t, answerA("192.0.2.1"))
	f := newForwarder(t, Config{Servers: []Spec{up.spec(ProtoTCP)}})
	for _, name := range []string{"a.test.", "b.test.", "c.test."} {
		if _, err := exchange(t, f, context.Background(), name); err != nil {
			t.Fatalf("Exchange %s: %v", name, err)
		}
	}
	if n := up.accepted.Load(); n != 1 {
		t.Fatalf("upstream accepted %d connections for 3 sequential queries, want 1", n)
	}
}

// A server that closes idle connections sooner than our pool expects them
// must not cost a failed query: the stale conn is replaced.
func TestForwarderReplacesStaleTCPConnection(t *testing.T) {
	up := startFake(t, answerA("192.0.2.1"))
	f := newForwarder(t, Config{Servers: []Spec{up.spec(ProtoTCP)}})
	if _, err := exchange(t, f, context.Background(), "a.test."); err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	// Close the pooled conn's far side, as an idle timeout would.
	srv := f.servers.Load()
	(*srv)[0].stream.mu.Lock()
	for _, ic := range (*srv)[0].stream.idle {
		ic.c.(*net.TCPConn).CloseRead()
	}
	(*srv)[0].stream.mu.Unlock()

	if _, err := exchange(t, f, context.Background(), "b.test."); err != nil {
		t.Fatalf("Exchange on a stale pooled conn: %v", err)
	}
	if !f.ServerStats()[0].Up {
		t.Error("upstream marked down for a stale pooled connection")
	}
}

// The forwarder sends the query it is given, each try with a fresh ID, and
// returns the upstream's reply as it came. (What the client then sees, ID,
// case and OPT, is the cache's and Finish's; see TestCacheOverForwarder.)
func TestForwarderUpstreamMessage(t *testing.T) {
	for _, do := range []bool{false, true} {
		t.Run(fmt.Sprintf("DO %v", do), func(t *testing.T) {
			up := startFake(t, func(w dns.ResponseWriter, r *dns.Msg) {
				m := new(dns.Msg)
				m.SetReply(r)
				m.Question[0].Name = strings.ToLower(m.Question[0].Name)
				m.Answer = append(m.Answer, aRecord(m.Question[0].Name, "192.0.2.1"))
				m.SetEdns0(4096, r.IsEdns0().Do())
				w.WriteMsg(m)
			})
			f := newForwarder(t, Config{Servers: []Spec{up.spec(ProtoUDP)}})

			const queries = 5
			for range queries {
				q := upstreamQuery("WwW.ExAmPlE.TeSt.", dns.TypeA, dns.ClassINET, do, false)
				q.Id = 4242
				r, err := f.Exchange(context.Background(), q, false)
				if err != nil {
					t.Fatalf("Exchange: %v", err)
				}
				if r.Id == 4242 || r.Question[0].Name != "www.example.test." {
					t.Errorf("reply ID %d question %q, want the upstream's own", r.Id, r.Question[0].Name)
				}
				if o := r.IsEdns0(); o == nil || o.UDPSize() != 4096 {
					t.Errorf("reply OPT %v, want the upstream's", o)
				}
				if q.Id != 4242 || q.Question[0].Name != "WwW.ExAmPlE.TeSt." {
					t.Errorf("query was modified: %v", q)
				}
			}

			seen := up.queries("www.example.test.")
			if len(seen) != queries {
				t.Fatalf("upstream saw %d queries, want %d", len(seen), queries)
			}
			ids := map[uint16]bool{}
			for _, s := range seen {
				ids[s.Msg.Id] = true
				if s.Msg.Id == 4242 {
					t.Errorf("upstream message carries the caller's ID")
				}
				opt := s.Msg.IsEdns0()
				if opt == nil || opt.UDPSize() != 1232 || opt.Do() != do {
					t.Errorf("upstream EDNS0 %v, want size 1232 DO %v", opt, do)
				}
				if !s.Msg.RecursionDesired {
					t.Errorf("upstream message lost RD")
				}
			}
			if len(ids) < 2 {
				t.Errorf("%d queries used IDs %v; want fresh random ones", queries, ids)
			}
		})
	}
}

// A spoofed or late reply (wrong ID, wrong question, not a response) is
// dropped, and the real one that follows is used.
func TestForwarderDropsMismatchedReplies(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			send := func(edit func(*dns.Msg), ip string) {
				m := new(dns.Msg)
				m.SetReply(q)
				m.Answer = append(m.Answer, aRecord(q.Question[0].Name, ip))
				edit(m)
				b, _ := m.Pack()
				pc.WriteTo(b, addr)
			}
			send(func(m *dns.Msg) { m.Id++ }, "192.0.2.66")
			send(func(m *dns.Msg) { m.Question[0].Name = "other.test." }, "192.0.2.67")
			send(func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeAAAA }, "192.0.2.68")
			send(func(m *dns.Msg) { m.Response = false }, "192.0.2.69")
			pc.WriteTo([]byte{0, 1, 2}, addr) // runt
			send(func(*dns.Msg) {}, "192.0.2.1")
		}
	}()
	s, err := ParseSpec(pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	f := newForwarder(t, Config{Servers: []Spec{s}})
	for range 3 { // again on the pooled socket, where the late ones sit
		r, err := exchange(t, f, context.Background(), "spoof.test.")
		if err != nil {
			t.Fatalf("Exchange: %v", err)
		}
		if got := firstA(r); got != "192.0.2.1" {
			t.Fatalf("answer %s, want the matching reply's 192.0.2.1", got)
		}
	}
}

func TestForwarderOverloaded(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	up := startFake(t, func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Question[0].Name == "slow.test." {
			arrived <- struct{}{}
			<-release
		}
		answerA("192.0.2.1")(w, r)
	})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	f := newForwarder(t, Config{
		Servers:       []Spec{up.spec(ProtoUDP)},
		MaxConcurrent: 1,
		Timeout:       5 * time.Second,
	})

	done := make(chan error, 1)
	go func() {
		_, err := exchange(t, f, context.Background(), "slow.test.")
		done <- err
	}()
	<-arrived
	if _, err := exchange(t, f, context.Background(), "fast.test."); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("second concurrent Exchange error = %v, want ErrOverloaded", err)
	}
	if f.Overloaded() != 1 {
		t.Errorf("Overloaded() = %d, want 1", f.Overloaded())
	}
	once.Do(func() { close(release) })
	if err := <-done; err != nil {
		t.Fatalf("slow Exchange: %v", err)
	}
	// The slot is free again.
	if _, err := exchange(t, f, context.Background(), "fast.test."); err != nil {
		t.Fatalf("Exchange after the slow one finished: %v", err)
	}
	if f.Inflight() != 0 {
		t.Errorf("Inflight() = %d after all returned, want 0", f.Inflight())
	}
}

func TestForwarderHonoursContext(t *testing.T) {
	up := startFake(t, blackhole)
	f := newForwarder(t, Config{Servers: []Spec{up.spec(ProtoUDP)}, Timeout: 5 * time.Second})

	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		_, err := exchange(t, f, ctx, "c.test.")
		if !errors.Is(err, context.Canceled) || errors.Is(err, ErrAllFailed) {
			t.Fatalf("error = %v, want context.Canceled alone", err)
		}
		if time.Since(start) > 2*time.Second {
			t.Fatalf("Exchange ran on for %v after the cancel", time.Since(start))
		}
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := exchange(t, f, ctx, "d.test.")
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrAllFailed) {
			t.Fatalf("error = %v, want DeadlineExceeded and ErrAllFailed", err)
		}
	})
	// The caller giving up says nothing about the upstream.
	if st := f.ServerStats()[0]; !st.Up || st.Failures != 0 {
		t.Errorf("upstream stats %+v after caller gave up, want up with no failures", st)
	}
}

func TestForwarderDoT(t *testing.T) {
	up, roots := startTLSFake(t, "dns.test", answerA("192.0.2.53"))
	spec, err := ParseSpec("tls://" + up.Addr.String() + "#dns.test")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("trusted", func(t *testing.T) {
		f := newForwarder(t, Config{Servers: []Spec{spec}, TLSConfig: &tls.Config{RootCAs: roots}})
		for _, name := range []string{"a.test.", "b.test."} {
			r, err := exchange(t, f, context.Background(), name)
			if err != nil {
				t.Fatalf("Exchange over TLS: %v", err)
			}
			if firstA(r) != "192.0.2.53" {
				t.Fatalf("answer %q, want 192.0.2.53", firstA(r))
			}
		}
		if n := up.accepted.Load(); n != 1 {
			t.Errorf("upstream accepted %d TLS connections for 2 queries, want 1", n)
		}
	})
	t.Run("wrong server name", func(t *testing.T) {
		bad := spec
		bad.ServerName = "other.test"
		f := newForwarder(t, Config{Servers: []Spec{bad}, TLSConfig: &tls.Config{RootCAs: roots}})
		_, err := exchange(t, f, context.Background(), "a.test.")
		if !errors.Is(err, ErrAllFailed) || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("error = %v, want ErrAllFailed from a certificate check", err)
		}
	})
	t.Run("untrusted", func(t *testing.T) {
		f := newForwarder(t, Config{Servers: []Spec{spec}})
		if _, err := exchange(t, f, context.Background(), "a.test."); !errors.Is(err, ErrAllFailed) {
			t.Fatalf("error = %v, want ErrAllFailed", err)
		}
	})
}

func TestForwarderSetServers(t *testing.T) {
	a := startFake(t, answerA("192.0.2.1"))
	b := startFake(t, answerA("192.0.2.2"))
	f := newForwarder(t, Config{Servers: []Spec{a.spec(ProtoUDP)}})

	if r, err := exchange(t, f, context.Background(), "x.test."); err != nil || firstA(r) != "192.0.2.1" {
		t.Fatalf("Exchange = %v, %v; want a's answer", r, err)
	}
	oldA := (*f.servers.Load())[0]
	if oldA.udp.idleCount() != 1 {
		t.Fatalf("a has %d pooled sockets, want 1", oldA.udp.idleCount())
	}

	// b first, a kept: a keeps its counters.
	if err := f.SetServers([]Spec{b.spec(ProtoUDP), a.spec(ProtoUDP), b.spec(ProtoUDP)}); err != nil {
		t.Fatalf("SetServers: %v", err)
	}
	stats := f.ServerStats()
	if len(stats) != 2 || stats[0].Spec != b.spec(ProtoUDP) || stats[1].Answers != 1 {
		t.Fatalf("stats after reload %+v, want [b a] with a's counters kept", stats)
	}
	if r, err := exchange(t, f, context.Background(), "x.test."); err != nil || firstA(r) != "192.0.2.2" {
		t.Fatalf("Exchange = %v, %v; want b's answer", r, err)
	}

	// a removed: its sockets are closed.
	if err := f.SetServers([]Spec{b.spec(ProtoUDP)}); err != nil {
		t.Fatalf("SetServers: %v", err)
	}
	if oldA.udp.idleCount() != 0 || !oldA.isClosed() {
		t.Errorf("removed server not closed")
	}
	if err := f.SetServers(nil); err == nil {
		t.Error("SetServers(nil) succeeded, want an error and the list kept")
	}
	if err := f.SetServers([]Spec{{Proto: "quic", Addr: "192.0.2.1:53"}}); err == nil {
		t.Error("SetServers with a bad proto succeeded")
	}
	if len(f.ServerStats()) != 1 {
		t.Errorf("failed SetServers changed the list")
	}

	f.Close()
	if _, err := exchange(t, f, context.Background(), "x.test."); !errors.Is(err, ErrAllFailed) {
		t.Errorf("Exchange after Close: %v, want ErrAllFailed", err)
	}
}

func TestNewForwarderErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "no servers", cfg: Config{}},
		{name: "bad proto", cfg: Config{Servers: []Spec{{Proto: "doh", Addr: "192.0.2.1:443"}}}},
		{name: "no address", cfg: Config{Servers: []Spec{{Proto: ProtoUDP}}}},
	}
	for _, tt := range tests {
		if _, err := NewForwarder(tt.cfg); err == nil || !strings.HasPrefix(err.Error(), "new forwarder: ") {
			t.Errorf("%s: error = %v, want a new forwarder error", tt.name, err)
		}
	}
}

func TestForwarderRejectsMultipleQuestions(t *testing.T) {
	up := startFake(t, answerA("192.0.2.1"))
	f := newForwarder(t, Config{Servers: []Spec{up.spec(ProtoUDP)}})
	m := query("a.test.", dns.TypeA)
	m.Question = append(m.Question, m.Question[0])
	if _, err := f.Exchange(context.Background(), m, false); err == nil {
		t.Fatal("Exchange with two questions succeeded")
	}
}

func BenchmarkForwarderUDP(b *testing.B) {
	up := startFake(b, answerA("192.0.2.1"))
	f := newForwarder(b, Config{Servers: []Spec{up.spec(ProtoUDP)}, Logger: nil})
	q := query("bench.test.", dns.TypeA)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Exchange(ctx, q, false); err != nil {
			b.Fatal(err)
		}
	}
}

// When the caller's deadline is no longer than one try, a dead first upstream
// must still be marked down, so the next query goes to the live second one
// (a caller deadline that ends a try is not an excuse for the server).
func TestForwarderMarksDownWhenCallerDeadlineEqualsTry(t *testing.T) {
	first := startFake(t, blackhole)
	second := startFake(t, answerA("192.0.2.2"))
	const try = 200 * time.Millisecond
	f := newForwarder(t, Config{
		Servers:       []Spec{first.spec(ProtoUDP), second.spec(ProtoUDP)},
		Timeout:       try,
		ProbeInterval: time.Hour,
	})
	ctx, cancel := context.WithTimeout(context.Background(), try)
	_, err := exchange(t, f, ctx, "a.example.test.")
	cancel()
	if err == nil {
		t.Fatal("the first query had no time left for the second upstream, yet it was answered")
	}
	if f.ServerStats()[0].Up {
		t.Fatal("the dead first upstream is still considered up")
	}
	ctx, cancel = context.WithTimeout(context.Background(), try)
	defer cancel()
	r, err := exchange(t, f, ctx, "b.example.test.")
	if err != nil || firstA(r) != "192.0.2.2" {
		t.Fatalf("second query: %v, %v; want the second upstream's answer", r, err)
	}
}
