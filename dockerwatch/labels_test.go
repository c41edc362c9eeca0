package dockerwatch

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/sidedns/sidedns/resolver"
)

func TestValidName(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	tests := []struct {
		name string
		ok   bool
	}{
		{"web", true},
		{"api.example", true},
		{"my_service-1", true},
		{"UPPER.case", true}, // matching is case-insensitive
		{"a", true},
		{"0", true},
		{long63, true},
		{strings.Repeat(long63+".", 3) + strings.Repeat("a", 61), true}, // 253
		{"", false},
		{strings.Repeat(long63+".", 3) + strings.Repeat("a", 62), false}, // 254
		{long63 + "a", false},
		{"-web", false},
		{"web-", false},
		{"a.-b", false},
		{"two..dots", false},
		{".lead", false},
		{"trail.", false},
		{"sp ace", false},
		{"ünïcode", false},
		{"a/b", false},
		{"a*b", false},
	}
	for _, tt := range tests {
		err := ValidName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidName(%q) = %v, want it to wrap ErrInvalidName", tt.name, err)
		}
	}
}

func TestParseLabels(t *testing.T) {
	tests := []struct {
		name   string
		labels map[string]string
		want   LabelConfig
		errs   []error // sentinels, in order
	}{
		{name: "none", labels: nil},
		{
			name:   "foreign labels ignored",
			labels: map[string]string{"com.docker.compose.project": "p", "sidedns": "x", "org.sidedns.x": "y"},
		},
		{name: "enable false hides", labels: map[string]string{"sidedns.enable": "false"}, want: LabelConfig{Hidden: true}},
		{name: "enable 0 hides", labels: map[string]string{"sidedns.enable": "0"}, want: LabelConfig{Hidden: true}},
		{name: "enable true", labels: map[string]string{"sidedns.enable": "true"}},
		{name: "enable junk", labels: map[string]string{"sidedns.enable": "nope"}, errs: []error{ErrInvalidBool}},
		{
			name:   "names",
			labels: map[string]string{"sidedns.names": " Api.Example., web ,,web,db"},
			want:   LabelConfig{Names: []string{"api.example", "web", "db"}},
		},
		{
			name:   "names with bad entries keeps the good ones",
			labels: map[string]string{"sidedns.names": "-bad,ok,a..b," + strings.Repeat("x", 64)},
			want:   LabelConfig{Names: []string{"ok"}},
			errs:   []error{ErrInvalidName, ErrInvalidName, ErrInvalidName},
		},
		{name: "ttl", labels: map[string]string{"sidedns.ttl": "30"}, want: LabelConfig{TTL: 30}},
		{name: "ttl zero", labels: map[string]string{"sidedns.ttl": "0"}},
		{name: "ttl max", labels: map[string]string{"sidedns.ttl": "86400"}, want: LabelConfig{TTL: 86400}},
		{name: "ttl too big", labels: map[string]string{"sidedns.ttl": "86401"}, errs: []error{ErrInvalidTTL}},
		{name: "ttl negative", labels: map[string]string{"sidedns.ttl": "-1"}, errs: []error{ErrInvalidTTL}},
		{name: "ttl overflow", labels: map[string]string{"sidedns.ttl": "4294967296"}, errs: []error{ErrInvalidTTL}},
		{name: "ttl unit", labels: map[string]string{"sidedns.ttl": "30s"}, errs: []error{ErrInvalidTTL}},
		{
			name: "srv ports sorted by name",
			labels: map[string]string{
				"sidedns.srv.web": "80/TCP",
				"sidedns.srv.dns": "53/udp",
			},
			want: LabelConfig{Ports: []resolver.Port{{Name: "dns", Port: 53, Proto: "udp"}, {Name: "web", Port: 80, Proto: "tcp"}}},
		},
		{
			name: "srv bad values",
			labels: map[string]string{
				"sidedns.srv.a": "0/tcp",
				"sidedns.srv.b": "65536/tcp",
				"sidedns.srv.c": "80/sctp",
				"sidedns.srv.d": "80",
				"sidedns.srv.e": "http/tcp",
				"sidedns.srv.":  "80/tcp",
				"sidedns.srv.-": "80/tcp",
				"sidedns.srv.f": "65535/udp",
			},
			want: LabelConfig{Ports: []resolver.Port{{Name: "f", Port: 65535, Proto: "udp"}}},
			errs: []error{ErrInvalidName, ErrInvalidName, ErrInvalidPort, ErrInvalidPort, ErrInvalidPort, ErrInvalidPort, ErrInvalidPort},
		},
		{
			name:   "srv duplicate name by case",
			labels: map[string]string{"sidedns.srv.HTTP": "80/tcp", "sidedns.srv.http": "8080/tcp"},
			want:   LabelConfig{Ports: []resolver.Port{{Name: "http", Port: 80, Proto: "tcp"}}},
			errs:   []error{ErrDuplicate},
		},
		{
			name:   "tags",
			labels: map[string]string{"sidedns.tags": " Canary, v2,,canary"},
			want:   LabelConfig{Tags: []string{"canary", "v2"}},
		},
		{
			name:   "tags with dots or bad characters are skipped",
			labels: map[string]string{"sidedns.tags": "a.b,ok,-x,sp ace"},
			want:   LabelConfig{Tags: []string{"ok"}},
			errs:   []error{ErrInvalidName, ErrInvalidName, ErrInvalidName},
		},
		{name: "weight", labels: map[string]string{"sidedns.weight": "800"}, want: LabelConfig{Weight: 800}},
		{name: "weight max", labels: map[string]string{"sidedns.weight": " 1000 "}, want: LabelConfig{Weight: 1000}},
		{name: "weight zero drains", labels: map[string]string{"sidedns.weight": "0"}, want: LabelConfig{Drained: true}},
		{name: "weight too big", labels: map[string]string{"sidedns.weight": "1001"}, errs: []error{ErrInvalidWeight}},
		{name: "weight negative", labels: map[string]string{"sidedns.weight": "-5"}, errs: []error{ErrInvalidWeight}},
		{name: "weight fraction", labels: map[string]string{"sidedns.weight": "1.5"}, errs: []error{ErrInvalidWeight}},
		{name: "weight overflow", labels: map[string]string{"sidedns.weight": "65637"}, errs: []error{ErrInvalidWeight}},
		{name: "unknown sidedns label", labels: map[string]string{"sidedns.nmes": "a"}, errs: []error{ErrUnknownLabel}},
		{
			name: "one bad label does not spoil the others",
			labels: map[string]string{
				"sidedns.names":    "extra",
				"sidedns.ttl":      "abc",
				"sidedns.srv.http": "8080/tcp",
			},
			want: LabelConfig{Names: []string{"extra"}, Ports: []resolver.Port{{Name: "http", Port: 8080, Proto: "tcp"}}},
			errs: []error{ErrInvalidTTL},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := ParseLabels(tt.labels)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("config = %+v, want %+v", got, tt.want)
			}
			if len(errs) != len(tt.errs) {
				t.Fatalf("errors = %v, want %d errors", errs, len(tt.errs))
			}
			for i, err := range errs {
				var le *LabelError
				if !errors.As(err, &le) || le.Label == "" {
					t.Errorf("error %d = %v, want a *LabelError naming the label", i, err)
				}
				if !errors.Is(err, tt.errs[i]) {
					t.Errorf("error %d = %v, want %v", i, err, tt.errs[i])
				}
			}
		})
	}
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"web", "a.b", "-a", "a..b", "", strings.Repeat("a", 64), "A_b-1.c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidName(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidName) {
				t.Fatalf("ValidName(%q) = %v, not ErrInvalidName", s, err)
			}
			return
		}
		if len(s) == 0 || len(s) > 253 {
			t.Fatalf("ValidName accepted %q of length %d", s, len(s))
		}
		for _, l := range strings.Split(s, ".") {
			if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
				t.Fatalf("ValidName accepted %q with bad label %q", s, l)
			}
			for _, c := range []byte(l) {
				if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
					t.Fatalf("ValidName accepted %q with byte %q", s, c)
				}
			}
		}
	})
}

func FuzzParseLabels(f *testing.F) {
	f.Add("false", "a,b", "30", "http", "8080/tcp")
	f.Add("", "-x,,y..z", "86401", "HTTP", "0/udp")
	f.Add("1", "A.B.", "", "", "65535/UDP")
	f.Fuzz(func(t *testing.T, enable, names, ttl, srvName, srvVal string) {
		labels := map[string]string{
			LabelEnable:              enable,
			LabelNames:               names,
			LabelTTL:                 ttl,
			LabelTags:                names, // same grammar, one label each
			LabelWeight:              ttl,
			LabelSRVPrefix + srvName: srvVal,
			"sidedns." + srvName:     srvVal, // mostly unknown labels
		}
		cfg, errs := ParseLabels(labels)
		for _, err := range errs {
			var le *LabelError
			if !errors.As(err, &le) {
				t.Fatalf("error %v is not a *LabelError", err)
			}
			if _, ok := labels[le.Label]; !ok {
				t.Fatalf("error names label %q that is not set", le.Label)
			}
		}
		if cfg.TTL > maxTTL {
			t.Fatalf("TTL %d above the maximum", cfg.TTL)
		}
		if cfg.Weight > resolver.MaxWeight || cfg.Drained && cfg.Weight != 0 {
			t.Fatalf("weight %d, drained %v", cfg.Weight, cfg.Drained)
		}
		for _, tag := range cfg.Tags {
			if validLabel(tag) != nil || tag != strings.ToLower(tag) {
				t.Fatalf("tag %q accepted", tag)
			}
		}
		seen := map[string]bool{}
		for _, n := range cfg.Names {
			if err := ValidName(n); err != nil || n != strings.ToLower(n) {
				t.Fatalf("name %q accepted: %v", n, err)
			}
			if seen[n] {
				t.Fatalf("name %q twice", n)
			}
			seen[n] = true
		}
		for _, p := range cfg.Ports {
			if p.Port == 0 || (p.Proto != "tcp" && p.Proto != "udp") || validLabel(p.Name) != nil || strings.Contains(p.Name, ".") {
				t.Fatalf("bad port accepted: %+v", p)
			}
		}
	})
}
