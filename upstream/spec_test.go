package upstream

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseSpec(t *testing.T) {
	ap := netip.MustParseAddrPort
	tests := []struct {
		in      string
		want    Spec
		str     string // Spec.String(); empty means in
		wantErr string
	}{
		{in: "1.2.3.4", want: Spec{Proto: "udp", Addr: "1.2.3.4:53", AddrPort: ap("1.2.3.4:53")}, str: "1.2.3.4:53"},
		{in: "1.2.3.4:5353", want: Spec{Proto: "udp", Addr: "1.2.3.4:5353", AddrPort: ap("1.2.3.4:5353")}},
		{in: " 1.2.3.4 ", want: Spec{Proto: "udp", Addr: "1.2.3.4:53", AddrPort: ap("1.2.3.4:53")}, str: "1.2.3.4:53"},
		{in: "[::1]:53", want: Spec{Proto: "udp", Addr: "[::1]:53", AddrPort: ap("[::1]:53")}},
		{in: "::1", want: Spec{Proto: "udp", Addr: "[::1]:53", AddrPort: ap("[::1]:53")}, str: "[::1]:53"},
		{in: "2001:db8::1", want: Spec{Proto: "udp", Addr: "[2001:db8::1]:53", AddrPort: ap("[2001:db8::1]:53")}, str: "[2001:db8::1]:53"},
		{in: "udp://1.2.3.4", want: Spec{Proto: "udp", Addr: "1.2.3.4:53", AddrPort: ap("1.2.3.4:53")}, str: "1.2.3.4:53"},
		{in: "tcp://1.2.3.4", want: Spec{Proto: "tcp", Addr: "1.2.3.4:53", AddrPort: ap("1.2.3.4:53")}, str: "tcp://1.2.3.4:53"},
		{in: "TCP://1.2.3.4:54", want: Spec{Proto: "tcp", Addr: "1.2.3.4:54", AddrPort: ap("1.2.3.4:54")}, str: "tcp://1.2.3.4:54"},
		{in: "tcp://[::1]:5353", want: Spec{Proto: "tcp", Addr: "[::1]:5353", AddrPort: ap("[::1]:5353")}},
		{in: "tls://1.2.3.4", want: Spec{Proto: "tls", Addr: "1.2.3.4:853", AddrPort: ap("1.2.3.4:853")}, str: "tls://1.2.3.4:853"},
		{in: "tls://1.2.3.4:853", want: Spec{Proto: "tls", Addr: "1.2.3.4:853", AddrPort: ap("1.2.3.4:853")}},
		{in: "tls://dns.example:853", want: Spec{Proto: "tls", Addr: "dns.example:853"}},
		{in: "tls://dns.example", want: Spec{Proto: "tls", Addr: "dns.example:853"}, str: "tls://dns.example:853"},
		{in: "tls://dns.example.:8853", want: Spec{Proto: "tls", Addr: "dns.example:8853"}, str: "tls://dns.example:8853"},
		{in: "tls://1.2.3.4:853#server.name", want: Spec{Proto: "tls", Addr: "1.2.3.4:853", AddrPort: ap("1.2.3.4:853"), ServerName: "server.name"}},
		{in: "tls://[2001:db8::1]#dns.example", want: Spec{Proto: "tls", Addr: "[2001:db8::1]:853", AddrPort: ap("[2001:db8::1]:853"), ServerName: "dns.example"}, str: "tls://[2001:db8::1]:853#dns.example"},

		{in: "", wantErr: "empty"},
		{in: "   ", wantErr: "empty"},
		{in: "dns.example", wantErr: "not an IP address"},
		{in: "tcp://dns.example:53", wantErr: "not an IP address"},
		{in: "https://1.2.3.4", wantErr: "unknown scheme"},
		{in: "tcp://", wantErr: "missing address"},
		{in: "1.2.3.4:0", wantErr: "port 0"},
		{in: "1.2.3.4:70000", wantErr: "bad port"},
		{in: "1.2.3.4:dns", wantErr: "bad port"},
		{in: "1.2.3.4#name", wantErr: "only valid with tls"},
		{in: "tls://1.2.3.4#", wantErr: "bad TLS server name"},
		{in: "tls://1.2.3.4#bad!name", wantErr: "bad TLS server name"},
		{in: "0.0.0.0", wantErr: "unusable address"},
		{in: "[::1]", want: Spec{Proto: "udp", Addr: "[::1]:53", AddrPort: ap("[::1]:53")}, str: "[::1]:53"},
		{in: "[::1", wantErr: "bad address"},
		{in: "1.2.3.4:53:53", wantErr: "bad address"},
		{in: "1.2.3", wantErr: "not an IP address"},
		{in: "udp://1.2.3.4/path", wantErr: "unexpected character"},
		{in: "tls://bad..name", wantErr: "bad host name"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSpec(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseSpec(%q) = %+v, want error with %q", tt.in, got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "parse upstream") {
					t.Fatalf("ParseSpec(%q) error = %q, want it to contain %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSpec(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseSpec(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			wantStr := tt.str
			if wantStr == "" {
				wantStr = tt.in
			}
			if got.String() != wantStr {
				t.Errorf("String() = %q, want %q", got.String(), wantStr)
			}
			// String output parses back to the same spec.
			again, err := ParseSpec(got.String())
			if err != nil || again != got {
				t.Errorf("ParseSpec(String()) = %+v, %v; want %+v", again, err, got)
			}
		})
	}
}

func TestTLSServerName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"tls://1.2.3.4", "1.2.3.4"},
		{"tls://[::1]:853", "::1"},
		{"tls://dns.example:853", "dns.example"},
		{"tls://1.2.3.4#dns.example", "dns.example"},
	}
	for _, tt := range tests {
		s, err := ParseSpec(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.tlsServerName(); got != tt.want {
			t.Errorf("%s: server name %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFromResolvConf(t *testing.T) {
	ap := netip.MustParseAddrPort
	const conf = `# generated
search example.internal
nameserver 127.0.0.11
nameserver 198.51.100.2
nameserver 127.0.0.1
nameserver not-an-ip
nameserver 2001:db8::53
nameserver 192.0.2.1
options ndots:0
`
	tests := []struct {
		name    string
		conf    string
		skip    []netip.AddrPort
		want    []string
		wantErr string
	}{
		{
			name: "skips docker dns only",
			conf: conf,
			want: []string{"198.51.100.2:53", "127.0.0.1:53", "[2001:db8::53]:53", "192.0.2.1:53"},
		},
		{
			name: "skips own listen address",
			conf: conf,
			skip: []netip.AddrPort{ap("127.0.0.1:53"), ap("192.0.2.1:53")},
			want: []string{"198.51.100.2:53", "[2001:db8::53]:53"},
		},
		{
			name: "own address on another port is kept",
			conf: conf,
			skip: []netip.AddrPort{ap("127.0.0.1:5353")},
			want: []string{"198.51.100.2:53", "127.0.0.1:53", "[2001:db8::53]:53", "192.0.2.1:53"},
		},
		{
			name: "wildcard listener skips local addresses",
			conf: conf,
			skip: []netip.AddrPort{ap("0.0.0.0:53")},
			want: []string{"198.51.100.2:53", "[2001:db8::53]:53", "192.0.2.1:53"},
		},
		{
			name:    "nothing left",
			conf:    "nameserver 127.0.0.11\nnameserver 127.0.0.1\n",
			skip:    []netip.AddrPort{ap("[::]:53")},
			wantErr: "no usable nameserver",
		},
		{
			name:    "empty file",
			conf:    "# nothing\n",
			wantErr: "no usable nameserver",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "resolv.conf")
			if err := os.WriteFile(path, []byte(tt.conf), 0o644); err != nil {
				t.Fatal(err)
			}
			specs, err := FromResolvConf(path, tt.skip)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("FromResolvConf error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("FromResolvConf: %v", err)
			}
			var got []string
			for _, s := range specs {
				if s.Proto != ProtoUDP || s.AddrPort.String() != s.Addr {
					t.Errorf("spec %+v: want udp with AddrPort set", s)
				}
				got = append(got, s.Addr)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("servers = %v, want %v", got, tt.want)
			}
		})
	}

	if _, err := FromResolvConf(filepath.Join(t.TempDir(), "missing"), nil); err == nil || !strings.Contains(err.Error(), "read resolv.conf") {
		t.Errorf("missing file: error = %v, want a read resolv.conf error", err)
	}
}
