package resolver

import (
	"fmt"
	"testing"
)

// Records lists what the resolver answers: every name, per network, with
// the addresses the admin view gets.
func TestRecords(t *testing.T) {
	r := newTestResolver(t, Options{})
	top, recs := r.Records()
	if len(top.Containers) != len(fixture().Containers) {
		t.Fatalf("topology has %d containers", len(top.Containers))
	}
	got := map[string]string{}
	for _, rec := range recs {
		got[rec.Network+" "+rec.Name] = fmt.Sprint(rec.Zone, rec.FailOpen, rec.Addrs, len(rec.Containers))
	}
	for key, want := range map[string]string{
		"appnet web":                  "false false [172.20.0.2 172.20.0.3] 2",
		"appnet six":                  "false false [172.20.0.30 fd00::30] 1",
		"appnet flaky":                "false false [172.20.0.41] 2",
		"appnet allbad":               "false true [172.20.0.42 172.20.0.43] 2",
		"appnet pz":                   "false false [] 1",
		"appnet extra.name":           "false false [172.20.0.60] 1",
		"appnet web.proj.docker":      "true false [172.20.0.2 172.20.0.3] 2",
		"shared db":                   "false false [172.22.0.2 172.22.0.3] 2",
		"other multi":                 "false false [172.21.0.50] 1",
		"appnet " + id("aaaa01")[:12]: "false false [172.20.0.2] 1",
	} {
		if got[key] != want {
			t.Errorf("%s = %q, want %q", key, got[key], want)
		}
	}
	// Every bare name the records list is answered.
	for _, rec := range recs {
		if rec.Zone || len(rec.Addrs) == 0 {
			continue
		}
		resp, ok := ask(t, r, host, rec.Name+"."+rec.Network+".", familyOf(rec.Addrs[0]))
		if !ok || len(resp.Answer) == 0 {
			t.Errorf("record %s on %s is not answered", rec.Name, rec.Network)
		}
	}
}
