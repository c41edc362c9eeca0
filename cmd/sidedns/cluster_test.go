package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sidedns/sidedns/cluster"
	"github.com/sidedns/sidedns/cluster/etcdtest"
)

func TestClusterFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{name: "etcd without advertise", args: []string{"--cluster-etcd", "http://127.0.0.1:2379"}, wantErr: "--cluster-etcd needs --advertise-addr"},
		{name: "etcd with advertise", args: []string{"--cluster-etcd", "http://127.0.0.1:2379,http://127.0.0.2:2379", "--advertise-addr", "192.0.2.1"}},
		{name: "env twins", env: map[string]string{"SIDEDNS_CLUSTER_ETCD": "https://e:2379", "SIDEDNS_ADVERTISE_ADDR": "fd00::1",
			"SIDEDNS_CLUSTER_USER": "u", "SIDEDNS_CLUSTER_PASSWORD": "p", "SIDEDNS_CLUSTER_LEASE_TTL": "6s"}},
		{name: "bad url", args: []string{"--cluster-etcd", "127.0.0.1:2379"}, wantErr: "http://"},
		{name: "bad advertise", args: []string{"--advertise-addr", "0.0.0.0"}, wantErr: "IP address"},
		{name: "cert without key", args: []string{"--cluster-cert", "c.pem"}, wantErr: "go together"},
		{name: "user without password", args: []string{"--cluster-user", "u"}, wantErr: "go together"},
		{name: "bad prefix", args: []string{"--cluster-prefix", "sidedns"}, wantErr: "starts and ends with /"},
		{name: "lease below etcd's floor", args: []string{"--cluster-lease-ttl", "1s"}, wantErr: "cluster-lease-ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, func(k string) string { return tt.env[k] })
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.As(err, new(usageError)) {
				t.Fatalf("err %v, want a usage error mentioning %q (config %+v)", err, tt.wantErr, c.clusterConfig)
			}
		})
	}
	c, err := parseConfig(nil, func(k string) string {
		return map[string]string{"SIDEDNS_CLUSTER_ETCD": "https://e:2379", "SIDEDNS_ADVERTISE_ADDR": "fd00::1", "SIDEDNS_CLUSTER_LEASE_TTL": "6s"}[k]
	})
	if err != nil || c.ClusterLeaseTTL != 6*time.Second || c.AdvertiseAddr != "fd00::1" || c.ClusterEtcd[0] != "https://e:2379" {
		t.Fatalf("env twins: %+v %v", c.clusterConfig, err)
	}
}

// --records-file without a cluster: the services answer under the zone, a
// change to the file is picked up, and SIGHUP re-reads it.
func TestRecordsFileAlone(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent.sock")
	up := startFakeUpstream(t)
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	path := filepath.Join(t.TempDir(), "records.yaml")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(path+".tmp", []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	write("services:\n  - name: legacy-db\n    project: shop\n    service: db\n    addresses: [10.9.0.5]\n    ports: [\"5432/tcp\"]\n")
	_, sigs := runInBackground(t, []string{"--listen", dnsAddr, "--upstream", up.addr, "--http", "off", "--records-file", path})
	ask := func(name string, qtype uint16) *dns.Msg {
		var r *dns.Msg
		waitFor(t, "an answer", func() bool {
			var err error
			r, _, err = (&dns.Client{Timeout: time.Second}).Exchange(new(dns.Msg).SetQuestion(name, qtype), dnsAddr)
			return err == nil
		})
		return r
	}
	answers := func(name string) string {
		r := ask(name, dns.TypeA)
		var out []string
		for _, rr := range r.Answer {
			out = append(out, rr.(*dns.A).A.String())
		}
		return strings.Join(out, ",")
	}
	waitFor(t, "the file's service", func() bool { return answers("db.shop.docker.") == "10.9.0.5" })
	if got := answers("legacy-db.docker."); got != "10.9.0.5" {
		t.Fatalf("legacy-db.docker = %q", got)
	}
	if r := ask("_5432._tcp.db.shop.docker.", dns.TypeSRV); len(r.Answer) != 1 || r.Answer[0].(*dns.SRV).Port != 5432 {
		t.Fatalf("SRV: %v", r)
	}
	checkForwarded(t, ask("legacy-db.", dns.TypeA)) // never a bare name
	write("services:\n  - name: legacy-db\n    addresses: [10.9.0.6]\n")
	waitFor(t, "the changed file", func() bool { return answers("legacy-db.docker.") == "10.9.0.6" })
	// Same size and, within the clock's granularity, maybe the same mtime:
	// SIGHUP reads it anyway.
	write("services:\n  - name: legacy-db\n    addresses: [10.9.0.7]\n")
	sigs <- syscall.SIGHUP
	waitFor(t, "the file after SIGHUP", func() bool { return answers("legacy-db.docker.") == "10.9.0.7" })
}

// sidedns reaches a TLS etcd that wants client certificates with
// --cluster-ca, --cluster-cert and --cluster-key, and publishes its records.
func TestClusterTLS(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent.sock")
	certs := etcdtest.NewCerts(t)
	ec := etcdtest.StartTLS(t, 1, certs)
	up := startFakeUpstream(t)
	path := filepath.Join(t.TempDir(), "records.yaml")
	if err := os.WriteFile(path, []byte("services:\n  - name: tls-svc\n    addresses: [10.9.0.9]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	runInBackground(t, []string{"--listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--upstream", up.addr, "--http", "off",
		"--records-file", path, "--advertise-addr", "127.0.0.5", "--cluster-lease-ttl", "2s",
		"--cluster-etcd", ec.Endpoints()[0], "--cluster-ca", certs.CA, "--cluster-cert", certs.ClientCert, "--cluster-key", certs.ClientKey})
	cli, err := clientv3.New(clientv3.Config{Endpoints: ec.Endpoints(), TLS: certs.TLSConfig(t), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	waitFor(t, "the record in etcd", func() bool {
		resp, err := cli.Get(context.Background(), cluster.RecordKey(cluster.DefaultPrefix, "127.0.0.5", "tls-svc"))
		return err == nil && len(resp.Kvs) == 1
	})
}
