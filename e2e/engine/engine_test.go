package engine

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUnder(t *testing.T) {
	tests := []struct {
		p    string
		want bool
	}{
		{"/tmp/sdnseng-1/docker.sock", true},
		{"/tmp/sdnseng-1/a/../b", true},
		{"/tmp/sdnseng-1", false},
		{"/tmp/sdnseng-1/../x", false},
		{"/tmp/sdnseng-10/docker.sock", false},
		{"/run/containerd/containerd.sock", false},
	}
	for _, tc := range tests {
		if got := under("/tmp/sdnseng-1", tc.p); got != tc.want {
			t.Errorf("under(%q) = %v, want %v", tc.p, got, tc.want)
		}
	}
}

// TestRefusesMachineNamespace: started from the machine's network namespace, nothing is started.
func TestRefusesMachineNamespace(t *testing.T) {
	t.Setenv(netnsEnv, "")
	_, err := Start(context.Background(), t.TempDir(), "/nonexistent", nil, DaemonOptions{})
	if err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("Start in the machine's namespace: err = %v, want a refusal", err)
	}
}

// TestContainerdConfigCheck: the generated configuration passes; one that would listen on the machine's
// containerd socket (a top-level [grpc] section, ignored by the version 4 layout) is refused.
func TestContainerdConfigCheck(t *testing.T) {
	wd, _ := os.Getwd()
	bin, err := Binaries(filepath.Join(wd, "build.sh"))
	if err != nil {
		t.Skipf("\n!!! SKIPPING: %v", err)
	}
	e := &Engine{root: t.TempDir(), bin: bin}
	good := filepath.Join(e.root, "good.toml")
	if err := os.WriteFile(good, []byte(e.containerdConfig()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.checkContainerdConfig(context.Background(), good); err != nil {
		t.Errorf("generated config refused: %v", err)
	}
	bad := filepath.Join(e.root, "bad.toml")
	legacy := strings.Replace(e.containerdConfig(), `[plugins."io.containerd.server.v1.grpc"]`+"\n  address = "+`"`+e.path("containerd.sock")+`"`,
		"[grpc]\n  address = "+`"`+e.path("containerd.sock")+`"`, 1)
	if err := os.WriteFile(bad, []byte(legacy), 0o644); err != nil {
		t.Fatal(err)
	}
	err = e.checkContainerdConfig(context.Background(), bad)
	if err == nil || !strings.Contains(err.Error(), "/run/containerd/containerd.sock") {
		t.Errorf("config with a top-level [grpc] section: err = %v, want a refusal naming /run/containerd/containerd.sock", err)
	}
}
