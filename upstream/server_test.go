package upstream

import (
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/miekg/dns"
)

func TestMatchReply(t *testing.T) {
	q := query("Www.Example.Test.", dns.TypeA)
	q.Id = 7
	reply := func(edit func(*dns.Msg)) []byte {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Question[0].Name = "www.example.test."
		m.Answer = append(m.Answer, aRecord("www.example.test.", "192.0.2.1"))
		edit(m)
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		b    []byte
		want bool
	}{
		{"matching, other case", reply(func(*dns.Msg) {}), true},
		{"wrong ID", reply(func(m *dns.Msg) { m.Id = 8 }), false},
		{"not a response", reply(func(m *dns.Msg) { m.Response = false }), false},
		{"wrong type", reply(func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeAAAA }), false},
		{"wrong class", reply(func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }), false},
		{"wrong name", reply(func(m *dns.Msg) { m.Question[0].Name = "www.example.org." }), false},
		{"two questions", reply(func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }), false},
		{"no question, FORMERR", reply(func(m *dns.Msg) { m.Question, m.Answer, m.Rcode = nil, nil, dns.RcodeFormatError }), true},
		{"no question, NOERROR", reply(func(m *dns.Msg) { m.Question = nil }), false},
		{"no question, SERVFAIL with records", reply(func(m *dns.Msg) { m.Question, m.Rcode = nil, dns.RcodeServerFailure }), false},
		{"runt", []byte{0, 7, 0x80}, false},
		{"garbage after header", append(reply(func(*dns.Msg) {})[:14], 0xff, 0xff), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, got := matchReply(q, tt.b); got != tt.want {
				t.Errorf("matchReply = %v, want %v", got, tt.want)
			}
		})
	}
}

// Pooled conns idle past the idle timeout are closed, not reused: the server
// has likely closed them. The bubble's clock makes the boundary exact.
func TestPoolIdleExpiry(t *testing.T) {
	const idle = 20 * time.Millisecond
	tests := []struct {
		name   string
		wait   time.Duration
		reused bool
	}{
		{"idle for the timeout", idle, true},
		{"idle past the timeout", idle + time.Nanosecond, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				// IdleTimeout reaches the pools through the config.
				f := newForwarder(t, Config{Servers: []Spec{{Proto: ProtoTCP, Addr: "127.0.0.1:1"}}, IdleTimeout: idle})
				p := &(*f.servers.Load())[0].stream
				c := &closeConn{}
				p.put(c)
				time.Sleep(tt.wait)
				got := p.get()
				if reused := got == net.Conn(c); reused != tt.reused || c.closed == tt.reused {
					t.Errorf("after %v idle: reused %v, closed %v; want reused %v", tt.wait, reused, c.closed, tt.reused)
				}
				if n := p.idleCount(); n != 0 {
					t.Errorf("pool still holds %d conns", n)
				}
			})
		})
	}
}

// closeConn is a net.Conn that only records Close, for pool tests.
type closeConn struct {
	net.Conn
	closed bool
}

func (c *closeConn) Close() error { c.closed = true; return nil }

// idleCount is the number of idle conns in the pool.
func (p *pool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

func TestPoolBounded(t *testing.T) {
	var p pool
	p.expiry = time.Minute
	for range maxIdle + 5 {
		p.put(nopConn{})
	}
	if n := p.idleCount(); n != maxIdle {
		t.Fatalf("pool holds %d conns, want at most %d", n, maxIdle)
	}
	p.close()
	if p.get() != nil {
		t.Fatal("closed pool returned a conn")
	}
	p.put(nopConn{})
	if n := p.idleCount(); n != 0 {
		t.Fatalf("closed pool kept %d conns", n)
	}
}
