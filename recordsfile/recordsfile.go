// Package recordsfile reads --records-file: services that are not containers,
// answered under the zone and published to the cluster. The format is YAML,
// and JSON of the same shape (JSON is YAML):
//
//	services:
//	  - name: api-1          # required; answers <name>.<zone>
//	    project: shop        # optional, with service: <service>.<project>.<zone>
//	    service: api
//	    addresses: [10.9.0.5]
//	    ports: ["8080/tcp"]  # optional; SRV _8080._tcp.<name or service.project>.<zone>
package recordsfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"github.com/sidedns/sidedns/cluster"
	"github.com/sidedns/sidedns/dockerwatch"
)

// MaxSize bounds the file: it is read whole on every change.
const MaxSize = 4 << 20

type file struct {
	Services []service `yaml:"services"`
}

type service struct {
	Name      string   `yaml:"name"`
	Project   string   `yaml:"project"`
	Service   string   `yaml:"service"`
	Addresses []string `yaml:"addresses"`
	Ports     []string `yaml:"ports"`
	TTL       uint32   `yaml:"ttl"`
}

// Parse reads a records file. Any bad entry fails the whole file, naming the
// entry, so a typo never silently drops a service.
func Parse(b []byte) ([]cluster.Record, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("records file of %d bytes, want at most %d", len(b), MaxSize)
	}
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse records file: %w", err)
	}
	out := make([]cluster.Record, 0, len(f.Services))
	seen := make(map[string]bool, len(f.Services))
	for i, s := range f.Services {
		r := cluster.Record{Name: s.Name, Project: s.Project, Service: s.Service, TTL: s.TTL}
		for _, a := range s.Addresses {
			addr, err := netip.ParseAddr(a)
			if err != nil {
				return nil, fmt.Errorf("service %d (%s): address %q: %w", i+1, s.Name, a, err)
			}
			r.Addresses = append(r.Addresses, addr)
		}
		for _, p := range s.Ports {
			port, err := dockerwatch.ParsePort(p)
			if err != nil {
				return nil, fmt.Errorf("service %d (%s): port %q: %w", i+1, s.Name, p, err)
			}
			r.Ports = append(r.Ports, cluster.Port{Port: port.Port, Proto: port.Proto})
		}
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("service %d: %w", i+1, err)
		}
		if seen[r.Name] {
			return nil, fmt.Errorf("service %d: name %q listed twice", i+1, r.Name)
		}
		seen[r.Name] = true
		out = append(out, r)
	}
	return out, nil
}

// Read reads and parses the file at path.
func Read(path string) ([]cluster.Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read records file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read records file %s: %w", path, err)
	}
	recs, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return recs, nil
}

// Watcher re-reads the file when it changes (polled: a stat every
// interval, a read when size or modification time moved) and on Reload.
// A file that fails to parse keeps the last good records.
type Watcher struct {
	path     string
	interval time.Duration
	onChange func([]cluster.Record)
	log      *zap.Logger
	reload   chan struct{}
	last     stamp // of the last read
}

// NewWatcher reads the file once: a bad file at start-up is an error.
func NewWatcher(path string, interval time.Duration, onChange func([]cluster.Record), log *zap.Logger) (*Watcher, []cluster.Record, error) {
	w := &Watcher{path: path, interval: interval, onChange: onChange, log: log, reload: make(chan struct{}, 1)}
	w.last = w.stat() // before the read: a change during it is read again
	recs, err := Read(path)
	if err != nil {
		return nil, nil, err
	}
	return w, recs, nil
}

// Reload asks for a read now (SIGHUP).
func (w *Watcher) Reload() {
	select {
	case w.reload <- struct{}{}:
	default:
	}
}

type stamp struct {
	size int64
	mod  time.Time
}

func (w *Watcher) stat() stamp {
	fi, err := os.Stat(w.path)
	if err != nil {
		return stamp{}
	}
	return stamp{fi.Size(), fi.ModTime()}
}

// Run polls until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s := w.stat(); s != w.last {
				w.last = s
				w.read()
			}
		case <-w.reload:
			w.last = w.stat()
			w.read()
		}
	}
}

func (w *Watcher) read() {
	recs, err := Read(w.path)
	if err != nil {
		w.log.Error("records file not reloaded; keeping the last good one", zap.Error(err))
		return
	}
	w.log.Info("records file loaded", zap.String("path", w.path), zap.Int("services", len(recs)))
	w.onChange(recs)
}
