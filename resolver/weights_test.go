package resolver

import (
	"maps"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"testing"

	"github.com/miekg/dns"

	"github.com/sidedns/sidedns/dnswire"
)

func members(weights ...uint16) []*member {
	ms := make([]*member, len(weights))
	for i, w := range weights {
		ms[i] = &member{weight: w, eligible: true, running: true}
	}
	return ms
}

// Over one cycle, each member leads in proportion to its weight, and no
// member leads twice in a row while another with the same or a larger
// weight waits.
func TestScheduleShares(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint16
		cycle   int // want len(schedule); 0 for nil (plain rotation)
	}{
		{"equal", []uint16{100, 100, 100}, 0},
		{"one", []uint16{800}, 0},
		{"canary", []uint16{100, 100, 800}, 10},
		{"tenth", []uint16{900, 100}, 10},
		{"coprime", []uint16{7, 3, 1}, 11},
		{"drained stays out of first place", []uint16{0, 100, 300}, 4},
		{"long cycle scaled", []uint16{997, 991, 983, 977, 971, 967}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := schedule(members(tt.weights...))
			if tt.cycle == 0 && tt.name != "long cycle scaled" {
				if s != nil {
					t.Fatalf("schedule = %v, want nil (plain rotation)", s)
				}
				return
			}
			if tt.cycle > 0 && len(s) != tt.cycle {
				t.Fatalf("cycle = %d, want %d: %v", len(s), tt.cycle, s)
			}
			if len(s) > maxSchedule {
				t.Fatalf("cycle %d longer than %d", len(s), maxSchedule)
			}
			count := make([]int, len(tt.weights))
			for _, i := range s {
				count[i]++
			}
			var sum float64
			for _, w := range tt.weights {
				sum += float64(w)
			}
			for i, w := range tt.weights {
				got, want := float64(count[i])/float64(len(s)), float64(w)/sum
				if math.Abs(got-want) > 0.002 {
					t.Errorf("member %d (weight %d) leads %.4f of the time, want %.4f", i, w, got, want)
				}
			}
		})
	}
}

// Smooth weighted round robin interleaves: within a cycle of 100/100/800
// the heavy member never leads more than four times in a row.
func TestScheduleInterleaves(t *testing.T) {
	s := schedule(members(100, 100, 800))
	run := 0
	for _, i := range s {
		if i == 2 {
			run++
		} else {
			run = 0
		}
		if run > 4 {
			t.Fatalf("schedule %v leads with the heavy member %d times in a row", s, run)
		}
	}
}

func TestPickWeighted(t *testing.T) {
	sick := func(m *member) *member { m.eligible = false; return m }
	tests := []struct {
		name     string
		all      []*member
		strict   bool
		want     []int // indices into all
		failOpen bool
	}{
		{"no drained", members(100, 100), false, []int{0, 1}, false},
		{"drained left out", members(100, 0, 300), false, []int{0, 2}, false},
		{"all drained answered", members(0, 0), false, []int{0, 1}, false},
		{"drained healthy before sick undrained", []*member{sick(members(100)[0]), members(0)[0]}, false, []int{1}, false},
		{"all sick, drained too: fail open over all", []*member{sick(members(100)[0]), sick(members(0)[0])}, false, []int{0, 1}, true},
		{"all sick, strict", []*member{sick(members(100)[0]), sick(members(0)[0])}, true, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, failOpen := pickWeighted(tt.all, tt.strict)
			var idx []int
			for _, m := range got {
				idx = append(idx, slices.Index(tt.all, m))
			}
			if !slices.Equal(idx, tt.want) || failOpen != tt.failOpen {
				t.Errorf("pickWeighted = %v (fail open %v), want %v (%v)", idx, failOpen, tt.want, tt.failOpen)
			}
		})
	}
}

// trafficTopology is a compose service with three replicas, weighted
// 100/100/800, the last two tagged canary, plus a drained fourth.
func trafficTopology() Topology {
	c := func(n, ip string, weight uint16, tags ...string) Container {
		return Container{ID: id("77" + n), Name: "shop-web-" + n, Project: "shop", Service: "web", Weight: weight, Tags: tags,
			Endpoints: []Endpoint{ep("shopnet", ip, "web")}}
	}
	drained := c("4", "10.30.0.5", 0)
	drained.Drained = true
	return Topology{
		Networks: []Network{{ID: "id-shopnet", Name: "shopnet", Subnets: []netip.Prefix{netip.MustParsePrefix("10.30.0.0/16")}}},
		Containers: []Container{
			c("1", "10.30.0.2", 0), // default weight, 100
			c("2", "10.30.0.3", 100, "canary"),
			c("3", "10.30.0.4", 800, "canary", "V2"),
			drained,
		},
	}
}

// firstShares asks name n times and returns how often
// each address came first.
func firstShares(t *testing.T, r *Resolver, name string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	req := new(dns.Msg)
	req.SetQuestion(name, dns.TypeA)
	pkt, _ := req.Pack()
	var q dnswire.Query
	if err := dnswire.Parse(pkt, &q); err != nil {
		t.Fatal(err)
	}
	for range n {
		var m dns.Msg
		out, ok := r.Answer(nil, &q, addr(host))
		if !ok {
			t.Fatalf("%s not answered", name)
		}
		if err := m.Unpack(out); err != nil {
			t.Fatal(err)
		}
		if len(m.Answer) == 0 {
			t.Fatalf("%s: empty answer %v", name, &m)
		}
		got[m.Answer[0].(*dns.A).A.String()]++
	}
	return got
}

func TestWeightedAndTaggedAnswers(t *testing.T) {
	r := New(Options{})
	r.Publish(trafficTopology())
	tests := []struct {
		name  string
		share map[string]int // of 1000 answers
	}{
		{"web.shop.docker.", map[string]int{"10.30.0.2": 100, "10.30.0.3": 100, "10.30.0.4": 800}},
		{"web.", map[string]int{"10.30.0.2": 100, "10.30.0.3": 100, "10.30.0.4": 800}},
		{"canary.web.shop.docker.", map[string]int{"10.30.0.3": 111, "10.30.0.4": 889}},
		{"v2.web.shop.docker.", map[string]int{"10.30.0.4": 1000}},
		{"canary.shop-web-3.docker.", map[string]int{"10.30.0.4": 1000}},
		{"shop-web-4.docker.", map[string]int{"10.30.0.5": 1000}}, // drained, but nothing else is left
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := firstShares(t, r, tt.name, 9000)
			for a, want := range tt.share {
				if d := math.Abs(float64(got[a])/9 - float64(want)); d > 1 {
					t.Errorf("%s first %d of 9000 times, want %d per 1000", a, got[a], want)
				}
			}
			for a := range got {
				if _, ok := tt.share[a]; !ok {
					t.Errorf("%s led an answer; it must not be in it", a)
				}
			}
		})
	}
	for _, name := range []string{"canary.web.shop.", "canary.shop-web-1.docker.", "prod.web.shop.docker."} {
		resp, ok := ask(t, r, host, name, dns.TypeA)
		if ok && len(resp.Answer) > 0 {
			t.Errorf("%s answered %v; tags are names in the zone, for tagged containers only", name, resp.Answer)
		}
	}
}

// A drained container is in no answer while others are left, on either path.
func TestDrainedLeftOut(t *testing.T) {
	r := New(Options{})
	r.Publish(trafficTopology())
	for _, name := range []string{"web.", "web.shop.docker."} {
		resp, _ := ask(t, r, host, name, dns.TypeA)
		for _, rr := range resp.Answer {
			if rr.(*dns.A).A.String() == "10.30.0.5" {
				t.Errorf("%s answers the drained replica: %v", name, resp.Answer)
			}
		}
		if len(resp.Answer) != 3 {
			t.Errorf("%s: %d answers, want 3", name, len(resp.Answer))
		}
	}
}

// Weights and tags follow incremental updates: a reweighed, retagged and
// drained container is answered as a fresh build would.
func TestWeightsFollowUpdates(t *testing.T) {
	top := trafficTopology()
	r := New(Options{})
	r.Publish(top)
	next := top
	next.Containers = slices.Clone(top.Containers)
	next.Containers[0].Weight, next.Containers[0].Tags = 800, []string{"canary"}
	next.Containers[2].Drained = true
	r.Publish(next)
	fresh := New(Options{})
	fresh.Publish(next)
	for _, name := range []string{"web.", "canary.web.shop.docker.", "canary.shop-web-1.docker.", "v2.web.shop.docker."} {
		if got, want := firstShares(t, r, name, 900), firstShares(t, fresh, name, 900); !maps.Equal(got, want) {
			t.Errorf("%s: updated leads %v, built leads %v", name, got, want)
		}
	}
}

func BenchmarkScheduleFirst(b *testing.B) {
	rs := &rrset{answer: members(100, 100, 800)}
	rs.sched = schedule(rs.answer)
	b.ReportAllocs()
	var sink int
	for b.Loop() {
		sink += rs.first(rs.next.Add(1) - 1)
	}
	_ = sink
}

// The fast path with weights and a tag name stays allocation-free, and
// costs what plain rotation over the same replicas costs.
func BenchmarkAnswerWeighted(b *testing.B) {
	weighted := New(Options{})
	weighted.Publish(trafficTopology())
	equal := New(Options{})
	top := trafficTopology()
	for i := range top.Containers {
		top.Containers[i].Weight, top.Containers[i].Drained = 0, i == 3
	}
	equal.Publish(top)
	for _, bc := range []struct {
		label, name string
		r           *Resolver
	}{
		{"equal", "web.shop.docker.", equal},
		{"weighted", "web.shop.docker.", weighted},
		{"tag", "canary.web.shop.docker.", weighted},
	} {
		name, r := bc.name, bc.r
		b.Run(bc.label, func(b *testing.B) {
			req := new(dns.Msg)
			req.SetQuestion(name, dns.TypeA)
			pkt, _ := req.Pack()
			src := addr(host)
			var q dnswire.Query
			buf := make([]byte, 0, 512)
			b.ReportAllocs()
			for b.Loop() {
				if err := dnswire.Parse(pkt, &q); err != nil {
					b.Fatal(err)
				}
				if _, ok := r.Answer(buf[:0], &q, src); !ok {
					b.Fatal("not answered")
				}
			}
		})
	}
}

func TestAnswerSet(t *testing.T) {
	r := New(Options{})
	r.Publish(trafficTopology())
	tests := []struct {
		name string
		want []string
	}{
		{"web.shop.docker", []string{"shop-web-1 10.30.0.2 100", "shop-web-2 10.30.0.3 100", "shop-web-3 10.30.0.4 800"}},
		{"WEB.", []string{"shop-web-1 10.30.0.2 100", "shop-web-2 10.30.0.3 100", "shop-web-3 10.30.0.4 800"}},
		{"canary.web.shop.docker.", []string{"shop-web-2 10.30.0.3 100", "shop-web-3 10.30.0.4 800"}},
		{"shop-web-4.docker", []string{"shop-web-4 10.30.0.5 0"}},
		{"canary.web.shop", nil},
		{"docker", nil},
		{"nope.docker", nil},
	}
	for _, tt := range tests {
		var got []string
		for _, a := range r.AnswerSet(tt.name) {
			got = append(got, a.Container+" "+a.Addr.String()+" "+strconv.Itoa(int(a.Weight)))
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("AnswerSet(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
	// Other hosts' records: the set a query in the zone gets, never a bare name.
	r.Publish(zoneFixture())
	for name, want := range map[string][]string{
		"api.shop.docker":        {"api-1 10.9.0.1 100"},
		"canary.api.shop.docker": {"api-1 10.9.0.1 100"},
		"api-1.docker":           {"api-1 10.9.0.1 100"},
		"api-1":                  nil,
	} {
		var got []string
		for _, a := range r.AnswerSet(name) {
			got = append(got, a.Container+" "+a.Addr.String()+" "+strconv.Itoa(int(a.Weight)))
		}
		if !slices.Equal(got, want) {
			t.Errorf("zone AnswerSet(%q) = %q, want %q", name, got, want)
		}
	}
}
