package resolver

// each calls f for every live entry, in no particular order.
func (l *layered[K, V]) each(f func(K, V)) {
	for k, v := range l.base {
		if _, ok := l.over[k]; !ok {
			f(k, v)
		}
	}
	for k, e := range l.over {
		if !e.del {
			f(k, e.v)
		}
	}
}
