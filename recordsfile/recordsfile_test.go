package recordsfile

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/sidedns/sidedns/cluster"
)

const sampleYAML = `services:
  - name: api-1          # required; answers <name>.<zone>
    project: shop
    service: api
    addresses: [10.9.0.5]
    ports: ["8080/tcp"]
  - name: db
    addresses: [10.9.0.6, "fd00::6"]
`

const sampleJSON = `{"services": [
  {"name": "api-1", "project": "shop", "service": "api", "addresses": ["10.9.0.5"], "ports": ["8080/tcp"]},
  {"name": "db", "addresses": ["10.9.0.6", "fd00::6"]}
]}`

func TestParse(t *testing.T) {
	for _, src := range []string{sampleYAML, sampleJSON} {
		recs, err := Parse([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 2 || recs[0].Name != "api-1" || recs[0].Service != "api" || recs[0].Project != "shop" ||
			recs[0].Ports[0] != (cluster.Port{Port: 8080, Proto: "tcp"}) || len(recs[1].Addresses) != 2 {
			t.Fatalf("parsed %+v", recs)
		}
	}
	bad := []struct{ name, src, want string }{
		{"no name", "services:\n  - addresses: [10.0.0.1]\n", "without a name"},
		{"bad address", "services:\n  - name: a\n    addresses: [10.0.0.300]\n", "10.0.0.300"},
		{"bad port", "services:\n  - name: a\n    addresses: [10.0.0.1]\n    ports: [\"80\"]\n", "port"},
		{"bad name", "services:\n  - name: a..b\n    addresses: [10.0.0.1]\n", "invalid DNS name"},
		{"unknown field", "services:\n  - name: a\n    adresses: [10.0.0.1]\n", "adresses"},
		{"twice", "services:\n  - name: a\n    addresses: [10.0.0.1]\n  - name: a\n    addresses: [10.0.0.2]\n", "twice"},
		{"service without project", "services:\n  - name: a\n    service: x\n    addresses: [10.0.0.1]\n", "together"},
	}
	for _, tt := range bad {
		if _, err := Parse([]byte(tt.src)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err %v, want one mentioning %q", tt.name, err, tt.want)
		}
	}
	if recs, err := Parse(nil); err != nil || len(recs) != 0 {
		t.Errorf("empty file: %v %v", recs, err)
	}
}

func TestWatcher(t *testing.T) {
	path := filepath.Join(t.TempDir(), "records.yaml")
	write := func(s string) {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(sampleYAML)
	var mu sync.Mutex
	var got [][]cluster.Record
	w, recs, err := NewWatcher(path, 20*time.Millisecond, func(r []cluster.Record) {
		mu.Lock()
		got = append(got, r)
		mu.Unlock()
	}, zaptest.NewLogger(t))
	if err != nil || len(recs) != 2 {
		t.Fatalf("first read %v %v", recs, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	last := func() []cluster.Record {
		mu.Lock()
		defer mu.Unlock()
		if len(got) == 0 {
			return nil
		}
		return got[len(got)-1]
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	write("services:\n  - name: only\n    addresses: [10.0.0.9]\n")
	waitFor("the change", func() bool { r := last(); return len(r) == 1 && r[0].Name == "only" })

	write("services: [broken") // kept: the last good records stay
	time.Sleep(100 * time.Millisecond)
	if r := last(); len(r) != 1 || r[0].Name != "only" {
		t.Fatalf("a broken file replaced the records: %v", r)
	}
	mu.Lock()
	n := len(got)
	mu.Unlock()
	write(sampleJSON)
	w.Reload()
	waitFor("the reload", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) > n && len(got[len(got)-1]) == 2 })
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(sampleYAML))
	f.Add([]byte(sampleJSON))
	f.Add([]byte("services:\n  - name: &a x\n    addresses: *a\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := Parse(b)
		if err != nil {
			return
		}
		for _, r := range recs {
			if err := r.Validate(); err != nil {
				t.Fatalf("accepted invalid %+v: %v", r, err)
			}
		}
	})
}
