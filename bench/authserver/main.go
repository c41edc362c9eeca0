// Command authserver is the loopback authoritative server the benchmark uses as
// the upstream of every resolver under test. It answers any A query under its
// zone with an address derived from the name, so every unique name is a real
// cache miss downstream and every answer is cacheable.
//
// The addresses only ever appear as RDATA: nothing sends traffic to them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/miekg/dns"
)

func main() {
	logger := log.New(os.Stderr, "authserver: ", log.LstdFlags)
	if err := run(logger, os.Args[1:]); err != nil {
		logger.Fatal(err)
	}
}

func run(logger *log.Logger, args []string) error {
	fs := flag.NewFlagSet("authserver", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:5300", "UDP and TCP address to serve on (loopback only)")
	zone := fs.String("zone", "test.", "zone to be authoritative for")
	ttl := fs.Uint("ttl", 3600, "TTL of every answer")
	sockets := fs.Int("sockets", 2, "UDP sockets sharing the port with SO_REUSEPORT (one reader each)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("parse flags: %w", err)
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return fmt.Errorf("parse listen address: %w", err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("listen address %q is not loopback", *listen)
	}
	if *sockets < 1 {
		return errors.New("need at least one socket")
	}

	h := newHandler(dns.CanonicalName(*zone), uint32(*ttl))
	var servers []*dns.Server
	for i := 0; i < *sockets; i++ {
		servers = append(servers, &dns.Server{Addr: *listen, Net: "udp", Handler: h, ReusePort: *sockets > 1})
	}
	servers = append(servers, &dns.Server{Addr: *listen, Net: "tcp", Handler: h})

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	errc := make(chan error, len(servers))
	for _, s := range servers {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go func(s *dns.Server) { errc <- s.ListenAndServe() }(s)
		select {
		case <-started:
		case err := <-errc:
			return fmt.Errorf("listen on %s/%s: %w", *listen, s.Net, err)
		}
	}
	logger.Printf("serving %s on %s (%d udp sockets + tcp)", *zone, *listen, *sockets)

	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	}
	for _, s := range servers {
		_ = s.Shutdown()
	}
	return nil
}

type handler struct {
	zone string
	ttl  uint32
	soa  *dns.SOA
	ns   *dns.NS
}

func newHandler(zone string, ttl uint32) *handler {
	return &handler{
		zone: zone,
		ttl:  ttl,
		soa: &dns.SOA{
			Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
			Ns:      "ns." + zone,
			Mbox:    "hostmaster." + zone,
			Serial:  1,
			Refresh: 3600,
			Retry:   600,
			Expire:  86400,
			Minttl:  300,
		},
		ns: &dns.NS{
			Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: ttl},
			Ns:  "ns." + zone,
		},
	}
}

func (h *handler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Compress = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := dns.CanonicalName(q.Name)
	if q.Qclass != dns.ClassINET || !dns.IsSubDomain(h.zone, name) {
		m.Rcode = dns.RcodeRefused
		_ = w.WriteMsg(m)
		return
	}
	m.Authoritative = true
	switch {
	case q.Qtype == dns.TypeA:
		m.Answer = []dns.RR{&dns.A{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: h.ttl},
			A:   addrFor(name),
		}}
	case name == h.zone && q.Qtype == dns.TypeSOA:
		m.Answer = []dns.RR{h.soa}
	case name == h.zone && q.Qtype == dns.TypeNS:
		m.Answer = []dns.RR{h.ns}
	default:
		// Every name exists (it has an A record), so any other type is NODATA.
		m.Ns = []dns.RR{h.soa}
	}
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), false)
	}
	_ = w.WriteMsg(m)
}

// addrFor maps a name to a stable address in 10.0.0.0/8.
func addrFor(name string) net.IP {
	f := fnv.New32a()
	_, _ = f.Write([]byte(strings.ToLower(name)))
	s := f.Sum32()
	return net.IPv4(10, byte(s>>16), byte(s>>8), byte(s))
}
