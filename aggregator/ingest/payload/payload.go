// Package payload reads the structured formats appliances and agents put
// in a syslog message's text: CEF, LEEF 1.0 and 2.0, key=value, and JSON.
// Each is a small parser beside the others; Detect picks one per message by
// its first bytes, Apply fills the event's fields from it.
//
// What a parser reads goes to the event: the keys it knows to the typed
// fields and the extended schema (src → src_ip, duser → target_user,
// docs/fields.md), every other key as an attribute under the format's
// prefix ("cef.cs1", "leef.cat", "kv.devname", "json.process.name"), so a
// rule can reach what Outpost does not map. The message itself is kept.
// Input is the sender's: every parser takes any bytes without panicking,
// bounds what it keeps (maxAttrs keys, maxValue bytes a value), and a
// message it cannot read stays an event with its raw text.
package payload

import (
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// Format names, for metrics and docs.
const (
	FormatCEF  = "cef"
	FormatLEEF = "leef"
	FormatKV   = "kv"
	FormatJSON = "json"
)

// Formats lists the formats, for metric labels.
var Formats = []string{FormatCEF, FormatLEEF, FormatKV, FormatJSON}

const (
	// maxAttrs bounds the attributes one message adds.
	maxAttrs = 128
	// maxValue caps one value (longer ones are cut).
	maxValue = 4096
	// maxKey bounds a key's length: longer is not a key.
	maxKey = 64
)

// Detect returns the format ev's message is in, "" for none. A message
// of the CEF or LEEF format whose syslog header took "CEF"/"LEEF" for the
// TAG (`host CEF:0|...`) counts too.
func Detect(ev *event.Event) string {
	m := ev.Message
	switch {
	case strings.HasPrefix(m, "CEF:"), (ev.App == "CEF" && isVersionStart(m)):
		return FormatCEF
	case strings.HasPrefix(m, "LEEF:"), (ev.App == "LEEF" && isVersionStart(m)):
		return FormatLEEF
	case len(m) > 1 && m[0] == '{':
		return FormatJSON
	case looksKV(m):
		return FormatKV
	}
	return ""
}

func isVersionStart(m string) bool { return m != "" && m[0] >= '0' && m[0] <= '9' }

// Keep says whether the attribute prefix+key (prefix "cef.", "kv.", ...),
// of value value, is wanted. The keys a parser maps to fields fill those
// fields whatever it says; it decides only which of the rest become
// attributes. It may keep what it is shown and not wanted elsewhere: the
// strings are the caller's.
type Keep func(prefix, key, value string) bool

// Apply parses ev's message in format f and fills ev. It reports whether
// the message was in that format; when it was not, ev is unchanged. keep,
// when not nil, says which unmapped keys are kept as attributes; nil keeps
// them all.
func Apply(f string, ev *event.Event, keep Keep) bool {
	switch f {
	case FormatCEF:
		return applyCEF(ev, keep)
	case FormatLEEF:
		return applyLEEF(ev, keep)
	case FormatKV:
		return applyKV(ev, keep)
	case FormatJSON:
		return applyJSON(ev, keep)
	}
	return false
}

// fields collects what a parser read before it is applied: parsing first
// and applying only on success leaves a bad message's event unchanged.
type fields struct {
	prefix string
	keys   []string
	vals   []string
	only   Keep // Apply's keep
	// targets[i] is what keys[i] may fill (mapping.byKey), for apply.
	targets [][]target
	// header: the first keys are a CEF or LEEF header, whose vendor,
	// product and event id (1, 2, 4) fill fields and are not kept raw.
	header bool
}

// fieldsPool recycles fields: a message's keys and values are substrings
// of it, copied into the event by apply, so the slices serve the next one.
var fieldsPool = sync.Pool{New: func() any {
	return &fields{keys: make([]string, 0, 32), vals: make([]string, 0, 32)}
}}

func newFields(prefix string) *fields {
	f := fieldsPool.Get().(*fields)
	f.prefix = prefix
	return f
}

// free returns f to the pool; f is not used after.
func (f *fields) free() {
	if f == nil || cap(f.keys) > 4*maxAttrs {
		return
	}
	clear(f.keys) // the strings point into a message: not kept alive here
	clear(f.vals)
	f.targets = f.targets[:0]
	f.keys, f.vals, f.only, f.header = f.keys[:0], f.vals[:0], nil, false
	fieldsPool.Put(f)
}

func (f *fields) add(k, v string) {
	if len(f.keys) >= maxAttrs {
		return
	}
	f.keys, f.vals = append(f.keys, k), append(f.vals, v)
}

// get returns the value of key k (the last one, as a repeated key
// overrides), and whether there is one.
func (f *fields) get(k string) (string, bool) {
	for i := len(f.keys) - 1; i >= 0; i-- {
		if f.keys[i] == k {
			return f.vals[i], true
		}
	}
	return "", false
}

// first returns the value of the first of keys that has a non-empty one.
func (f *fields) first(keys ...string) string {
	for _, k := range keys {
		if v, _ := f.get(k); v != "" {
			return v
		}
	}
	return ""
}

// tagged is ev's message as a CEF or LEEF parser reads it: with its
// "CEF:"/"LEEF:" put back when the syslog header took it for the TAG.
func tagged(ev *event.Event, tag string) string {
	if ev.App == tag && !strings.HasPrefix(ev.Message, tag+":") {
		return tag + ":" + ev.Message
	}
	return ev.Message
}

// fromHeader sets the appliance's fields from a CEF or LEEF header (f's
// first values: version, vendor, product, version, event id), which an
// extension key of the same name cannot replace (apply kept no raw copy
// of them: f.header), and names the app after the product when the syslog header named none
// (or took the format's name for it).
func fromHeader(ev *event.Event, f *fields, tag string) {
	ev.Set(event.FieldDeviceVendor, clip(f.vals[1]))
	ev.Set(event.FieldDeviceProduct, clip(f.vals[2]))
	ev.Set(event.FieldEventCode, clip(f.vals[4]))
	if ev.App == "" || ev.App == tag {
		ev.App = clip(f.vals[2])
	}
}

// clip cuts s to maxValue bytes, not inside a character.
func clip(s string) string {
	if len(s) <= maxValue {
		return s
	}
	n := maxValue
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// mapping says which format keys fill which event field, in order of
// preference.
type mapping struct {
	srcIP, dstIP, srcPort, dstPort, user, protocol, action, outcome []string
	schema                                                          map[string][]string // schema field -> keys

	once     sync.Once
	byKey    map[string][]target // compiled: format key -> the fields it may fill
	prefixed map[string]string   // key -> prefix+key, for the keys above
}

// The typed fields a mapping fills; schema fields follow, by their index
// in event.Schema.
const (
	tSrcIP = iota
	tDstIP
	tSrcPort
	tDstPort
	tUser
	tProtocol
	tAction
	tOutcome
	tSchema
)

type target struct{ field, prio int }

func (m *mapping) compile(prefix string) {
	m.byKey, m.prefixed = map[string][]target{}, map[string]string{}
	add := func(field int, keys []string) {
		for prio, k := range keys {
			m.byKey[k] = append(m.byKey[k], target{field, prio})
			m.prefixed[k] = prefix + k
		}
	}
	for field, keys := range [][]string{m.srcIP, m.dstIP, m.srcPort, m.dstPort, m.user, m.protocol, m.action, m.outcome} {
		add(field, keys)
	}
	for i, name := range event.Schema {
		add(tSchema+i, m.schema[name])
	}
}

// apply fills ev's typed and schema fields by m: for each field, the value
// of the first of its keys (in m's order) that has a non-empty one. A
// field the message does not fill keeps what it had (the syslog header's).
// Every key no field took is kept as an attribute under the format's
// prefix; a key a field took is kept there too only if its value was not
// usable (an address that is not one, a port out of range).
func (f *fields) apply(ev *event.Event, m *mapping) {
	m.once.Do(func() { m.compile(f.prefix) })
	if ev.Attrs == nil {
		n := len(f.keys) + 8
		if f.only != nil { // most keys will not be kept
			n = 8
		}
		ev.Attrs = make(map[string]string, n)
	}
	var best, from [tSchema + 32]int // prio+1 of the value chosen (0: none), and its key's index
	var vals [tSchema + 32]string
	f.targets = f.targets[:0]
	for i, k := range f.keys {
		v := f.vals[i]
		targets := m.byKey[k]
		f.targets = append(f.targets, targets)
		if len(targets) == 0 || v == "" {
			f.keep(ev, m, i)
			continue
		}
		for _, t := range targets {
			// Among the same key repeated, the last wins.
			if best[t.field] == 0 || t.prio+1 <= best[t.field] {
				best[t.field], vals[t.field], from[t.field] = t.prio+1, clip(v), i
			}
		}
	}
	// A mapped key no field took (another key of higher preference did,
	// src over sourceTranslatedAddress) is kept raw.
	for i, targets := range f.targets {
		if len(targets) == 0 || f.vals[i] == "" {
			continue
		}
		taken := false
		for _, t := range targets {
			taken = taken || from[t.field] == i && best[t.field] != 0
		}
		if !taken {
			f.keep(ev, m, i)
		}
	}
	used := func(field int, ok bool) {
		if best[field] != 0 && !ok {
			f.keep(ev, m, from[field]) // not usable: keep it raw
		}
	}
	ip := cleanIP(vals[tSrcIP])
	used(tSrcIP, ip != "")
	if ip != "" {
		ev.SrcIP = ip
	}
	ip = cleanIP(vals[tDstIP])
	used(tDstIP, ip != "")
	if ip != "" {
		ev.DstIP = ip
	}
	p := port(vals[tSrcPort])
	used(tSrcPort, p != 0)
	if p != 0 {
		ev.SrcPort = p
	}
	p = port(vals[tDstPort])
	used(tDstPort, p != 0)
	if p != 0 {
		ev.DstPort = p
	}
	if u := vals[tUser]; u != "" {
		ev.User = u
	}
	if p := vals[tProtocol]; p != "" {
		ev.Protocol = protocolName(p)
	}
	if a := vals[tAction]; a != "" {
		ev.Action = strings.ToLower(a)
	}
	o := outcomeOf(vals[tOutcome])
	used(tOutcome, o != "")
	if o != "" {
		ev.Outcome = o
	}
	for i, name := range event.Schema {
		if v := vals[tSchema+i]; v != "" {
			ev.Attrs[name] = v
		}
	}
}

// keep stores key i under the format's prefix.
func (f *fields) keep(ev *event.Event, m *mapping, i int) {
	if f.header && (i == 1 || i == 2 || i == 4) {
		return
	}
	k, v := f.keys[i], clip(f.vals[i])
	if f.only != nil && !f.only(f.prefix, k, v) {
		return
	}
	name, ok := m.prefixed[k]
	if !ok {
		name = f.prefix + k
	}
	ev.Attrs[name] = v
}

// cleanIP returns s as a normalized address, "" if it is not one.
func cleanIP(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return ""
	}
	if a.Is4() {
		return s // ParseAddr takes IPv4 only in its canonical form: no copy needed
	}
	return a.Unmap().WithZone("").String()
}

// port reads a port number, 0 if s is not one.
func port(s string) int {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > 65535 {
		return 0
	}
	return n
}

// protocolName lowercases a protocol name and names the common IANA
// numbers (6 tcp, 17 udp, 1 icmp).
func protocolName(p string) string {
	switch p = strings.ToLower(strings.TrimSpace(p)); p {
	case "6":
		return "tcp"
	case "17":
		return "udp"
	case "1":
		return "icmp"
	case "58":
		return "ipv6-icmp"
	}
	return clip(p)
}

// outcomeOf maps the words appliances use to Event.Outcome.
func outcomeOf(s string) string {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "success", "succeeded", "successful", "ok", "allow", "allowed", "accept", "accepted", "permit", "permitted", "pass", "passed":
		return "success"
	case "failure", "failed", "fail", "error", "deny", "denied", "drop", "dropped", "block", "blocked", "reject", "rejected", "reset":
		return "failure"
	}
	return ""
}

// isKeyByte reports whether c may be part of a key: letters, digits, '_',
// '.', '-' (CEF, LEEF and appliances' key=value keys).
func isKeyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
}
