// Command conformance asks sidedns and unbound the same questions, over UDP
// and TCP, and prints a table of how their replies differ. A difference that a
// rule in rules.go explains passes; any other makes it exit 1.
//
//	conformance docker -socket PATH       serve the zone's containers as a fake Docker daemon
//	conformance unbound-data              print unbound's local-data for the same zone
//	conformance compare -unbound ADDR -sidedns ADDR [-v]
//	conformance dump -server ADDR         one server's replies, for the record
//	conformance probe -server ADDR -name N  exit 0 when ADDR answers N A
//
// run.sh starts everything on loopback and runs compare.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/miekg/dns"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: conformance docker|unbound-data|compare|dump [flags]")
	}
	fs := flag.NewFlagSet("conformance "+args[0], flag.ContinueOnError)
	socket := fs.String("socket", "", "unix socket for the fake Docker daemon")
	unbound := fs.String("unbound", "", "unbound's ip:port")
	sidedns := fs.String("sidedns", "", "sidedns's ip:port")
	server := fs.String("server", "", "the server to dump")
	timeout := fs.Duration("timeout", time.Second, "wait for one reply; a malformed query may get none")
	verbose := fs.Bool("v", false, "print every reply in full, not only the differing ones")
	only := fs.String("cases", "", "comma-separated case ids to run (default: all)")
	name := fs.String("name", "", "probe: the name to ask (A)")
	md := fs.Bool("md", false, "dump: a markdown table, UDP and TCP merged when equal")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "docker":
		if *socket == "" {
			return fmt.Errorf("docker needs -socket")
		}
		return serveDocker(*socket)
	case "unbound-data":
		_, err := io.WriteString(out, unboundLocalData())
		return err
	case "probe":
		// For run.sh's start-up waits: exit 0 once -server answers -name A with an address.
		r := exchange("udp", *server, pack(q(*name, dns.TypeA)), *timeout)
		if r.msg == nil || r.msg.Rcode != dns.RcodeSuccess || len(r.msg.Answer) == 0 {
			return fmt.Errorf("probe %s %s: %s", *server, *name, summarize(r).long())
		}
		return nil
	case "dump":
		if *server == "" {
			return fmt.Errorf("dump needs -server")
		}
		res := ask(selectCases(*only), []string{*server}, *timeout)
		if *md {
			dumpMarkdown(out, res)
			return nil
		}
		for _, r := range res {
			fmt.Fprintf(out, "%-20s %s  %s\n", r.c.id, r.proto, r.got[0].long())
		}
		return nil
	case "compare":
		if *unbound == "" || *sidedns == "" {
			return fmt.Errorf("compare needs -unbound and -sidedns")
		}
		res := ask(selectCases(*only), []string{*unbound, *sidedns}, *timeout)
		if bad := report(out, res, *verbose); bad > 0 {
			return fmt.Errorf("%d unexplained differences", bad)
		}
		return nil
	}
	return fmt.Errorf("unknown command %q", args[0])
}

func selectCases(only string) []tcase {
	all := cases()
	if only == "" {
		return all
	}
	want := map[string]bool{}
	for _, id := range strings.Split(only, ",") {
		want[id] = true
	}
	var out []tcase
	for _, c := range all {
		if want[c.id] {
			out = append(out, c)
		}
	}
	return out
}

// result is one case over one protocol: a summary per server, in the order asked.
type result struct {
	c     tcase
	proto string
	got   []summary
}

// ask runs every case over UDP and TCP against every server, a few cases at a
// time. Each (case, protocol) gets its own fresh name, the same for every server.
func ask(cs []tcase, servers []string, timeout time.Duration) []result {
	run := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	var res []result
	for _, c := range cs {
		for _, proto := range []string{"udp", "tcp"} {
			if proto == "tcp" && c.udpOnly {
				continue
			}
			res = append(res, result{c: c, proto: proto, got: make([]summary, len(servers))})
		}
	}
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range res {
		r := &res[i]
		fresh := fmt.Sprintf("%s-%s-%s.test.", r.c.id, r.proto, run)
		pkts := r.c.packets(fresh)
		for j, srv := range servers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				var rep reply
				for _, p := range pkts {
					rep = exchange(r.proto, srv, p, timeout)
				}
				r.got[j] = summarize(rep)
			}()
		}
	}
	wg.Wait()
	return res
}

// report prints the table and the details of every difference, and returns
// how many differences no rule explains.
func report(out io.Writer, res []result, verbose bool) int {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "case\tproto\tunbound\tsidedns\tverdict")
	type detail struct {
		r       result
		verdict string
	}
	var details []detail
	bad, explained, same := 0, 0, 0
	for _, r := range res {
		u, s := r.got[0], r.got[1]
		verdict := "same"
		if u.long() != s.long() {
			if rule := explain(r.c.id, r.proto, u, s); rule != "" {
				verdict = "explained:" + rule
				explained++
			} else {
				verdict = "DIFFERS"
				bad++
			}
		} else {
			same++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.c.id, r.proto, u.short(), s.short(), verdict)
		if verdict != "same" || verbose {
			details = append(details, detail{r, verdict})
		}
	}
	_ = tw.Flush()
	fmt.Fprintf(out, "\n%d same, %d explained, %d DIFFER (of %d)\n", same, explained, bad, len(res))
	if len(details) > 0 {
		fmt.Fprintln(out, "\ndetails:")
	}
	for _, d := range details {
		fmt.Fprintf(out, "%s/%s (%s) %s\n  unbound: %s\n  sidedns: %s\n", d.r.c.id, d.r.proto, d.r.c.desc, d.verdict,
			d.r.got[0].long(), d.r.got[1].long())
	}
	if bad == 0 {
		fmt.Fprintln(out, "\nno unexplained differences")
	}
	fmt.Fprintln(out, "\nexplained-difference rules:")
	for _, rl := range rules {
		fmt.Fprintf(out, "  %-18s %s\n", rl.id, rl.reason)
	}
	return bad
}

// freshName matches the unique names ask makes, in any case.
var freshName = regexp.MustCompile(`(?i)[a-z0-9.-]+-(udp|tcp)-[a-z0-9]+\.test\.`)

// dumpMarkdown prints one server's replies as a markdown table, one row per
// case (two when UDP and TCP differ).
func dumpMarkdown(out io.Writer, res []result) {
	fmt.Fprintln(out, "| case | query | proto | rcode | flags | an/ns/ar | OPT | SOA in authority | reply in full |")
	fmt.Fprintln(out, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	cell := func(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
	for i := 0; i < len(res); i++ {
		r := res[i]
		proto := r.proto
		if i+1 < len(res) && res[i+1].c.id == r.c.id && res[i+1].got[0].short() == r.got[0].short() &&
			res[i+1].got[0].opt == r.got[0].opt {
			proto = "udp+tcp"
			i++
		}
		s := r.got[0]
		if s.none != "" {
			fmt.Fprintf(out, "| %s | %s | %s | %s | | | | | |\n", r.c.id, cell(r.c.desc), proto, s.none)
			continue
		}
		opt := "no"
		if s.opt != "" {
			opt = s.opt
		}
		soa := "no"
		if hasSOA(s.ns) {
			soa = "yes"
		}
		full := freshName.ReplaceAllString(s.long(), "<fresh>.test.")
		fmt.Fprintf(out, "| %s | %s | %s | %s | %s | %d/%d/%d | %s | %s | `%s` |\n", r.c.id, cell(r.c.desc), proto,
			s.rcode, s.flags, len(s.answer), len(s.ns), len(s.extra), opt, soa, cell(full))
	}
}
