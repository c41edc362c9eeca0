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

// netnsEnv carries, to the process Reexec starts, the network namespace it was started from.
const netnsEnv = "SIDEDNS_ENGINE_FROM_NETNS"

// InPrivateNetns reports whether this process runs in a network namespace of its own: one that Reexec
// made (not the namespace it was started from, nor PID 1's where that is readable) and that has no
// docker0. Only there may a private dockerd run, because a dockerd in the machine's namespace can
// delete docker0 and rewrite the machine's iptables.
func InPrivateNetns() (bool, error) {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return false, fmt.Errorf("read own network namespace: %w", err)
	}
	from := os.Getenv(netnsEnv)
	if from == "" || from == self {
		return false, nil
	}
	// Some sandboxes hide PID 1's namespace; where it shows, it must differ too.
	if init, err := os.Readlink("/proc/1/ns/net"); err == nil && init == self {
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
	if os.Getenv(netnsEnv) != "" {
		return 0, errors.New("already re-executed, but not in a private network namespace")
	}
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return 0, fmt.Errorf("read own network namespace: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("find own executable: %w", err)
	}
	cmd := exec.Command("unshare", append([]string{"--net", "--", exe}, os.Args[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), netnsEnv+"="+self)
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
