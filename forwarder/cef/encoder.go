package cef

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// Options set the CEF header identity and the device keys sent with every
// alert. Zero values get defaults.
type Options struct {
	// Vendor and Product identify the sender; the SIEM keys its parsers on
	// the pair. Defaults: "Outpost" and "Outpost".
	Vendor, Product string
	// Version is the device version, normally Outpost's release. Default "dev".
	Version string
	// DeviceExternalID names this Outpost instance (deviceExternalId).
	// Optional.
	DeviceExternalID string
	// DeviceHost is the host name sent as dvchost. Optional.
	DeviceHost string
}

const (
	defaultVendor  = "Outpost"
	defaultProduct = "Outpost"
	defaultVersion = "dev"
)

// Encoder turns alerts into CEF lines. It is immutable once built, apart
// from its truncation counter, and safe for concurrent use. Build it with
// NewEncoder; the zero value is not usable.
type Encoder struct {
	prefix      []byte // "CEF:0|vendor|product|version|", escaped
	device      []byte // "deviceExternalId=… dvchost=…", escaped; often empty
	truncations atomic.Uint64
}

// NewEncoder validates o, fills its defaults and precomputes the parts of
// every line that depend only on o. It reports every problem at once. The
// options are configuration, so they are rejected rather than truncated:
// line breaks, invalid UTF-8, a blank vendor, product or version, or a
// value longer than its CEF limit are errors.
func NewEncoder(o Options) (*Encoder, error) {
	if o.Vendor == "" {
		o.Vendor = defaultVendor
	}
	if o.Product == "" {
		o.Product = defaultProduct
	}
	if o.Version == "" {
		o.Version = defaultVersion
	}

	var errs []error
	check := func(name, v string) bool {
		switch {
		case strings.ContainsAny(v, "\r\n"):
			errs = append(errs, fmt.Errorf("%s %q: contains a line break", name, v))
		case !utf8.ValidString(v):
			errs = append(errs, fmt.Errorf("%s %q: not valid UTF-8", name, v))
		default:
			return true
		}
		return false
	}

	e := &Encoder{prefix: []byte("CEF:0|")}
	for _, h := range []struct {
		name, value string
		limit       int
	}{
		{"vendor", o.Vendor, maxVendorLen},
		{"product", o.Product, maxProductLen},
		{"version", o.Version, maxVersionLen},
	} {
		if !check(h.name, h.value) {
			continue
		}
		if trimSpace(h.value) == "" {
			errs = append(errs, fmt.Errorf("%s %q: must not be blank", h.name, h.value))
			continue
		}
		var cut bool
		if e.prefix, cut = appendHeaderField(e.prefix, h.value, h.limit); cut {
			errs = append(errs, fmt.Errorf("%s %q: longer than %d bytes once escaped", h.name, h.value, h.limit))
		}
		e.prefix = append(e.prefix, '|')
	}

	b := builder{}
	for _, d := range []struct {
		name, key, value string
		limit            int
	}{
		{"device external id", "deviceExternalId", o.DeviceExternalID, maxDeviceExternalIDLen},
		{"device host", "dvchost", o.DeviceHost, maxDeviceHostLen},
	} {
		if !check(d.name, d.value) {
			continue
		}
		b.open(d.key, d.limit)
		b.write(d.value)
		b.close()
		if b.truncations > 0 {
			errs = append(errs, fmt.Errorf("%s %q: longer than %d bytes", d.name, d.value, d.limit))
			b.truncations = 0
		}
	}
	e.device = b.dst

	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("validating CEF options: %w", err)
	}
	return e, nil
}

// Truncations reports how many header fields and extension values were cut
// to their CEF limit since the encoder was built.
func (e *Encoder) Truncations() uint64 { return e.truncations.Load() }

// SyslogSeverity maps a CEF severity to the syslog severity of the frame
// that carries it: 9-10 → 2 (critical), 7-8 → 3 (error), 4-6 → 4 (warning),
// 0-3 → 5 (notice). Out-of-range values are clamped first.
func SyslogSeverity(cefSeverity int) int {
	switch s := clampSeverity(cefSeverity); {
	case s >= 9:
		return 2
	case s >= 7:
		return 3
	case s >= 4:
		return 4
	default:
		return 5
	}
}

func clampSeverity(s int) int { return min(max(s, 0), 10) }

// Extension value limits from the CEF standard, in bytes of unescaped text.
const (
	maxExternalIDLen       = 40
	maxDeviceExternalIDLen = 255
	maxDeviceHostLen       = 100
	maxMsgLen              = 1023
	maxCustomStringLen     = 4000
	maxFlexStringLen       = 1023
)

// textFields are the alert fields copied to a CEF key as they are, in output
// order.
var textFields = [...]struct {
	field, key string
	limit      int
}{
	{"protocol", "proto", 31},
	{"user", "suser", 1023},
	{"host", "dhost", 1023},
	{"action", "act", 63},
	{"outcome", "outcome", 63},
	{"app", "app", 31},
}

// Append appends the CEF line for a to dst and returns the extended slice.
// The line has no syslog frame and no trailing newline, and contains no raw
// CR or LF, so it is safe for newline framing. It is valid UTF-8.
//
// Append is pure and deterministic: the same alert always gives the same
// bytes (map fields are written in sorted key order). Values longer than
// their CEF limit are truncated and counted in Truncations.
func (e *Encoder) Append(dst []byte, a *event.Alert) []byte {
	dst = append(dst, e.prefix...)
	var cutID, cutName bool
	dst, cutID = appendHeaderField(dst, a.RuleID, maxClassIDLen)
	dst = append(dst, '|')
	name := a.Title
	if name == "" {
		name = a.RuleID
	}
	dst, cutName = appendHeaderField(dst, name, maxNameLen)
	dst = append(dst, '|')
	dst = strconv.AppendInt(dst, int64(clampSeverity(a.Severity)), 10)
	dst = append(dst, '|')

	b := builder{dst: dst}
	if cutID {
		b.truncations++
	}
	if cutName {
		b.truncations++
	}
	e.appendExtension(&b, a)
	if b.truncations > 0 {
		e.truncations.Add(uint64(b.truncations))
	}
	return b.dst
}

func (e *Encoder) appendExtension(b *builder, a *event.Alert) {
	appendTime(b, "rt", a.LastSeen)
	appendTime(b, "start", a.FirstSeen)
	appendTime(b, "end", a.LastSeen)
	if a.Count > 0 {
		b.raw("cnt")
		b.dst = strconv.AppendInt(b.dst, int64(a.Count), 10)
	}
	b.open("externalId", maxExternalIDLen)
	b.write(a.ID)
	b.close()
	if len(e.device) > 0 {
		b.sep()
		b.dst = append(b.dst, e.device...)
		b.pairs++
	}

	fields := withOverrides(a)
	mapped := appendNetwork(b, fields)
	appendMsg(b, a)

	b.openLabelled("cs1Label", "Group Key", "cs1", maxCustomStringLen)
	b.write(a.Key)
	b.close()
	b.openLabelled("cs2Label", "Rule Kind", "cs2", maxCustomStringLen)
	b.write(a.Kind)
	b.close()
	b.openLabelled("cs3Label", "MITRE ATT&CK", "cs3", maxCustomStringLen)
	b.writeList(a.Tags)
	b.close()
	b.openLabelled("cs4Label", "Evidence Event IDs", "cs4", maxCustomStringLen)
	b.writeList(a.EventIDs)
	b.close()
	b.openLabelled("cs5Label", "Description", "cs5", maxCustomStringLen)
	b.write(a.Description)
	b.close()
	appendMapped(b, a)
	if v, ok := a.CEF["cs6"]; ok {
		b.openLabelled("cs6Label", labelFor(a, "cs6"), "cs6", maxCustomStringLen)
		b.write(v)
		b.close()
	} else {
		appendOtherFields(b, a.Fields, mapped)
	}
	b.openLabelled("flexString1Label", "Distinct Values", "flexString1", maxFlexStringLen)
	b.writeList(a.Values)
	b.close()
	if len(a.Steps) > 0 {
		b.openLabelled("flexString2Label", "Sequence Steps", "flexString2", maxFlexStringLen)
		b.writeList(stepList(a.Steps))
		b.close()
	}
}

// stepList renders a sequence's steps as name@time (UTC, seconds), in
// order; the event ids are in cs4.
func stepList(steps []event.StepHit) []string {
	out := make([]string, len(steps))
	for i, s := range steps {
		out[i] = s.Name + "@" + s.Time.UTC().Format(time.RFC3339)
	}
	return out
}

// appendTime writes t as epoch milliseconds, the one timestamp form every
// CEF parser reads without guessing a zone or a year. A zero t is omitted.
func appendTime(b *builder, key string, t time.Time) {
	if t.IsZero() {
		return
	}
	b.raw(key)
	b.dst = strconv.AppendInt(b.dst, t.UnixMilli(), 10)
}

// mappedFields records which of the alert's network fields went to a
// dedicated key; those that did not (an unparsable address or port) are
// kept in cs6 instead, so nothing the rule carried is lost.
type mappedFields struct {
	srcIP, dstIP, srcPort, dstPort bool
}

// taken reports whether field went to a dedicated key.
func (m mappedFields) taken(field string) bool {
	switch field {
	case "src_ip":
		return m.srcIP
	case "dst_ip":
		return m.dstIP
	case "src_port":
		return m.srcPort
	case "dst_port":
		return m.dstPort
	}
	return isTextField(field)
}

func isTextField(field string) bool {
	for _, f := range textFields {
		if f.field == field {
			return true
		}
	}
	return false
}

func appendNetwork(b *builder, fields map[string]string) mappedFields {
	var m mappedFields
	m.srcIP = appendAddr(b, fields["src_ip"], "src", "c6a3Label", "Source IPv6 Address", "c6a3")
	m.dstIP = appendAddr(b, fields["dst_ip"], "dst", "c6a4Label", "Destination IPv6 Address", "c6a4")
	m.srcPort = appendPort(b, "spt", fields["src_port"])
	m.dstPort = appendPort(b, "dpt", fields["dst_port"])
	for _, f := range textFields {
		b.open(f.key, f.limit)
		b.write(fields[f.field])
		b.close()
	}
	return m
}

// appendAddr writes s to key4 if it is an IPv4 address (or an IPv4-mapped
// IPv6 one), or to key6 with its label if it is another IPv6 address, in
// canonical form. CEF address types take no zone, so a zoned IPv6 address
// counts as unparsable. It reports whether s was written.
func appendAddr(b *builder, s, key4, labelKey6, label6, key6 string) bool {
	s = trimSpace(s)
	if s == "" {
		return false // absent; skipping ParseAddr saves its error allocation
	}
	addr, err := netip.ParseAddr(s)
	if err != nil || addr.Zone() != "" {
		return false
	}
	addr = addr.Unmap()
	if addr.Is4() {
		b.raw(key4)
	} else {
		b.raw(labelKey6)
		b.dst = append(b.dst, label6...)
		b.raw(key6)
	}
	b.dst = addr.AppendTo(b.dst)
	return true
}

// appendPort writes s to key if it is a decimal port number 0-65535, and
// reports whether it did.
func appendPort(b *builder, key, s string) bool {
	port, ok := parsePort(trimSpace(s))
	if !ok {
		return false
	}
	b.raw(key)
	b.dst = strconv.AppendUint(b.dst, uint64(port), 10)
	return true
}

// parsePort parses decimal digits only (no sign, no base prefix, leading
// zeros allowed) into a port number. Unlike strconv it allocates no error
// for the common absent or non-numeric field.
func parsePort(s string) (uint16, bool) {
	if s == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n = n*10 + int(c-'0'); n > 65535 {
			return 0, false
		}
	}
	return uint16(n), true
}

// appendMsg writes the human summary. A single event is described by the
// rule's description, or its title; an aggregate by what was counted, e.g.
//
//	5 events from src_ip=203.0.113.5 between 2026-11-23T10:00:00Z and 2026-11-23T10:01:30Z
//
// The summary is built only from the alert, with times in UTC, so it is as
// deterministic as the rest of the line.
func appendMsg(b *builder, a *event.Alert) {
	b.open("msg", maxMsgLen)
	defer b.close()
	if v, ok := a.CEF["msg"]; ok {
		b.write(v) // the rule mapped a field to msg
		return
	}
	if a.Count <= 1 {
		if d := trimSpace(a.Description); d != "" {
			b.write(d)
		} else {
			b.write(a.Title)
		}
		return
	}

	b.writeInt(int64(a.Count))
	b.write(" events")
	if key := trimSpace(a.Key); key != "" {
		// The key already reads field=value[;field=value].
		b.write(" from ")
		b.write(key)
	}
	first, last := a.FirstSeen, a.LastSeen
	switch {
	case first.IsZero() && last.IsZero():
	case first.IsZero() || last.IsZero() || first.Equal(last):
		if last.IsZero() {
			last = first
		}
		b.write(" at ")
		writeTime(b, last)
	default:
		b.write(" between ")
		writeTime(b, first)
		b.write(" and ")
		writeTime(b, last)
	}
}

func writeTime(b *builder, t time.Time) {
	var buf [64]byte
	b.write(string(t.UTC().AppendFormat(buf[:0], time.RFC3339)))
}

// appendOtherFields writes cs6: the alert fields no dedicated key took, as
// "k=v" pairs sorted by key and joined by "; ". Blank values are skipped like
// any empty value. The whole text is one value (its "=" are escaped), cut at
// the cs limit like any other.
func appendOtherFields(b *builder, fields map[string]string, m mappedFields) {
	var buf [32]string // the keys stay on the stack for most alerts
	keys := buf[:0]
	for k := range fields {
		if !m.taken(k) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return
	}
	slices.Sort(keys)

	b.openLabelled("cs6Label", "Fields", "cs6", maxCustomStringLen)
	n := 0
	for _, k := range keys {
		v := trimSpace(fields[k])
		if v == "" {
			continue
		}
		if n > 0 {
			b.write("; ")
		}
		b.write(k)
		b.write("=")
		b.write(v)
		n++
	}
	b.close()
}
