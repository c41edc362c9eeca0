package main

import (
	"io"
	"log"
	"strings"
	"testing"
	"time"
)

func TestSummary(t *testing.T) {
	var lat []time.Duration
	for i := 100; i >= 1; i-- {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	got := summary(lat, 2)
	want := "start->resolvable: n=100 unresolved=2 p50=50.00ms p90=90.00ms p99=99.00ms max=100.00ms"
	if got != want {
		t.Errorf("summary\n got %q\nwant %q", got, want)
	}
	if got := summary(nil, 3); got != "start->resolvable: n=0 unresolved=3" {
		t.Errorf("summary of nothing = %q", got)
	}
}

func TestRejectsBadFlags(t *testing.T) {
	quiet := log.New(io.Discard, "", 0)
	for _, args := range [][]string{
		{"-probe", "192.0.2.1:53", "-churn", "1"}, // not loopback
		{"-probe", "127.0.0.1:53"},                // no churn
		{"-networks", "0"},
		{"-containers", "-1"},
	} {
		err := run(quiet, append(args, "-socket", t.TempDir()+"/d.sock"))
		if err == nil || strings.Contains(err.Error(), "listen") {
			t.Errorf("run(%q) = %v, want a flag error", args, err)
		}
	}
}
