package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sidedns/sidedns/e2e/engine"
)

// engineEnv selects the engine the live suite runs against. Unset (or "machine"): the daemon that
// DOCKER_HOST names, by default the machine's Engine 20.10. "current": a private current engine (moby v2,
// containerd v2, compose v2) built by e2e/engine/build.sh, which the suite starts in a network namespace
// of its own and stops at the end. Only the current engine's run can hurt a daemon on purpose (the
// fault tests), because that daemon belongs to the run.
const engineEnv = "SIDEDNS_E2E_ENGINE"

// privateEngine is the running private engine, nil on the machine's engine.
var privateEngine *engine.Engine

func wantCurrentEngine() bool { return os.Getenv(engineEnv) == "current" }

// enterEngine runs first in TestMain. For the current engine it re-runs the test binary in a fresh
// network namespace (returning the child's exit code with exit=true), and there starts the engine and
// points DOCKER_HOST and DOCKER_CONFIG at it. The returned stop ends it after the run.
func enterEngine() (stop func(), code int, exit bool) {
	if !wantCurrentEngine() {
		return func() {}, 0, false
	}
	flag.Parse()
	if testing.Short() {
		return func() {}, 0, false
	}
	in, err := engine.InPrivateNetns()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return nil, 1, true
	}
	if !in {
		code, err := engine.Reexec()
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return nil, 1, true
		}
		return nil, code, true
	}
	bin, err := engine.Binaries(filepath.Join(moduleRoot(), "e2e", "engine", "build.sh"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %s=current but %v\n", engineEnv, err)
		return nil, 1, true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	e, err := engine.Start(ctx, "", bin, nil, engine.DaemonOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: start private engine:", err)
		return nil, 1, true
	}
	privateEngine = e
	dockerSock = e.Socket()
	for _, kv := range e.Env() {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	fmt.Fprintf(os.Stderr, "e2e: private current engine up in %s at %s\n", time.Since(start).Round(time.Millisecond), e.Host())
	return func() {
		if err := e.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: stop private engine:", err)
		}
	}, 0, false
}

// requirePrivateEngine skips loudly unless the run owns a private current engine: the tests that kill
// or restart a daemon run only there, never against the machine's.
func requirePrivateEngine(t *testing.T) *engine.Engine {
	t.Helper()
	requireDocker(t)
	if privateEngine != nil {
		return privateEngine
	}
	why := "this run uses the machine's engine; set " + engineEnv + "=current"
	if _, err := engine.Binaries(filepath.Join(moduleRoot(), "e2e", "engine", "build.sh")); err != nil {
		why = err.Error() + "; then set " + engineEnv + "=current"
	}
	t.Skipf("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"+
		"!!! SKIPPING PRIVATE-ENGINE TEST (daemon faults on a current engine): %s\n"+
		"!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!", why)
	return nil
}

// serverAPI returns the daemon's API version as major, minor (1, 41 on Engine 20.10).
func serverAPI(t testing.TB) (int, int) {
	t.Helper()
	v := mustDocker(t, "version", "--format", "{{.Server.APIVersion}}")
	maj, min, _ := strings.Cut(v, ".")
	a, err1 := strconv.Atoi(maj)
	b, err2 := strconv.Atoi(min)
	if err1 != nil || err2 != nil {
		t.Fatalf("unparsable server API version %q", v)
	}
	return a, b
}

// composeCommand is compose v2 (the docker CLI plugin built with the engine) on the private engine, and
// docker-compose on the machine's.
func composeCommand() (string, []string) {
	if privateEngine != nil {
		return "docker", []string{"compose"}
	}
	return "docker-compose", nil
}
