package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// dockerSock is the engine's API socket on this host; images under test get
// it mounted read-only at containerDockerSock. enterEngine points it at the
// private engine's socket.
var dockerSock = containerDockerSock

// containerDockerSock is where sidedns in a container finds the socket.
const containerDockerSock = "/var/run/docker.sock"

// maxImageBytes is a generous bound for "small": a FROM-scratch image holds
// one static binary (about 10 MB stripped).
const maxImageBytes = 40 << 20

// pkgImage builds the runtime image from Dockerfile.local around the static
// binary, tagged uniquely, and removes it when the test ends.
func pkgImage(t testing.TB) string {
	t.Helper()
	ctxDir := filepath.Dir(buildSidedns(t))
	tag := "sidedns-test-sidedns:" + randSuffix()
	t.Cleanup(func() {
		if _, err := docker("rmi", "-f", tag); err != nil && !strings.Contains(err.Error(), "No such image") {
			t.Errorf("remove image: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := dockerBuild(ctx, tag, ctxDir, filepath.Join(moduleRoot(), "Dockerfile.local")); err != nil {
		t.Fatal(err)
	}
	return tag
}

// socketGID is the group owning the Docker socket, for --group-add.
func socketGID(t testing.TB) string {
	t.Helper()
	fi, err := os.Stat(dockerSock)
	if err != nil {
		t.Fatalf("stat docker socket: %v", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Fatalf("stat docker socket: no owner information")
	}
	return strconv.FormatUint(uint64(st.Gid), 10)
}

// procStatus returns the Uid and Groups lines of a container's main process,
// read on the host: the scratch image has no shell to ask inside.
func procStatus(t testing.TB, container string) (uid, groups string) {
	t.Helper()
	pid := mustDocker(t, "inspect", "--format", "{{.State.Pid}}", container)
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatalf("read status of %s: %v", container, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			uid = strings.Fields(rest)[0] // real uid
		}
		if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			groups = strings.TrimSpace(rest)
		}
	}
	return uid, groups
}

// TestImageRuntime runs the runtime image the way the host-mode README does:
// on the host network with the socket mounted read-only, once as the image's
// default non-root user with the socket's group, and once as the documented
// `--user 0:0 --cap-drop ALL --cap-add NET_BIND_SERVICE` on port 53.
func TestImageRuntime(t *testing.T) {
	requireDocker(t)
	img := pkgImage(t)

	var meta []struct {
		Size   int64
		Config struct {
			User       string
			Entrypoint []string
		}
	}
	if err := json.Unmarshal([]byte(mustDocker(t, "image", "inspect", img)), &meta); err != nil || len(meta) != 1 {
		t.Fatalf("decode image inspect: %v", err)
	}
	t.Logf("FACT image %s: %.1f MiB, user %q, entrypoint %v", img, float64(meta[0].Size)/(1<<20), meta[0].Config.User, meta[0].Config.Entrypoint)
	if meta[0].Config.User != "65534:65534" {
		t.Errorf("image user = %q, want 65534:65534 (non-root by default)", meta[0].Config.User)
	}
	if !slices.Equal(meta[0].Config.Entrypoint, []string{"/sidedns"}) {
		t.Errorf("image entrypoint = %v, want [/sidedns]", meta[0].Config.Entrypoint)
	}
	if meta[0].Size > maxImageBytes {
		t.Errorf("image is %d bytes, want at most %d", meta[0].Size, maxImageBytes)
	}

	sfx := randSuffix()
	n := createNetwork(t, "sidedns-test-"+sfx+"-img")
	gw := n.Gateway.String()
	// The containers never resolve on their own; --dns names the gateway,
	// where the root variant below serves.
	web := runContainer(t, ContainerOpts{Name: "sidedns-test-" + sfx + "-web", Network: n.Name, DNS: []string{gw}})
	client := runContainer(t, ContainerOpts{Name: "sidedns-test-" + sfx + "-client", Network: n.Name, DNS: []string{gw}})
	webIP := web.IPs[n.Name].String()
	up := startFakeUpstream(t)
	gid := socketGID(t)

	tests := []struct {
		name    string
		runArgs []string
		// dnsPort serves on 127.0.0.1 and the network gateway; 0 picks a free
		// unprivileged port.
		dnsPort int
		wantUID string
	}{
		{name: "default user with socket group", runArgs: []string{"--group-add", gid}, wantUID: "65534"},
		{name: "root with only NET_BIND_SERVICE", runArgs: []string{"--user", "0:0", "--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE"}, dnsPort: 53, wantUID: "0"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// A loopback address of its own keeps port 53 free of clashes
			// with anything else on 127.0.0.1.
			lo := fmt.Sprintf("127.53.%d.%d", 1+int(sfx[0])%200, 1+i)
			port := tc.dnsPort
			if port == 0 {
				port = freePort(t, lo)
			}
			dnsAddr := net.JoinHostPort(lo, strconv.Itoa(port))
			gwAddr := net.JoinHostPort(gw, strconv.Itoa(port))
			httpAddr := net.JoinHostPort(lo, strconv.Itoa(freePort(t, lo)))
			name := fmt.Sprintf("sidedns-test-%s-img%d", sfx, i)
			args := []string{"run", "-d", "--name", name, "--label", runLabel + "=" + runID,
				"--network", "host", "-v", dockerSock + ":" + containerDockerSock + ":ro"}
			args = append(args, tc.runArgs...)
			args = append(args, img, "--listen", dnsAddr, "--listen", gwAddr, "--http", httpAddr,
				"--upstream", up.Addr, "--log-format", "console")
			t.Cleanup(func() {
				if t.Failed() {
					out, _ := exec.Command("docker", "logs", name).CombinedOutput()
					t.Logf("sidedns container log:\n%s", out)
				}
				removeContainer(t, name)
			})
			mustDocker(t, args...)

			if _, ok := waitFor(20*time.Second, func() bool { return readyz(httpAddr) }); !ok {
				t.Fatalf("sidedns in the image never became ready on %s (state %s)", httpAddr,
					mustDocker(t, "inspect", "--format", "{{.State.Status}} exit={{.State.ExitCode}}", name))
			}
			uid, groups := procStatus(t, name)
			t.Logf("FACT image run %q: uid %s, groups [%s]", tc.name, uid, groups)
			if uid != tc.wantUID {
				t.Errorf("process uid = %s, want %s", uid, tc.wantUID)
			}

			// Host view over loopback: the container name comes from Docker
			// through the read-only socket.
			if _, ok := waitFor(10*time.Second, func() bool {
				r, err := query(t, dnsAddr, web.Name, dns.TypeA)
				return err == nil && slices.Equal(answerAddrs(r), []string{webIP})
			}); !ok {
				r, err := query(t, dnsAddr, web.Name, dns.TypeA)
				t.Fatalf("%s via %s: %v %v, want [%s]", web.Name, dnsAddr, r, err, webIP)
			}
			before := len(up.Saw(upstreamName))
			r, err := query(t, dnsAddr, upstreamName, dns.TypeA)
			if err != nil || !slices.Equal(answerAddrs(r), []string{upstreamAddr}) {
				t.Errorf("forwarded %s: %v %v, want [%s]", upstreamName, r, err, upstreamAddr)
			}
			if len(up.Saw(upstreamName)) == before {
				// A cache hit from the first variant would not count; each run is a fresh process.
				t.Errorf("fake upstream never saw %s", upstreamName)
			}

			// A container on the network reaches sidedns on the gateway, the
			// host-mode deployment.
			cr := mustDigIn(t, client.Name, gwAddr, web.Name, "A")
			if cr.Rcode != "NOERROR" || !slices.Equal(cr.Addrs(), []string{webIP}) {
				t.Errorf("%s from %s via %s = %s, want [%s]", web.Name, client.Name, gwAddr, cr, webIP)
			}

			// SIGTERM drains and exits cleanly (sidedns is PID 1, with no
			// default signal handling of its own).
			mustDocker(t, "stop", "-t", "10", name)
			if code := mustDocker(t, "inspect", "--format", "{{.State.ExitCode}}", name); code != "0" {
				t.Errorf("exit code after docker stop = %s, want 0", code)
			}
		})
	}
}
