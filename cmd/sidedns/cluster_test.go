package main

import (
	"errors"
	"strings"
	"testing"
	"time"
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
