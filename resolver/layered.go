package resolver

import "maps"

// layered is a map that a new snapshot can copy with a few changes in time
// proportional to the changes: an immutable base shared between snapshots,
// and a small overlay of the changes since the base was built. The overlay is
// folded into a new base when it grows, so that reads stay one or two look-ups
// and the copying cost is amortised.
type layered[K comparable, V any] struct {
	base map[K]V           // never written once a snapshot holding it is published
	over map[K]overlaid[V] // changes on top of base; nil when there are none
}

type overlaid[V any] struct {
	v   V
	del bool // the key is gone; v is the zero value
}

// get returns the value for k, or the zero value when there is none. It is
// on the query path: no allocation, and the overlay is skipped when empty.
func (l *layered[K, V]) get(k K) V {
	if len(l.over) != 0 {
		if e, ok := l.over[k]; ok {
			return e.v
		}
	}
	return l.base[k]
}

// thaw gives l its own overlay, so that set and del do not write the one it
// shares with the snapshot it was copied from.
func (l *layered[K, V]) thaw() {
	over := make(map[K]overlaid[V], len(l.over)+8)
	maps.Copy(over, l.over)
	l.over = over
}

// set and del write the overlay; thaw it first.
func (l *layered[K, V]) set(k K, v V) { l.over[k] = overlaid[V]{v: v} }

func (l *layered[K, V]) del(k K) {
	if _, ok := l.base[k]; ok {
		var zero V
		l.over[k] = overlaid[V]{v: zero, del: true}
		return
	}
	delete(l.over, k)
}

// Folding thresholds: past foldMin entries and 1/foldDiv of the base, the
// overlay is merged into a fresh base. A fold copies the whole map (well
// under a millisecond at 10,000 entries); a larger overlay would make every
// publish copy more, a smaller one fold more often.
const (
	foldMin = 64
	foldDiv = 8
)

// settle folds the overlay into a new base when it has grown too large.
func (l *layered[K, V]) settle() {
	if len(l.over) <= foldMin+len(l.base)/foldDiv {
		if len(l.over) == 0 {
			l.over = nil
		}
		return
	}
	base := make(map[K]V, len(l.base)+len(l.over))
	maps.Copy(base, l.base)
	for k, e := range l.over {
		if e.del {
			delete(base, k)
		} else {
			base[k] = e.v
		}
	}
	l.base, l.over = base, nil
}
