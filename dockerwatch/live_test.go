package dockerwatch

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"go.uber.org/zap/zaptest"

	"github.com/sidedns/sidedns/resolver"
)

// liveDocker returns a client for the real engine, or skips loudly (fails
// when SIDEDNS_REQUIRE_DOCKER=1) if the daemon is unreachable.
func liveDocker(tb testing.TB) *client.Client {
	tb.Helper()
	cli, err := NewClient()
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err = cli.Ping(ctx)
		cancel()
	}
	if err != nil {
		if os.Getenv("SIDEDNS_REQUIRE_DOCKER") == "1" {
			tb.Fatalf("docker daemon required (SIDEDNS_REQUIRE_DOCKER=1) but unreachable: %v", err)
		}
		tb.Skipf("SKIPPING LIVE DOCKER TEST: daemon unreachable: %v", err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

// sleeperImage builds a FROM scratch image holding a static Go binary that
// sleeps forever, and removes it when the test ends.
func sleeperImage(tb testing.TB, cli *client.Client, tag string) {
	tb.Helper()
	dir := tb.TempDir()
	src := "package main\n\nimport \"time\"\n\nfunc main() {\n\tfor {\n\t\ttime.Sleep(time.Hour)\n\t}\n}\n"
	for name, body := range map[string]string{"main.go": src, "go.mod": "module sleeper\n\ngo 1.26\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	// go test puts GOROOT/bin first on PATH, so this is the toolchain under test.
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", "app", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build sleeper: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(filepath.Join(dir, "app"))
	if err != nil {
		tb.Fatal(err)
	}

	var ctxTar bytes.Buffer
	tw := tar.NewWriter(&ctxTar)
	for _, f := range []struct {
		name string
		mode int64
		body []byte
	}{
		{"Dockerfile", 0o644, []byte("FROM scratch\nCOPY app /app\nENTRYPOINT [\"/app\"]\n")},
		{"app", 0o755, bin},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.body))}); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write(f.body); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}

	ctx := context.Background()
	resp, err := cli.ImageBuild(ctx, &ctxTar, build.ImageBuildOptions{Tags: []string{tag}, Remove: true, ForceRemove: true})
	if err != nil {
		tb.Fatalf("build image: %v", err)
	}
	tb.Cleanup(func() {
		if _, err := cli.ImageRemove(context.Background(), tag, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil {
			tb.Errorf("remove image %s: %v", tag, err)
		}
	})
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var msg struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			break
		} else if err != nil {
			tb.Fatalf("read build output: %v", err)
		}
		if msg.Error != "" {
			tb.Fatalf("build image: %s", msg.Error)
		}
	}
}

func TestLiveWatcher(t *testing.T) {
	cli := liveDocker(t)
	ctx := context.Background()
	suffix := fmt.Sprintf("%d", time.Now().UnixNano()%1_000_000_000)
	tag := "sidedns-test-dockerwatch:" + suffix
	netName := "sidedns-test-dw-" + suffix
	name := "sidedns-test-dw-" + suffix

	sleeperImage(t, cli, tag)
	nw, err := cli.NetworkCreate(ctx, netName, network.CreateOptions{Driver: "bridge"})
	if err != nil {
		t.Fatalf("create network: %v", err)
	}
	t.Cleanup(func() {
		if err := cli.NetworkRemove(context.Background(), nw.ID); err != nil {
			t.Errorf("remove network: %v", err)
		}
	})

	rec := newRecorder()
	w := New(cli, rec.publish, zaptest.NewLogger(t), Options{})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); w.Run(runCtx) }()
	t.Cleanup(func() { cancel(); <-done }) // runs before the removals above
	rec.waitFor(t, "the first sync", func(resolver.Topology) bool { return true })

	created, err := cli.ContainerCreate(ctx,
		&container.Config{Image: tag, Hostname: "livehost", Labels: map[string]string{"sidedns.names": "live-extra"}},
		// The container never resolves anything; --dns still points at loopback, never a real resolver.
		&container.HostConfig{DNS: []string{"127.0.0.1"}},
		&network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{netName: {Aliases: []string{"livealias"}}}},
		nil, name)
	if err != nil {
		t.Fatalf("create container: %v", err)
	}
	t.Cleanup(func() {
		if err := cli.ContainerRemove(context.Background(), created.ID, container.RemoveOptions{Force: true}); err != nil {
			t.Errorf("remove container: %v", err)
		}
	})
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatalf("start container: %v", err)
	}
	started := time.Now()
	got := waitUntil(t, rec, time.Second, "the container appears on its network", func(tp resolver.Topology) bool {
		c, ok := find(tp, name)
		return ok && len(c.Endpoints) == 1 && c.Endpoints[0].NetworkName == netName && c.Endpoints[0].IPv4.IsValid()
	})
	t.Logf("resolvable %v after start returned", time.Since(started))
	c, _ := find(got, name)
	if c.ID != created.ID || c.Hostname != "livehost" || len(c.Names) != 1 || c.Names[0] != "live-extra" || c.State != resolver.StateRunning {
		t.Errorf("container = %+v", c)
	}
	if !slices.Contains(c.Endpoints[0].Aliases, "livealias") {
		t.Errorf("aliases = %v, want livealias", c.Endpoints[0].Aliases)
	}
	var sawNet bool
	for _, n := range got.Networks {
		sawNet = sawNet || (n.ID == nw.ID && len(n.Subnets) > 0)
	}
	if !sawNet {
		t.Errorf("network %s with its subnet missing from %+v", netName, got.Networks)
	}

	zero := 0
	if err := cli.ContainerStop(ctx, created.ID, container.StopOptions{Timeout: &zero}); err != nil {
		t.Fatalf("stop container: %v", err)
	}
	waitUntil(t, rec, waitLimit, "the container is gone after stop", hasNot(name))
	if !w.Connected() || w.Stats.Events.Load() == 0 {
		t.Errorf("Connected, Events = %v, %d", w.Connected(), w.Stats.Events.Load())
	}
}
