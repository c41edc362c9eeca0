package main

// rule explains a difference between unbound and sidedns: for the cases it
// names, sidedns's reply passes when ok accepts it. Every rule says why.
type rule struct {
	id     string
	reason string
	cases  []string
	ok     func(u, s summary) bool
}

var rules = []rule{}

// explain returns the id of the first rule that accepts sidedns's reply s
// where unbound replied u, or "".
func explain(caseID, proto string, u, s summary) string {
	for _, r := range rules {
		for _, c := range r.cases {
			if c == caseID && r.ok(u, s) {
				return r.id
			}
		}
	}
	return ""
}
