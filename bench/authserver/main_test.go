package main

import (
	"net"
	"testing"

	"github.com/miekg/dns"
)

// startServer serves h on a loopback UDP port and returns its address.
func startServer(tb testing.TB, h dns.Handler) string {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(started) }}
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	tb.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

func TestHandler(t *testing.T) {
	addr := startServer(t, newHandler("test.", 3600))
	tests := []struct {
		name      string
		qname     string
		qtype     uint16
		wantRcode int
		wantA     bool
		wantSOA   bool // SOA in the authority section (NODATA)
	}{
		{name: "A under the zone", qname: "h1.test.", qtype: dns.TypeA, wantRcode: dns.RcodeSuccess, wantA: true},
		{name: "mixed case", qname: "H1.TeSt.", qtype: dns.TypeA, wantRcode: dns.RcodeSuccess, wantA: true},
		{name: "AAAA is NODATA", qname: "h1.test.", qtype: dns.TypeAAAA, wantRcode: dns.RcodeSuccess, wantSOA: true},
		{name: "outside the zone", qname: "example.com.", qtype: dns.TypeA, wantRcode: dns.RcodeRefused},
	}
	c := new(dns.Client)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := new(dns.Msg).SetQuestion(tt.qname, tt.qtype)
			r, _, err := c.Exchange(q, addr)
			if err != nil {
				t.Fatalf("exchange: %v", err)
			}
			if r.Rcode != tt.wantRcode {
				t.Fatalf("rcode = %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.wantRcode])
			}
			if got := len(r.Answer) == 1; got != tt.wantA {
				t.Fatalf("answer = %v, want one A: %v", r.Answer, tt.wantA)
			}
			if tt.wantA {
				a := r.Answer[0].(*dns.A)
				if a.Hdr.Name != tt.qname || a.Hdr.Ttl != 3600 || !a.A.Equal(addrFor("h1.test.")) {
					t.Fatalf("answer = %v, want %s A %s TTL 3600", a, tt.qname, addrFor("h1.test."))
				}
			}
			if got := len(r.Ns) == 1; got != tt.wantSOA {
				t.Fatalf("authority = %v, want SOA: %v", r.Ns, tt.wantSOA)
			}
		})
	}
}

func TestAddrForIsStableAndSpread(t *testing.T) {
	if !addrFor("a.test.").Equal(addrFor("A.TEST.")) {
		t.Fatal("address depends on case")
	}
	seen := map[string]bool{}
	for _, n := range []string{"h1.test.", "h2.test.", "h3.test.", "c1-1.test."} {
		ip := addrFor(n)
		if ip.To4()[0] != 10 {
			t.Fatalf("%s -> %s, want 10/8", n, ip)
		}
		seen[ip.String()] = true
	}
	if len(seen) != 4 {
		t.Fatalf("addresses collide: %v", seen)
	}
}
