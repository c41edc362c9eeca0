// Package cluster shares records between sidedns instances through etcd
// (DESIGN 7). Each instance writes its host record and its service records
// under <prefix>hosts/<host>/, all on one lease, and watches the prefix for
// everyone else's. etcd does the replication; this package only encodes,
// validates, publishes and watches.
package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/sidedns/sidedns/dockerwatch"
	"github.com/sidedns/sidedns/resolver"
)

// Limits on what another host may write: a record past them is skipped, so a
// broken or hostile peer cannot make every instance hold megabytes.
const (
	MaxValueSize = 4096 // bytes of one JSON value
	maxAddresses = 16
	maxPorts     = 64
	maxTags      = 16
)

// Sentinel errors for a record that is skipped, for errors.Is.
var (
	ErrBadKey      = errors.New("key outside the sidedns layout")
	ErrTooLarge    = errors.New("value larger than 4096 bytes")
	ErrBadJSON     = errors.New("value is not a record")
	ErrBadAddress  = errors.New("invalid address")
	ErrBadPort     = errors.New("invalid port")
	ErrBadTag      = errors.New("invalid tag")
	ErrBadWeight   = errors.New("weight above 1000")
	ErrNameMissing = errors.New("record without a name")
)

// Host is the host record: who publishes, and since when.
type Host struct {
	Addr    netip.Addr `json:"addr"`
	Version string     `json:"version,omitempty"`
	Started time.Time  `json:"started"`
}

// Port is one SRV target of a record. Name is what the SRV query names
// ("8080" for _8080._tcp, "http" for _http._tcp); Port is where to connect,
// which for a published port is the host port, not the container's.
type Port struct {
	Name  string `json:"name"`
	Port  uint16 `json:"port"`
	Proto string `json:"proto"`
}

// Record is one service replica as other hosts can reach it. Tags, Weight
// and Drained carry traffic control (DESIGN 8) with the record, labels and
// runtime overrides applied, so a drain on the replica's host applies on
// every host.
type Record struct {
	Name      string       `json:"name"`
	Project   string       `json:"project,omitempty"`
	Service   string       `json:"service,omitempty"`
	Addresses []netip.Addr `json:"addresses"`
	Ports     []Port       `json:"ports,omitempty"`
	TTL       uint32       `json:"ttl,omitempty"`
	Tags      []string     `json:"tags,omitempty"`
	Weight    uint16       `json:"weight,omitempty"` // 0: the default weight
	Drained   bool         `json:"drained,omitempty"`
}

// Key layout under the prefix:
//
//	<prefix>hosts/<host>/host          Host
//	<prefix>hosts/<host>/rec/<name>    Record
//
// <host> is the advertise address, so it names the host as others reach it.
const (
	hostsDir  = "hosts/"
	hostLeaf  = "/host"
	recordDir = "/rec/"
)

// HostKey and RecordKey build the keys of host h under prefix.
func HostKey(prefix, h string) string         { return prefix + hostsDir + h + hostLeaf }
func RecordKey(prefix, h, name string) string { return prefix + hostsDir + h + recordDir + name }
func hostPrefix(prefix, h string) string      { return prefix + hostsDir + h + "/" }

// KeyKind says what a key under the prefix holds.
type KeyKind uint8

const (
	KindHost KeyKind = iota + 1
	KindRecord
)

// ParseKey splits a key into its host and, for a record, its name. It
// rejects anything outside the layout, so a stray key is skipped, not trusted.
func ParseKey(prefix, key string) (kind KeyKind, host, name string, err error) {
	rest, ok := strings.CutPrefix(key, prefix+hostsDir)
	if !ok {
		return 0, "", "", fmt.Errorf("%w: %q", ErrBadKey, key)
	}
	host, leaf, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, "", "", fmt.Errorf("%w: %q", ErrBadKey, key)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return 0, "", "", fmt.Errorf("%w: host %q: %v", ErrBadKey, host, err)
	}
	if leaf == "host" {
		return KindHost, host, "", nil
	}
	name, ok = strings.CutPrefix(leaf, "rec/")
	if !ok {
		return 0, "", "", fmt.Errorf("%w: %q", ErrBadKey, key)
	}
	if err := dockerwatch.ValidName(name); err != nil {
		return 0, "", "", fmt.Errorf("%w: record name: %w", ErrBadKey, err)
	}
	return KindRecord, host, name, nil
}

// EncodeRecord is the value written for r.
func EncodeRecord(r Record) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode record %s: %w", r.Name, err)
	}
	return b, nil
}

// DecodeRecord reads and validates a record written by another host: names
// as for labels, usable addresses, ports 1-65535 over tcp or udp, bounded
// sizes. The name in the value must match the one in the key.
func DecodeRecord(keyName string, b []byte) (Record, error) {
	var r Record
	if len(b) > MaxValueSize {
		return r, ErrTooLarge
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrBadJSON, err)
	}
	if err := r.Validate(); err != nil {
		return Record{}, err
	}
	if !strings.EqualFold(r.Name, keyName) {
		return Record{}, fmt.Errorf("%w: value names %q under key %q", ErrBadKey, r.Name, keyName)
	}
	return r, nil
}

// Validate checks r as DecodeRecord does; the records file uses it too.
func (r *Record) Validate() error {
	if r.Name == "" {
		return ErrNameMissing
	}
	for _, n := range []string{r.Name, r.Project, r.Service} {
		if n == "" {
			continue
		}
		if err := dockerwatch.ValidName(n); err != nil {
			return fmt.Errorf("record %q: %w", r.Name, err)
		}
	}
	if (r.Project == "") != (r.Service == "") {
		return fmt.Errorf("record %q: %w: project and service go together", r.Name, dockerwatch.ErrInvalidName)
	}
	if len(r.Addresses) == 0 || len(r.Addresses) > maxAddresses {
		return fmt.Errorf("record %q: %w: %d addresses, want 1-%d", r.Name, ErrBadAddress, len(r.Addresses), maxAddresses)
	}
	for _, a := range r.Addresses {
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" {
			return fmt.Errorf("record %q: %w: %v", r.Name, ErrBadAddress, a)
		}
	}
	if len(r.Ports) > maxPorts {
		return fmt.Errorf("record %q: %w: %d ports, want at most %d", r.Name, ErrBadPort, len(r.Ports), maxPorts)
	}
	for _, p := range r.Ports {
		if p.Port == 0 || (p.Proto != "tcp" && p.Proto != "udp") || strings.Contains(p.Name, ".") {
			return fmt.Errorf("record %q: %w: %+v", r.Name, ErrBadPort, p)
		}
		if p.Name != "" {
			if err := dockerwatch.ValidName(p.Name); err != nil {
				return fmt.Errorf("record %q: port name: %w", r.Name, err)
			}
		}
	}
	if r.TTL > 86400 {
		return fmt.Errorf("record %q: %w", r.Name, dockerwatch.ErrInvalidTTL)
	}
	if len(r.Tags) > maxTags {
		return fmt.Errorf("record %q: %w: %d tags, want at most %d", r.Name, ErrBadTag, len(r.Tags), maxTags)
	}
	for _, tag := range r.Tags {
		// One DNS label: a tag is the first label of <tag>.<service>.<project>.
		if strings.Contains(tag, ".") || dockerwatch.ValidName(tag) != nil {
			return fmt.Errorf("record %q: %w: %q", r.Name, ErrBadTag, tag)
		}
	}
	if r.Weight > resolver.MaxWeight {
		return fmt.Errorf("record %q: %w: %d", r.Name, ErrBadWeight, r.Weight)
	}
	return nil
}

// DecodeHost reads a host record written by another host.
func DecodeHost(keyHost string, b []byte) (Host, error) {
	var h Host
	if len(b) > MaxValueSize {
		return h, ErrTooLarge
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return Host{}, fmt.Errorf("%w: %v", ErrBadJSON, err)
	}
	if !h.Addr.IsValid() || h.Addr.String() != keyHost {
		return Host{}, fmt.Errorf("%w: host record for %q names %v", ErrBadAddress, keyHost, h.Addr)
	}
	return h, nil
}

// Containers turns the records of host h into resolver containers that
// answer only under the zone (Origin set), in record order. One endpoint per
// address keeps the record's address order in answers.
func Containers(h string, recs []Record) []resolver.Container {
	out := make([]resolver.Container, 0, len(recs))
	for _, r := range recs {
		c := resolver.Container{
			ID: h + "/" + r.Name, Name: r.Name, Project: r.Project, Service: r.Service,
			TTL: r.TTL, Origin: h, Weight: r.Weight, Drained: r.Drained,
		}
		for _, tag := range r.Tags {
			c.Tags = append(c.Tags, strings.ToLower(tag)) // labels' tags are lower-cased too
		}
		for _, p := range r.Ports {
			c.Ports = append(c.Ports, resolver.Port{Name: p.Name, Port: p.Port, Proto: p.Proto})
		}
		for _, a := range r.Addresses {
			ep := resolver.Endpoint{NetworkName: h}
			if a.Is4() || a.Is4In6() {
				ep.IPv4 = a.Unmap()
			} else {
				ep.IPv6 = a
			}
			c.Endpoints = append(c.Endpoints, ep)
		}
		out = append(out, c)
	}
	return out
}
