// Package engine runs a private, current Docker Engine (dockerd from moby v2 and containerd v2, built by
// build.sh) for the end-to-end tests, and stops it. The engine runs in a network namespace of its own
// (see Reexec), with its own default bridge, sockets, data, exec root and cgroup parent, all under one
// directory this package creates. It refuses to start when any path the daemons would use falls outside
// that directory, or when the process is in the machine's network namespace: the machine's own Docker
// (its socket, data root, containerd, docker0 and iptables) is never touched.
package engine

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The private engine's default bridge. Its subnet is private to the namespace, and chosen apart from
// Docker's default pools so that nothing read off a log could be mistaken for the machine's docker0.
const (
	BridgeName = "sdnsbr0"
	BridgeCIDR = "10.213.17.1/24"
)

// machineSockets are the machine's own Docker and containerd sockets. Nothing here may listen on them.
var machineSockets = []string{"/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock", "/var/run/containerd/containerd.sock"}

// Binaries returns the directory holding the cached engine binaries, as build.sh --cached prints it, or
// an error saying how to build them. script is the path of build.sh.
func Binaries(script string) (string, error) {
	out, err := exec.Command("sh", script, "--cached").Output()
	if err != nil {
		return "", fmt.Errorf("engine binaries not built (run %s, about 9 minutes once): %w", script, err)
	}
	dir := strings.TrimSpace(string(out))
	for _, b := range []string{"dockerd", "containerd", "containerd-shim-runc-v2", "docker-proxy"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("engine binary %s missing in %s: %w", b, dir, err)
		}
	}
	return dir, nil
}

// Engine is a running private containerd plus dockerd.
type Engine struct {
	root string // every path below it
	bin  string
	log  io.Writer

	containerd *proc
	dockerd    *proc
	daemon     DaemonOptions
}

// DaemonOptions are what a test varies between dockerd starts.
type DaemonOptions struct {
	LiveRestore bool
	// Data names the data root (a directory under the engine's root) and the containerd namespace; a
	// daemon with another Data has other containers. Empty means "data".
	Data string
}

type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

// Start creates a fresh directory under parent (os.TempDir if empty; keep it short, shim socket paths
// must fit in 108 bytes), then starts containerd and dockerd in it. bin is the directory Binaries
// returned; daemon logs go to log and to files in the directory.
func Start(ctx context.Context, parent, bin string, log io.Writer, opts DaemonOptions) (*Engine, error) {
	ok, err := InPrivateNetns()
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errors.New("refusing to start a private dockerd in the machine's network namespace (it could delete docker0 and rewrite iptables); run it through engine.Reexec")
	}
	if parent == "" {
		parent = os.TempDir()
	}
	root, err := os.MkdirTemp(parent, "sdnseng-")
	if err != nil {
		return nil, fmt.Errorf("create engine directory: %w", err)
	}
	if root, err = filepath.EvalSymlinks(root); err != nil {
		return nil, fmt.Errorf("resolve engine directory: %w", err)
	}
	e := &Engine{root: root, bin: bin, log: log}
	if err := e.start(ctx, opts); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

func (e *Engine) start(ctx context.Context, opts DaemonOptions) error {
	machineUp := pingDocker(ctx, "/var/run/docker.sock") == nil
	if err := setupNetns(BridgeName, BridgeCIDR); err != nil {
		return err
	}
	if err := e.writeDockerConfig(); err != nil {
		return err
	}
	if err := e.startContainerd(ctx); err != nil {
		return err
	}
	if err := e.StartDaemon(ctx, opts); err != nil {
		return err
	}
	if machineUp {
		if err := pingDocker(ctx, "/var/run/docker.sock"); err != nil {
			return fmt.Errorf("the machine's Docker stopped answering after the private engine started: %w", err)
		}
	}
	return nil
}

// Root is the directory holding everything of this engine.
func (e *Engine) Root() string { return e.root }

// Host is the DOCKER_HOST value of the private daemon.
func (e *Engine) Host() string { return "unix://" + e.path("docker.sock") }

// Socket is the private daemon's socket path.
func (e *Engine) Socket() string { return e.path("docker.sock") }

// Env is what a docker CLI needs to talk to this engine, compose plugin included.
func (e *Engine) Env() []string {
	return []string{"DOCKER_HOST=" + e.Host(), "DOCKER_CONFIG=" + e.path("docker-config")}
}

// Daemon returns the options of the running (or last) dockerd.
func (e *Engine) Daemon() DaemonOptions { return e.daemon }

// path joins elems under the root and panics on an escape: every path is built here.
func (e *Engine) path(elem ...string) string {
	p := filepath.Join(append([]string{e.root}, elem...)...)
	if !under(e.root, p) {
		panic(fmt.Sprintf("engine path %s escapes %s", p, e.root))
	}
	return p
}

func under(root, p string) bool {
	return strings.HasPrefix(filepath.Clean(p)+"/", root+"/") && filepath.Clean(p) != root
}

func (e *Engine) writeDockerConfig() error {
	dir := e.path("docker-config", "cli-plugins")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create docker CLI config: %w", err)
	}
	plugin := filepath.Join(filepath.Dir(e.bin), "cli-plugins", "docker-compose")
	if _, err := os.Stat(plugin); err == nil {
		if err := os.Symlink(plugin, filepath.Join(dir, "docker-compose")); err != nil {
			return fmt.Errorf("link compose plugin: %w", err)
		}
	}
	return os.WriteFile(e.path("docker-config", "config.json"), []byte("{}\n"), 0o600)
}

// containerdConfig uses the version 4 layout, where the listen addresses live in the server plugins: a
// top-level [grpc] section is ignored there and containerd would take the machine's socket path.
func (e *Engine) containerdConfig() string {
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	return fmt.Sprintf(`version = 4
root = %s
state = %s
disabled_plugins = %s

[plugins."io.containerd.server.v1.grpc"]
  address = %s
[plugins."io.containerd.server.v1.ttrpc"]
  address = %s
[plugins."io.containerd.server.v1.debug"]
  address = %s
[plugins."io.containerd.shim.v1.manager"]
  socket_dir = %s
[plugins."io.containerd.internal.v1.opt"]
  path = %s
[plugins."io.containerd.image-verifier.v1.bindir"]
  bin_dir = %s
`, q(e.path("containerd", "root")), q(e.path("containerd", "state")), disabledList(),
		q(e.path("containerd.sock")), q(e.path("containerd.sock.ttrpc")), q(e.path("containerd-debug.sock")),
		q(e.path("s")), q(e.path("containerd", "opt")), q(e.path("containerd", "verifiers")))
}

// disabledPlugins are containerd plugins the engine does not need and that would otherwise open
// sockets or read configuration at system paths (CRI, NRI's /var/run/nri/nri.sock).
var disabledPlugins = []string{"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime",
	"io.containerd.nri.v1.nri", "io.containerd.podsandbox.controller.v1.podsandbox"}

func disabledList() string {
	b, _ := json.Marshal(disabledPlugins)
	return string(b)
}

// checkContainerdConfig asks containerd for the configuration it would run with (disabled plugins
// left out) and refuses any absolute path outside the root: a socket, state or data directory of the
// machine's containerd.
func (e *Engine) checkContainerdConfig(ctx context.Context, cfg string) error {
	out, err := exec.CommandContext(ctx, filepath.Join(e.bin, "containerd"), "--config", cfg, "config", "dump").Output()
	if err != nil {
		return fmt.Errorf("containerd config dump: %w", err)
	}
	var bad []string
	section := ""
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") {
			section = strings.NewReplacer("'", "", `"`, "").Replace(line)
			continue
		}
		_, val, ok := strings.Cut(line, " = ")
		if !ok {
			continue
		}
		// The dump quotes with ' (go-toml v2); accept " too.
		p := strings.Trim(val, `'"`)
		if !strings.HasPrefix(p, "/") {
			continue
		}
		if under(e.root, p) {
			continue
		}
		bad = append(bad, section+" "+line)
	}
	if len(bad) > 0 {
		return fmt.Errorf("containerd would use paths outside %s: %s", e.root, strings.Join(bad, "; "))
	}
	return nil
}

func (e *Engine) startContainerd(ctx context.Context) error {
	cfg := e.path("containerd.toml")
	if err := os.WriteFile(cfg, []byte(e.containerdConfig()), 0o644); err != nil {
		return fmt.Errorf("write containerd config: %w", err)
	}
	if err := e.checkContainerdConfig(ctx, cfg); err != nil {
		return err
	}
	p, err := e.spawn("containerd", "--config", cfg, "--address", e.path("containerd.sock"))
	if err != nil {
		return err
	}
	e.containerd = p
	err = waitUntil(ctx, 60*time.Second, p, func() error {
		c, err := net.Dial("unix", e.path("containerd.sock"))
		if err == nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("%w; containerd log ends:\n%s", err, e.logTail("containerd.log"))
	}
	return nil
}

func (e *Engine) daemonConfig(opts DaemonOptions) ([]byte, error) {
	data := opts.Data
	if data == "" {
		data = "data"
	}
	if strings.ContainsAny(data, "/.") {
		return nil, fmt.Errorf("data name %q must be a plain directory name", data)
	}
	cfg := map[string]any{
		"hosts":                []string{e.Host()},
		"data-root":            e.path(data),
		"exec-root":            e.path("exec"),
		"pidfile":              e.path("dockerd.pid"),
		"containerd":           e.path("containerd.sock"),
		"containerd-namespace": "sdns-" + data,
		"bridge":               BridgeName,
		"cgroup-parent":        e.cgroupParent(),
		"exec-opts":            []string{"native.cgroupdriver=cgroupfs"},
		"userland-proxy-path":  filepath.Join(e.bin, "docker-proxy"),
		"live-restore":         opts.LiveRestore,
		// Debian's runc cannot set up time namespaces; the engine's own escape hatch turns them off.
		"features": map[string]bool{"time-namespaces": false},
		// The engine has the namespace to itself, so it may program iptables (embedded DNS needs it).
		"iptables": true,
	}
	for _, k := range []string{"data-root", "exec-root", "pidfile", "containerd", "userland-proxy-path"} {
		if p := cfg[k].(string); k != "userland-proxy-path" && !under(e.root, p) {
			return nil, fmt.Errorf("dockerd %s %s is outside %s", k, p, e.root)
		}
	}
	for _, s := range machineSockets {
		if strings.TrimPrefix(e.Host(), "unix://") == s {
			return nil, fmt.Errorf("dockerd would listen on the machine's socket %s", s)
		}
	}
	return json.MarshalIndent(cfg, "", "  ")
}

// StartDaemon starts dockerd (it must not be running) and waits until it answers /_ping.
func (e *Engine) StartDaemon(ctx context.Context, opts DaemonOptions) error {
	if e.dockerd != nil && !e.dockerd.done() {
		return errors.New("dockerd is already running")
	}
	b, err := e.daemonConfig(opts)
	if err != nil {
		return err
	}
	cfg := e.path("daemon.json")
	if err := os.WriteFile(cfg, b, 0o644); err != nil {
		return fmt.Errorf("write daemon config: %w", err)
	}
	// --config-file keeps /etc/docker/daemon.json, the machine's configuration, unread.
	p, err := e.spawn("dockerd", "--config-file", cfg)
	if err != nil {
		return err
	}
	e.dockerd, e.daemon = p, opts
	if err := waitUntil(ctx, 90*time.Second, p, func() error { return pingDocker(ctx, e.path("docker.sock")) }); err != nil {
		return fmt.Errorf("%w; dockerd log ends:\n%s", err, e.logTail("dockerd.log"))
	}
	return nil
}

// logTail returns the last lines of one of the engine's logs, for start-up errors.
func (e *Engine) logTail(name string) string {
	b, _ := os.ReadFile(e.path(name))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-8):], "\n")
}

// KillDaemon sends dockerd SIGKILL and waits until it is gone. containerd and the containers' shims
// stay up, as they do when a real dockerd crashes.
func (e *Engine) KillDaemon() error {
	if e.dockerd == nil || e.dockerd.done() {
		return errors.New("dockerd is not running")
	}
	e.dockerd.cmd.Process.Kill()
	<-e.dockerd.exited
	return nil
}

// StopDaemon stops dockerd gracefully (SIGTERM) and waits up to a minute for it to exit.
func (e *Engine) StopDaemon() error {
	if e.dockerd == nil || e.dockerd.done() {
		return nil
	}
	return e.dockerd.stop(time.Minute)
}

// Close removes every container of the running daemon, stops dockerd and containerd, ends the shims
// they left, and removes the directory.
func (e *Engine) Close() error {
	var errs []error
	if e.dockerd != nil && !e.dockerd.done() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if out, err := e.docker(ctx, "ps", "-aq"); err == nil && len(strings.Fields(out)) > 0 {
			if _, err := e.docker(ctx, append([]string{"rm", "-f", "-v"}, strings.Fields(out)...)...); err != nil {
				errs = append(errs, err)
			}
		}
		cancel()
		errs = append(errs, e.dockerd.stop(time.Minute))
	}
	if e.containerd != nil && !e.containerd.done() {
		errs = append(errs, e.containerd.stop(30*time.Second))
	}
	errs = append(errs, e.killShims())
	e.removeCgroups()
	if err := e.unmountAll(); err != nil {
		errs = append(errs, err)
	} else if err := os.RemoveAll(e.root); err != nil {
		errs = append(errs, fmt.Errorf("remove engine directory: %w", err))
	}
	return errors.Join(errs...)
}

func (e *Engine) docker(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(environWithout("DOCKER_"), e.Env()...)
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("docker %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

func (e *Engine) cgroupParent() string { return "sidedns-engine-" + filepath.Base(e.root) }

// removeCgroups kills what is left in the engine's cgroup parent (a `runc init` cut off by a killed
// daemon can linger there) and removes the parent and its children from every hierarchy, deepest first.
func (e *Engine) removeCgroups() {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", e.cgroupParent()))
	dirs = append(dirs, filepath.Join("/sys/fs/cgroup", e.cgroupParent()))
	var all []string
	for _, d := range dirs {
		filepath.WalkDir(d, func(p string, ent os.DirEntry, err error) error {
			if err == nil && ent.IsDir() {
				all = append(all, p)
			}
			return nil
		})
	}
	killed := false
	for _, d := range all {
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
				syscall.Kill(pid, syscall.SIGKILL)
				killed = true
			}
		}
	}
	if killed {
		time.Sleep(200 * time.Millisecond)
	}
	for i := len(all) - 1; i >= 0; i-- {
		os.Remove(all[i]) // rmdir: only an empty cgroup goes
	}
}

// killShims ends the containerd shims this engine started (a shim outlives containerd by design); it
// knows them by the engine's socket in their command line.
func (e *Engine) killShims() error {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("list processes: %w", err)
	}
	for _, ent := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 0 && filepath.Base(args[0]) == "containerd-shim-runc-v2" && strings.Contains(string(b), e.path("containerd.sock")) {
			var pid int
			if _, err := fmt.Sscan(ent.Name(), &pid); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return nil
}

// unmountAll lazily unmounts whatever is still mounted under the root, deepest first, so that removing
// the directory never reaches into a mounted filesystem.
func (e *Engine) unmountAll() error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("read mounts: %w", err)
	}
	var mounts []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && under(e.root, f[4]) {
			mounts = append(mounts, f[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := syscall.Unmount(mounts[i], syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", mounts[i], err)
		}
	}
	return nil
}

// spawn starts one of the engine's binaries with the engine's directory first in PATH (containerd
// finds its shim there) and its output in <root>/<name>.log and the engine log.
func (e *Engine) spawn(name string, args ...string) (*proc, error) {
	f, err := os.OpenFile(e.path(name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	cmd := exec.Command(filepath.Join(e.bin, name), args...)
	var w io.Writer = f
	if e.log != nil {
		w = io.MultiWriter(f, e.log)
	}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Env = append(environWithout("DOCKER_", "CONTAINERD_", "PATH="), "PATH="+e.bin+":"+os.Getenv("PATH"))
	// Own process group: a Ctrl-C at the terminal reaches the test, which then stops the daemons in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) done() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

func (p *proc) stop(grace time.Duration) error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s did not stop within %s of SIGTERM; killed", filepath.Base(p.cmd.Path), grace)
	}
}

// waitUntil polls ready until it succeeds, the process exits, or the timeout passes.
func waitUntil(ctx context.Context, timeout time.Duration, p *proc, ready func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	name := filepath.Base(p.cmd.Path)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited during start-up: %v", name, p.err)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %w", name, timeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// pingDocker asks a daemon's /_ping over its unix socket.
func pingDocker(ctx context.Context, sock string) error {
	c := http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("ping %s: %w", sock, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ping %s: %s", sock, resp.Status)
	}
	return nil
}

func environWithout(prefixes ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		keep := true
		for _, p := range prefixes {
			if strings.HasPrefix(kv, p) {
				keep = false
			}
		}
		if keep {
			env = append(env, kv)
		}
	}
	return env
}
