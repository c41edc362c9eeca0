package dockerwatch

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/sidedns/sidedns/resolver"
)

// Container labels sidedns reads; README.md lists them with examples.
const (
	LabelEnable    = "sidedns.enable"
	LabelNames     = "sidedns.names"
	LabelTTL       = "sidedns.ttl"
	LabelSRVPrefix = "sidedns.srv."
	LabelTags      = "sidedns.tags"
	LabelWeight    = "sidedns.weight"

	labelPrefix = "sidedns."
	maxTTL      = 86400 // a day: longer TTLs would outlive any container change
)

// Sentinel errors inside a LabelError, for errors.Is.
var (
	ErrUnknownLabel  = errors.New("unknown sidedns label")
	ErrInvalidName   = errors.New("invalid DNS name")
	ErrInvalidBool   = errors.New("not a boolean")
	ErrInvalidTTL    = errors.New("ttl not an integer in 0..86400")
	ErrInvalidPort   = errors.New("want <port>/<proto> with port 1-65535 and proto tcp or udp")
	ErrDuplicate     = errors.New("duplicate")
	ErrInvalidWeight = errors.New("weight not an integer in 0..1000")
)

// LabelError is one malformed sidedns label. The label is ignored; the rest
// of the container's labels still apply.
type LabelError struct {
	Label string // label key, e.g. "sidedns.ttl"
	Value string // the offending value (or list entry)
	Err   error  // one of the sentinels above, possibly wrapped
}

func (e *LabelError) Error() string {
	return fmt.Sprintf("label %s=%q: %v", e.Label, e.Value, e.Err)
}

func (e *LabelError) Unwrap() error { return e.Err }

// LabelConfig is what a container's sidedns labels ask for.
type LabelConfig struct {
	Hidden bool            // sidedns.enable=false
	Names  []string        // sidedns.names, lower-cased, deduplicated, in label order
	Ports  []resolver.Port // sidedns.srv.<name>, sorted by name
	TTL    uint32          // sidedns.ttl; 0 means the configured default
	Tags   []string        // sidedns.tags, lower-cased, deduplicated, in label order
	// Weight is sidedns.weight; 0 means the default. sidedns.weight=0
	// sets Drained instead.
	Weight  uint16
	Drained bool
}

// ParseLabels reads the sidedns.* labels of a container. Every malformed label
// (or malformed entry of sidedns.names) yields one error and is skipped; the
// other labels still apply. Labels outside sidedns.* are ignored.
func ParseLabels(labels map[string]string) (LabelConfig, []error) {
	var (
		cfg  LabelConfig
		errs []error
	)
	// Sorted keys make the result and the error order deterministic.
	keys := make([]string, 0, len(labels))
	for k := range labels {
		if strings.HasPrefix(k, labelPrefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)

	bad := func(key, val string, err error) {
		errs = append(errs, &LabelError{Label: key, Value: val, Err: err})
	}
	srvSeen := map[string]bool{}
	for _, key := range keys {
		val := labels[key]
		switch {
		case key == LabelEnable:
			on, err := strconv.ParseBool(strings.TrimSpace(val))
			if err != nil {
				bad(key, val, ErrInvalidBool)
				continue
			}
			cfg.Hidden = !on
		case key == LabelNames:
			seen := map[string]bool{}
			for _, n := range strings.Split(val, ",") {
				n = strings.ToLower(strings.TrimSpace(n))
				n = strings.TrimSuffix(n, ".") // "a.b." means "a.b"
				if n == "" {
					continue // "a,,b" and a trailing comma are harmless
				}
				if err := ValidName(n); err != nil {
					bad(key, n, err)
					continue
				}
				if !seen[n] {
					seen[n] = true
					cfg.Names = append(cfg.Names, n)
				}
			}
		case key == LabelTTL:
			ttl, err := strconv.ParseUint(strings.TrimSpace(val), 10, 32)
			if err != nil || ttl > maxTTL {
				bad(key, val, ErrInvalidTTL)
				continue
			}
			cfg.TTL = uint32(ttl)
		case key == LabelTags:
			seen := map[string]bool{}
			for _, tag := range strings.Split(val, ",") {
				tag = strings.ToLower(strings.TrimSpace(tag))
				if tag == "" {
					continue
				}
				// One DNS label: the tag is the first label of a name.
				if err := validLabel(tag); err != nil {
					bad(key, tag, err)
					continue
				}
				if !seen[tag] {
					seen[tag] = true
					cfg.Tags = append(cfg.Tags, tag)
				}
			}
		case key == LabelWeight:
			w, err := strconv.ParseUint(strings.TrimSpace(val), 10, 16)
			if err != nil || w > resolver.MaxWeight {
				bad(key, val, ErrInvalidWeight)
				continue
			}
			cfg.Weight, cfg.Drained = uint16(w), w == 0
		case strings.HasPrefix(key, LabelSRVPrefix):
			name := strings.ToLower(strings.TrimPrefix(key, LabelSRVPrefix))
			if err := validLabel(name); err != nil {
				bad(key, name, fmt.Errorf("port name: %w", err))
				continue
			}
			p, err := parsePortProto(val)
			if err != nil {
				bad(key, val, err)
				continue
			}
			if srvSeen[name] { // sidedns.srv.HTTP and sidedns.srv.http
				bad(key, val, fmt.Errorf("port name %s: %w", name, ErrDuplicate))
				continue
			}
			srvSeen[name] = true
			p.Name = name
			cfg.Ports = append(cfg.Ports, p)
		default:
			bad(key, val, ErrUnknownLabel)
		}
	}
	sort.Slice(cfg.Ports, func(i, j int) bool { return cfg.Ports[i].Name < cfg.Ports[j].Name })
	return cfg, errs
}

// parsePortProto parses "8080/tcp". The protocol is required: SRV names carry it.
func parsePortProto(s string) (resolver.Port, error) {
	port, proto, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return resolver.Port{}, ErrInvalidPort
	}
	proto = strings.ToLower(proto)
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 || (proto != "tcp" && proto != "udp") {
		return resolver.Port{}, ErrInvalidPort
	}
	return resolver.Port{Port: uint16(n), Proto: proto}, nil
}

// ValidName reports whether s can be registered as a name: dot-separated
// labels of 1-63 characters from [a-z0-9-_] (any case; matching is
// case-insensitive), none starting or ending with '-', at most 253 characters
// in all. No trailing dot. The error wraps ErrInvalidName.
func ValidName(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(s) > 253 {
		return fmt.Errorf("%w: %d characters, want at most 253", ErrInvalidName, len(s))
	}
	for rest := s; ; {
		label, tail, more := strings.Cut(rest, ".")
		if err := validLabel(label); err != nil {
			return err
		}
		if !more {
			return nil
		}
		rest = tail
	}
}

// validLabel checks one DNS label; see ValidName.
func validLabel(l string) error {
	switch {
	case l == "":
		return fmt.Errorf("%w: empty label", ErrInvalidName)
	case len(l) > 63:
		return fmt.Errorf("%w: label of %d characters, want at most 63", ErrInvalidName, len(l))
	case l[0] == '-' || l[len(l)-1] == '-':
		return fmt.Errorf("%w: label %q starts or ends with '-'", ErrInvalidName, l)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: character %q in label %q", ErrInvalidName, c, l)
		}
	}
	return nil
}
