package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/status"

	"github.com/sidedns/sidedns/control"
	"github.com/sidedns/sidedns/control/controlpb"
	"github.com/sidedns/sidedns/resolver"
)

// startControl opens the override store and serves the control API. When
// the socket cannot be had, because another process serves it (a second
// sidedns on the host) or because the default path is not writable (the
// image runs as nobody), sidedns serves DNS without it and without the
// state file beside it. A socket path given by the operator must work.
func (a *app) startControl(cfg config) error {
	log := a.log.Named("control")
	refresh := func() {
		if a.ops != nil {
			a.ops.Refresh() // after the publish, so the page shows the new table
		}
	}
	ccfg := control.Config{
		Socket: cfg.ControlSocket, TCP: cfg.ControlTCP,
		CA: cfg.ControlCA, Cert: cfg.ControlCert, Key: cfg.ControlKey,
		Logger: log,
	}
	try := func(ccfg control.Config) error {
		state := cfg.StateFile
		if state == "" && ccfg.Socket != "" {
			state = filepath.Join(filepath.Dir(ccfg.Socket), "overrides.json")
		}
		var err error
		if a.overrides, err = control.OpenStore(state); err != nil {
			log.Error("overrides not restored", zap.Error(err))
		}
		a.pub = control.NewPublisher(a.publishTarget(), a.overrides, log, refresh)
		if a.layers != nil {
			a.layers.notify(a.pub.Changed)
		}
		a.ctl, err = control.Start(ccfg, control.NewService(a.overrides, a.pub, log))
		return err
	}
	err := try(ccfg)
	if err != nil && ccfg.Socket != "" && (errors.Is(err, control.ErrSocketInUse) || ccfg.Socket == control.DefaultSocket) {
		log.Warn("serving without the control socket", zap.Error(err))
		ccfg.Socket = ""
		err = try(ccfg)
	}
	if err != nil {
		return fmt.Errorf("start control API: %w", err)
	}
	return nil
}

// controlCommands are the subcommands that talk to a running sidedns.
var controlCommands = map[string]func(ctx context.Context, c controlpb.ControlClient, args []string, stdout io.Writer) error{
	"drain":   cmdDrain,
	"undrain": cmdUndrain,
	"weight":  cmdWeight,
	"ls":      cmdList,
	"watch":   cmdWatch,
}

// controlUsage and controlHelp are the subcommand parts of --help.
const (
	controlUsage = "       sidedns drain NAME | undrain NAME | weight NAME N | ls | watch NAME\n"
	controlHelp  = `drain takes a container (by name or ID) out of answers while others are
left, undrain puts it back, weight sets how often it comes first (0 to
1000, default 100). They last until the container is destroyed and survive
a restart. ls lists the containers, and watch prints the answer set of a
name each time it changes. These talk to the running sidedns over
--control-socket (env SIDEDNS_CONTROL_SOCKET).
`
)

// runControl runs a control subcommand. It returns the exit code: 0, 1 when
// the call fails, 2 for bad usage.
func runControl(name string, args []string, getenv func(string) string, stdout, stderr io.Writer, sigs <-chan os.Signal) int {
	fs := flag.NewFlagSet("sidedns "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	socket := control.DefaultSocket
	if v := getenv(envName("control-socket")); v != "" {
		socket = v
	}
	fs.StringVar(&socket, "control-socket", socket, "")
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(stderr, "sidedns %s: %v\n", name, err)
		return 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	conn, err := control.Dial(socket)
	if err != nil {
		fmt.Fprintf(stderr, "sidedns %s: %v\n", name, err)
		return 1
	}
	defer conn.Close()
	err = controlCommands[name](ctx, controlpb.NewControlClient(conn), fs.Args(), stdout)
	var ue usageError
	switch {
	case err == nil || ctx.Err() != nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "sidedns %s: %v\n", name, err)
		return 2
	}
	if st, ok := status.FromError(err); ok {
		err = fmt.Errorf("%s: %s", st.Code(), st.Message())
	}
	fmt.Fprintf(stderr, "sidedns %s: %v\n", name, err)
	return 1
}

// callTimeout bounds one unary control call: the server answers at once.
const callTimeout = 5 * time.Second

func oneName(args []string, what string) (string, error) {
	if len(args) != 1 {
		return "", usageErrorf("want one %s, got %d arguments", what, len(args))
	}
	return args[0], nil
}

func cmdDrain(ctx context.Context, c controlpb.ControlClient, args []string, out io.Writer) error {
	name, err := oneName(args, "container")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	r, err := c.Drain(ctx, &controlpb.Target{Container: name})
	if err != nil {
		return err
	}
	printChange(out, r, "drained")
	return nil
}

func cmdUndrain(ctx context.Context, c controlpb.ControlClient, args []string, out io.Writer) error {
	name, err := oneName(args, "container")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	r, err := c.Undrain(ctx, &controlpb.Target{Container: name})
	if err != nil {
		return err
	}
	if r.Replica.Drained {
		fmt.Fprintf(out, "%s stays drained: its sidedns.weight label is 0; give it a weight\n", r.Replica.Name)
		return nil
	}
	printChange(out, r, "undrained")
	return nil
}

func cmdWeight(ctx context.Context, c controlpb.ControlClient, args []string, out io.Writer) error {
	if len(args) != 2 {
		return usageErrorf("want a container and a weight, got %d arguments", len(args))
	}
	w, err := strconv.ParseUint(args[1], 10, 32)
	if err != nil {
		return usageErrorf("weight %q: want 0 to %d", args[1], resolver.MaxWeight)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	r, err := c.SetWeight(ctx, &controlpb.SetWeightRequest{Container: args[0], Weight: uint32(w)})
	if err != nil {
		return err
	}
	printChange(out, r, fmt.Sprintf("weight %d", r.Replica.Weight))
	return nil
}

func printChange(out io.Writer, r *controlpb.ReplicaReply, what string) {
	suffix := ""
	if !r.Changed {
		suffix = " (already)"
	}
	fmt.Fprintf(out, "%s %s%s\n", r.Replica.Name, what, suffix)
}

func cmdList(ctx context.Context, c controlpb.ControlClient, args []string, out io.Writer) error {
	if len(args) != 0 {
		return usageErrorf("ls takes no arguments")
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	r, err := c.List(ctx, &controlpb.ListRequest{})
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tID\tHOST\tSERVICE\tWEIGHT\tTAGS\tSTATE\tHEALTH\tADDRESSES")
	for _, rp := range r.Replicas {
		svc := "-"
		if rp.Service != "" {
			svc = rp.Service + "." + rp.Project
		}
		weight := strconv.Itoa(int(rp.Weight))
		if rp.Drained {
			weight = "drained"
		}
		if rp.Overridden {
			weight += "*"
		}
		tags := strings.Join(rp.Tags, ",")
		if tags == "" {
			tags = "-"
		}
		id, host := rp.Id[:min(12, len(rp.Id))], "this"
		if rp.Host != "" {
			id, host = "-", rp.Host // another host's record has no container ID here
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", rp.Name, id, host, svc, weight, tags,
			rp.State, rp.Health, strings.Join(rp.Addresses, " "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out, "* set at run time; another host's replicas are steered on that host")
	return nil
}

// cmdWatch prints the answer set of a name, one line per change, until
// interrupted.
func cmdWatch(ctx context.Context, c controlpb.ControlClient, args []string, out io.Writer) error {
	name, err := oneName(args, "name")
	if err != nil {
		return err
	}
	stream, err := c.Watch(ctx, &controlpb.WatchRequest{Name: name})
	if err != nil {
		return err
	}
	for {
		set, err := stream.Recv()
		if err != nil {
			return err
		}
		fmt.Fprintln(out, answerLine(set))
	}
}

// answerLine is "web.shop.docker: 10.0.0.2 (web-1, weight 100), ...".
func answerLine(set *controlpb.AnswerSet) string {
	if len(set.Endpoints) == 0 {
		return set.Name + ": (no addresses)"
	}
	parts := make([]string, len(set.Endpoints))
	for i, e := range set.Endpoints {
		parts[i] = fmt.Sprintf("%s (%s, weight %d)", e.Address, e.Container, e.Weight)
	}
	return set.Name + ": " + strings.Join(parts, ", ")
}
