package engine

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// netnsEnv marks a process that Reexec started inside a fresh network namespace.
const netnsEnv = "SIDEDNS_ENGINE_NETNS"

// InPrivateNetns reports whether this process runs in a network namespace other than the machine's:
// one that is not PID 1's and that has no docker0. Only there may a private dockerd run, because a
// dockerd in the machine's namespace can delete docker0 and rewrite the machine's iptables.
func InPrivateNetns() (bool, error) {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return false, fmt.Errorf("read own network namespace: %w", err)
	}
	init, err := os.Readlink("/proc/1/ns/net")
	if err != nil {
		return false, fmt.Errorf("read PID 1's network namespace: %w", err)
	}
	if self == init {
		return false, nil
	}
	if _, err := net.InterfaceByName("docker0"); err == nil {
		return false, nil
	}
	return true, nil
}

// Reexec runs this program again (same arguments, same stdio) inside a new network namespace made by
// unshare(1), waits for it and returns its exit code. The caller exits with that code. The namespace
// goes away with the last process in it, and with it every interface the private engine made.
func Reexec() (int, error) {
	if os.Getenv(netnsEnv) == "1" {
		return 0, errors.New("already re-executed, but still in the machine's network namespace")
	}
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("find own executable: %w", err)
	}
	cmd := exec.Command("unshare", append([]string{"--net", "--", exe}, os.Args[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return exit.ExitCode(), nil
	}
	if err != nil {
		return 0, fmt.Errorf("run %s in a new network namespace: %w", exe, err)
	}
	return 0, nil
}

// setupNetns brings up loopback and creates the private engine's default bridge. It runs only inside
// a private namespace, so neither can collide with the machine's interfaces.
func setupNetns(bridge, cidr string) error {
	steps := [][]string{{"link", "set", "lo", "up"}}
	if _, err := net.InterfaceByName(bridge); err != nil {
		steps = append(steps,
			[]string{"link", "add", bridge, "type", "bridge"},
			[]string{"addr", "add", cidr, "dev", bridge},
		)
	}
	steps = append(steps, []string{"link", "set", bridge, "up"})
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(s, " "), err, out)
		}
	}
	return nil
}
