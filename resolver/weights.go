package resolver

import "strings"

// Weights and tags (DESIGN 8). Everything here runs when a snapshot is
// built; the query path only indexes a precomputed schedule.

// DefaultWeight is the weight of a container without sidedns.weight, and
// MaxWeight the largest a label, an override or another host may set: ten
// times the default, enough for a 1% canary.
const (
	DefaultWeight = 100
	MaxWeight     = 1000
)

// maxSchedule bounds a schedule's length. Weights whose cycle would be
// longer are scaled down to fit, which moves a replica's share of first
// places by at most about 1/maxSchedule.
const maxSchedule = 4096

// weightOf is c's effective weight: 0 when drained.
func weightOf(c *Container) uint16 {
	switch {
	case c.Drained:
		return 0
	case c.Weight == 0:
		return DefaultWeight
	}
	return c.Weight
}

// pickWeighted is pickAnswer with drained members left out unless nothing
// else is left: the eligible undrained members when there are any,
// otherwise the health rule over every member, drained ones included.
func pickWeighted(all []*member, strict bool) ([]*member, bool) {
	var drained, ok int
	for _, m := range all {
		if m.weight == 0 {
			drained++
		} else if m.eligible {
			ok++
		}
	}
	if drained == 0 || ok == 0 {
		return pickAnswer(all, strict)
	}
	return filter(all, ok, func(m *member) bool { return m.weight > 0 && m.eligible }), false
}

// schedule returns which member of answer comes first for each value of the
// rotation cursor, over one cycle: member i is first weight(i) times per
// sum(weights) (after dividing by their common divisor), spread out by
// smooth weighted round robin. It returns nil when the weights are equal,
// and then plain rotation gives every member the same share.
func schedule(answer []*member) []uint16 {
	if len(answer) < 2 || len(answer) > maxSchedule {
		return nil
	}
	equal := true
	for _, m := range answer[1:] {
		equal = equal && m.weight == answer[0].weight
	}
	if equal {
		return nil
	}
	w := make([]int, len(answer))
	g, sum := 0, 0
	for i, m := range answer {
		w[i] = int(m.weight)
		g = gcd(g, w[i])
		sum += w[i]
	}
	for i := range w {
		w[i] /= g
	}
	sum /= g
	if sum > maxSchedule {
		// Scale down, keeping every non-zero weight at least 1.
		scaled := 0
		for i, x := range w {
			if x > 0 {
				w[i] = max(1, x*maxSchedule/sum)
			}
			scaled += w[i]
		}
		sum = scaled
	}
	out := make([]uint16, sum)
	cur := make([]int, len(w))
	for k := range out {
		best := 0
		for i, x := range w {
			cur[i] += x
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= sum
		out[k] = uint16(best)
	}
	return out
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// first returns the index in rs.answer of the member that leads the answer
// for rotation cursor value n. It does not allocate.
func (rs *rrset) first(n uint32) int {
	if rs.sched != nil {
		return int(rs.sched[n%uint32(len(rs.sched))])
	}
	return int(n % uint32(len(rs.answer)))
}

// serviceKeys appends to keys the zone-only names c registers in a
// network's service table: "<service>.<project>" for a compose container,
// and for each tag "<tag>.<service>.<project>" and "<tag>.<name>" (the
// container name). All are lower-cased. Tag names share the table with
// compose services, so they rank with them: after every container name and
// alias, and after "<name>.<network>".
func serviceKeys(keys []string, c *Container) []string {
	svc := serviceKey(c)
	if svc != "" {
		keys = append(keys, svc)
	}
	name := strings.ToLower(c.Name)
	for _, tag := range c.Tags {
		tag = strings.ToLower(tag)
		if svc != "" {
			keys = addName(keys, tag+"."+svc)
		}
		keys = addName(keys, tag+"."+name)
	}
	return keys
}
