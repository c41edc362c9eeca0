package main

import (
	"context"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestConformance runs run.sh: sidedns and unbound asked the same questions,
// every difference explained by a rule. It needs unbound (Debian's package).
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts unbound and sidedns; not in -short")
	}
	if _, err := exec.LookPath("unbound"); err != nil {
		t.Skip("SKIPPED: unbound is not installed (apt-get install unbound); the conformance run did not happen")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "run.sh")
	// SIGTERM, not SIGKILL: run.sh's trap stops the servers it started.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("conformance/run.sh: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
