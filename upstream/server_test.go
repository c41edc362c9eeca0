package upstream

import (
	"context"
	"testing"
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

// Pooled conns idle past the idle timeout are not reused: the server has
// likely closed them.
func TestPoolIdleExpiry(t *testing.T) {
	up := startFake(t, answerA("192.0.2.1"))
	f := newForwarder(t, Config{Servers: []Spec{up.spec(ProtoTCP)}, IdleTimeout: 20 * time.Millisecond})
	for i, name := range []string{"a.test.", "b.test."} {
		if i > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		if _, err := exchange(t, f, context.Background(), name); err != nil {
			t.Fatalf("Exchange %s: %v", name, err)
		}
	}
	if n := up.accepted.Load(); n != 2 {
		t.Fatalf("upstream accepted %d connections, want 2 (the idle one expired)", n)
	}
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
