// Command probe is a tiny static helper baked into the FROM-scratch test image
// used by the e2e tests. It is also installed as /bin/sh in that image so that
// Docker's CMD-SHELL healthchecks ("sh -c '/probe health'") work without a shell.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

const healthyFile = "/tmp/healthy"

func main() {
	args := os.Args[1:]
	// Invoked as a shell: "sh -c 'CMD ARGS'". Run the command in-process.
	if filepath.Base(os.Args[0]) == "sh" {
		if len(args) < 2 || args[0] != "-c" {
			fmt.Fprintln(os.Stderr, "probe-as-sh: only 'sh -c CMD' is supported")
			os.Exit(2)
		}
		args = strings.Fields(args[1])
		if len(args) > 0 && filepath.Base(args[0]) == "probe" {
			args = args[1:]
		}
	}
	os.Exit(run(args, os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: probe serve|dig|health|mark|cat|dnsrecord ...")
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stdout)
	case "dig":
		return dig(args[1:], stdout, stderr)
	case "health":
		if _, err := os.Stat(healthyFile); err != nil {
			fmt.Fprintln(stderr, "unhealthy")
			return 1
		}
		return 0
	case "mark":
		err = mark(args[1:])
	case "cat":
		err = cat(args[1:], stdout)
	case "dnsrecord":
		err = dnsrecord(args[1:], stdout)
	default:
		err = fmt.Errorf("unknown subcommand %q", args[0])
	}
	if err != nil {
		fmt.Fprintln(stderr, "probe:", err)
		return 1
	}
	return 0
}

// serve sleeps until SIGTERM/SIGINT. As PID 1 a process gets no default signal
// handling, so we exit explicitly to keep `docker stop` fast.
func serve(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	httpAddr := fs.String("http", "", "serve HTTP 200 'ok' on this address")
	tcpAddr := fs.String("tcp", "", "accept and close TCP connections on this address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *httpAddr != "" {
		ln, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			return fmt.Errorf("listen http: %w", err)
		}
		go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, "ok")
		}))
	}
	if *tcpAddr != "" {
		ln, err := net.Listen("tcp", *tcpAddr)
		if err != nil {
			return fmt.Errorf("listen tcp: %w", err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	fmt.Fprintln(stdout, "probe: serving")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return nil
}

// dig prints a header line and one line per answer RR. It exits 0 for any DNS
// reply (NXDOMAIN included) and 1 only when no reply arrived.
func dig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dig", flag.ContinueOnError)
	server := fs.String("server", "", "ip:port (default: first nameserver in /etc/resolv.conf)")
	useTCP := fs.Bool("tcp", false, "query over TCP")
	timeout := fs.Duration("timeout", 2*time.Second, "query timeout")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		fmt.Fprintln(stderr, "usage: probe dig [-server ip:port] [-tcp] NAME [TYPE]")
		return 2
	}
	name := dns.Fqdn(fs.Arg(0))
	qtype := dns.TypeA
	if fs.NArg() == 2 {
		t, ok := dns.StringToType[strings.ToUpper(fs.Arg(1))]
		if !ok {
			fmt.Fprintf(stderr, "unknown type %q\n", fs.Arg(1))
			return 2
		}
		qtype = t
	}
	addr := *server
	if addr == "" {
		ns, err := firstNameserver("/etc/resolv.conf")
		if err != nil {
			fmt.Fprintln(stderr, "probe dig:", err)
			return 1
		}
		addr = net.JoinHostPort(ns, "53")
	}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Timeout: *timeout}
	if *useTCP {
		c.Net = "tcp"
	}
	r, rtt, err := c.Exchange(m, addr)
	if err != nil {
		fmt.Fprintf(stderr, "probe dig: exchange with %s: %v\n", addr, err)
		return 1
	}
	fmt.Fprintf(stdout, ";; status: %s, answers: %d, server: %s, aa: %t, tc: %t, rtt: %s\n",
		dns.RcodeToString[r.Rcode], len(r.Answer), addr, r.Authoritative, r.Truncated, rtt)
	for _, rr := range r.Answer {
		fmt.Fprintln(stdout, strings.ReplaceAll(rr.String(), "\t", " "))
	}
	return 0
}

func firstNameserver(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("open resolv.conf: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			return fields[1], nil
		}
	}
	return "", errors.New("no nameserver in " + path)
}

func mark(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: probe mark healthy|unhealthy")
	}
	switch args[0] {
	case "healthy":
		if err := os.MkdirAll(filepath.Dir(healthyFile), 0o1777); err != nil {
			return fmt.Errorf("create /tmp: %w", err)
		}
		return os.WriteFile(healthyFile, []byte("ok\n"), 0o644)
	case "unhealthy":
		if err := os.Remove(healthyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove marker: %w", err)
		}
		return nil
	}
	return fmt.Errorf("unknown state %q", args[0])
}

func cat(args []string, stdout io.Writer) error {
	for _, p := range args {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("read file: %w", err)
		}
		stdout.Write(b)
	}
	return nil
}

// dnsrecord is a fake DNS server: every A query gets 192.0.2.1, everything
// else an empty NOERROR; each query is logged as "query NAME TYPE from ADDR".
func dnsrecord(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("dnsrecord", flag.ContinueOnError)
	listen := fs.String("listen", ":53", "UDP and TCP listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	out := make(chan string, 64)
	go func() {
		for line := range out {
			fmt.Fprintln(stdout, line)
		}
	}()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if len(r.Question) == 1 {
			q := r.Question[0]
			out <- fmt.Sprintf("query %s %s from %s", q.Name, dns.TypeToString[q.Qtype], w.RemoteAddr())
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A:   net.IPv4(192, 0, 2, 1),
				})
			}
		}
		w.WriteMsg(m)
	})
	errc := make(chan error, 2)
	for _, netw := range []string{"udp", "tcp"} {
		srv := &dns.Server{Addr: *listen, Net: netw, Handler: h}
		go func() { errc <- srv.ListenAndServe() }()
	}
	return <-errc
}
