package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// recorder sits between one resolver and the shared upstream: it writes the
// question of every query the resolver sends upstream to a log, then relays
// the query. compare reads the log to tell which questions were forwarded,
// which a reply alone does not show (a forwarded CH query comes back as a
// SERVFAIL that looks home-made).
type recorder struct {
	to  string
	mu  sync.Mutex
	log *os.File
}

// Names that start with slowPrefix are relayed after slowDelay.
const (
	slowPrefix = "slow-"
	slowDelay  = 300 * time.Millisecond
)

func (r *recorder) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	r.mu.Lock()
	for _, q := range req.Question {
		fmt.Fprintf(r.log, "%s\t%d\t%d\t%d\n", q.Name, q.Qclass, q.Qtype, req.Opcode)
	}
	r.mu.Unlock()
	if len(req.Question) > 0 && strings.HasPrefix(strings.ToLower(req.Question[0].Name), slowPrefix) {
		time.Sleep(slowDelay) // a slow upstream answer, for the pipelining case
	}
	c := &dns.Client{Net: w.RemoteAddr().Network(), Timeout: 2 * time.Second}
	resp, _, err := c.Exchange(req, r.to)
	if err != nil {
		return // the resolver times out, as it would with a dead upstream
	}
	_ = w.WriteMsg(resp)
}

// serveRecorder relays queries on listen to the upstream to, logging each
// question to logPath, until SIGTERM. It prints "ready" once it serves.
func serveRecorder(listen, to, logPath string) error {
	f, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("create upstream log: %w", err)
	}
	defer f.Close()
	h := &recorder{to: to, log: f}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 2)
	var servers []*dns.Server
	for _, network := range []string{"udp", "tcp"} {
		s := &dns.Server{Addr: listen, Net: network, Handler: h}
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go func() { errc <- s.ListenAndServe() }()
		select {
		case <-started:
		case err := <-errc:
			return fmt.Errorf("listen on %s/%s: %w", listen, network, err)
		}
		servers = append(servers, s)
	}
	fmt.Println("ready")
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

// upstreamQuestion is one question a recorder saw.
type upstreamQuestion struct {
	name         string // lower case
	class, qtype uint16
	opcode       int
}

func readUpstreamLog(path string) ([]upstreamQuestion, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open upstream log: %w", err)
	}
	defer f.Close()
	var out []upstreamQuestion
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var q upstreamQuestion
		if _, err := fmt.Sscanf(sc.Text(), "%s\t%d\t%d\t%d", &q.name, &q.class, &q.qtype, &q.opcode); err != nil {
			return nil, fmt.Errorf("read upstream log line %q: %w", sc.Text(), err)
		}
		q.name = strings.ToLower(q.name)
		out = append(out, q)
	}
	return out, sc.Err()
}
