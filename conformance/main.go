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
	"bytes"
	"cmp"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
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
	listen := fs.String("listen", "", "recorder: address to serve on")
	to := fs.String("to", "", "recorder: the upstream to relay to")
	logPath := fs.String("log", "", "recorder: file to write the questions to")
	unboundLog := fs.String("unbound-log", "", "compare: the log of unbound's upstream recorder")
	sidednsLog := fs.String("sidedns-log", "", "compare: the log of sidedns's upstream recorder")
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
	case "recorder":
		if *listen == "" || *to == "" || *logPath == "" {
			return fmt.Errorf("recorder needs -listen, -to and -log")
		}
		return serveRecorder(*listen, *to, *logPath)
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
		res, err := ask(selectCases(*only), []target{{*server, *unboundLog}}, *timeout)
		if err != nil {
			return err
		}
		if _, err := zoneLeaks(out, "unbound", *unboundLog); err != nil {
			return err
		}
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
		t0 := time.Now()
		res, err := ask(selectCases(*only), []target{{*unbound, *unboundLog}, {*sidedns, *sidednsLog}}, *timeout)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "asked %d questions of each server in %.1fs\n", len(res), time.Since(t0).Seconds())
		if _, err := zoneLeaks(out, "unbound", *unboundLog); err != nil {
			return err
		}
		leak, err := zoneLeaks(out, "sidedns", *sidednsLog)
		if err != nil {
			return err
		}
		fmt.Fprintln(out)
		bad := report(out, res, *verbose)
		if leak {
			fmt.Fprintln(out, "DIFFERS: sidedns sent zone names upstream (see above)")
			bad++
		}
		if bad > 0 {
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
	key   string // what a forward of the case's last packet looks like in an upstream log
}

// target is one server and, optionally, the log of its upstream recorder.
type target struct {
	addr, upstreamLog string
}

// ask runs every case over UDP and TCP against every server. Each (case,
// protocol) gets its own fresh name under test., the same for every server.
// With an upstream log, a case is marked forwarded when its last packet added
// a line with its name to the log. Cases that ask the same name (web.docker.)
// run one after another so that each forward is put down to the right case;
// the others run a few at a time.
func ask(cs []tcase, servers []target, timeout time.Duration) ([]result, error) {
	run := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	var res []result
	type work struct {
		r    *result
		pkts [][]byte
	}
	for _, c := range cs {
		for _, proto := range []string{"udp", "tcp"} {
			if (proto == "tcp" && c.udpOnly) || (proto == "udp" && c.pipelined) {
				continue
			}
			res = append(res, result{c: c, proto: proto, got: make([]summary, len(servers))})
		}
	}
	groups := map[string][]work{}
	var order []string
	for i := range res {
		r := &res[i]
		fresh := fmt.Sprintf("%s-%s-%s.test.", r.c.id, r.proto, run)
		pkts := r.c.packets(fresh)
		r.key = forwardKey(pkts[len(pkts)-1], fresh, r.c.id)
		if _, ok := groups[r.key]; !ok {
			order = append(order, r.key)
		}
		groups[r.key] = append(groups[r.key], work{r, pkts})
	}
	sem := make(chan struct{}, 8)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for _, key := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			for _, w := range groups[key] {
				var swg sync.WaitGroup
				for j, srv := range servers {
					swg.Add(1)
					go func() {
						defer swg.Done()
						sum, err := askOne(w.r, srv, w.pkts, timeout)
						if err != nil {
							mu.Lock()
							firstErr = cmp.Or(firstErr, err)
							mu.Unlock()
						}
						w.r.got[j] = sum
					}()
				}
				swg.Wait()
			}
		}()
	}
	wg.Wait()
	return res, firstErr
}

// askOne sends pkts to one server and summarises the reply to the last one,
// marking it forwarded when the last packet added key to the upstream log.
func askOne(r *result, srv target, pkts [][]byte, timeout time.Duration) (summary, error) {
	if r.c.pipelined {
		// The order is what counts: wait out a slow forward that a busy machine makes slower.
		return pipeline(srv.addr, pkts, 3*timeout), nil
	}
	proto, key := r.proto, r.key
	var rep reply
	for _, p := range pkts[:len(pkts)-1] {
		exchange(proto, srv.addr, p, timeout)
	}
	before, err := countForwards(srv.upstreamLog, key)
	if err != nil {
		return summary{}, err
	}
	rep = exchange(proto, srv.addr, pkts[len(pkts)-1], timeout)
	after, err := countForwards(srv.upstreamLog, key)
	sum := summarize(rep)
	sum.upstream = after > before
	return sum, err
}

// forwardKey is how a forward of pkt shows in an upstream log: its fresh name
// when it has one, else the name in its question, else nothing that a log
// line can match. Any type and class count: unbound forwards a class ANY
// query as class IN.
func forwardKey(pkt []byte, fresh, id string) string {
	wire := make([]byte, 256)
	n, err := dns.PackDomainName(fresh, wire, 0, nil, false)
	if err == nil && bytes.Contains(bytes.ToLower(pkt), wire[:n]) {
		return "name " + fresh
	}
	if m := new(dns.Msg); m.Unpack(pkt) == nil && len(m.Question) > 0 {
		return "name " + strings.ToLower(m.Question[0].Name)
	}
	return "none " + id
}

// countForwards counts the lines of the upstream log that match key; 0 without a log.
func countForwards(path, key string) (int, error) {
	if path == "" {
		return 0, nil
	}
	qs, err := readUpstreamLog(path)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, u := range qs {
		if key == "name "+u.name {
			n++
		}
	}
	return n, nil
}

// zoneLeaks prints every question for a zone name that a server's upstream
// log holds, and reports whether there was any: a zone name never goes upstream.
func zoneLeaks(out io.Writer, who, path string) (bool, error) {
	if path == "" {
		return false, nil
	}
	qs, err := readUpstreamLog(path)
	if err != nil {
		return false, err
	}
	var names []string
	for _, u := range qs {
		if dns.IsSubDomain(zone, u.name) {
			names = append(names, fmt.Sprintf("%s %s %s", u.name, dns.ClassToString[u.class], typeString(u.qtype)))
		}
	}
	if len(names) > 0 {
		fmt.Fprintf(out, "%s sent %d questions for zone names upstream: %s\n", who, len(names), strings.Join(names, "; "))
	}
	return len(names) > 0, nil
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
		switch {
		case s.upstream && slices.Contains(neverForwarded, r.c.id):
			verdict = "DIFFERS (forwarded)"
			bad++
		case u.long() != s.long():
			if rule := explain(r.c.id, u, s); rule != "" {
				verdict = "explained:" + rule
				explained++
			} else {
				verdict = "DIFFERS"
				bad++
			}
		default:
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
	fmt.Fprintln(out, "| case | query | proto | rcode | flags | an/ns/ar | OPT | SOA in authority | forwarded | reply in full |")
	fmt.Fprintln(out, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
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
			fmt.Fprintf(out, "| %s | %s | %s | %s | | | | | %s | |\n", r.c.id, cell(r.c.desc), proto, s.none, yesNo(s.upstream))
			continue
		}
		opt := "no"
		if s.opt != "" {
			opt = s.opt
		}
		soa := yesNo(hasSOA(s.ns))
		full := freshName.ReplaceAllString(s.long(), "<fresh>.test.")
		fmt.Fprintf(out, "| %s | %s | %s | %s | %s | %d/%d/%d | %s | %s | %s | `%s` |\n", r.c.id, cell(r.c.desc), proto,
			s.rcode, s.flags, len(s.answer), len(s.ns), len(s.extra), opt, soa, yesNo(s.upstream), cell(full))
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
