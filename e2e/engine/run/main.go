// Command run starts the private current Docker Engine in a network namespace of its own, runs a
// command there with DOCKER_HOST and DOCKER_CONFIG set for it (an interactive shell by default), and
// stops the engine when the command ends. Usage, from the module root:
//
//	go run ./e2e/engine/run [-live-restore] [command [args...]]
//
// The engine binaries must be built first (e2e/engine/build.sh). The command sees the namespace's own
// loopback and the engine's bridge sdnsbr0, not the machine's network.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/sidedns/sidedns/e2e/engine"
)

func main() {
	os.Exit(run())
}

func run() int {
	live := flag.Bool("live-restore", false, "start dockerd with --live-restore")
	flag.Parse()
	// Ctrl-C reaches the command, which ends; then the engine is stopped on the way out.
	signal.Ignore(syscall.SIGINT)
	in, err := engine.InPrivateNetns()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if !in {
		code, err := engine.Reexec()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return code
	}
	wd, _ := os.Getwd()
	bin, err := engine.Binaries(filepath.Join(wd, "e2e", "engine", "build.sh"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx := context.Background()
	e, err := engine.Start(ctx, "", bin, nil, engine.DaemonOptions{LiveRestore: *live})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start private engine:", err)
		return 1
	}
	defer func() {
		if err := e.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "stop private engine:", err)
		}
	}()
	fmt.Fprintf(os.Stderr, "private engine up: %s (logs in %s)\n", e.Host(), e.Root())
	args := flag.Args()
	if len(args) == 0 {
		args = []string{"sh"}
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), e.Env()...)
	if err := cmd.Run(); err != nil {
		if x, ok := err.(*exec.ExitError); ok {
			return x.ExitCode()
		}
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
