package payload

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/valyala/fastjson"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// JSON messages (applications, Winlogbeat and Elastic Agent, NXLog's
// to_json()): an object, flattened to attribute paths json.<a>.<b>
// (array elements by index: json.tags.0), up to maxAttrs of them and
// maxJSONDepth levels deep (a deeper subtree is kept as its JSON text).
// Keys of the Elastic Common Schema, which Winlogbeat and Elastic Agent
// write, fill the event's fields.

const (
	maxJSONDepth = 16
	// maxJSONPath bounds an attribute's dotted path.
	maxJSONPath = 256
)

var jsonMapping = &mapping{
	srcIP:    []string{"source.ip", "client.ip", "src_ip", "srcip"},
	dstIP:    []string{"destination.ip", "server.ip", "dst_ip", "dstip"},
	srcPort:  []string{"source.port", "client.port", "src_port"},
	dstPort:  []string{"destination.port", "server.port", "dst_port"},
	user:     []string{"user.name", "source.user.name", "user", "username"},
	protocol: []string{"network.transport", "network.protocol", "protocol"},
	action:   []string{"event.action", "action"},
	outcome:  []string{"event.outcome", "outcome"},
	schema: map[string][]string{
		event.FieldProcess:           {"process.executable", "process.name"},
		event.FieldCommandLine:       {"process.command_line"},
		event.FieldParentProcess:     {"process.parent.executable", "process.parent.name"},
		event.FieldParentCommandLine: {"process.parent.command_line"},
		event.FieldProcessID:         {"process.pid"},
		event.FieldFilePath:          {"file.path"},
		event.FieldFileHash:          {"file.hash.sha256", "file.hash.sha1", "file.hash.md5", "process.hash.sha256"},
		event.FieldRegistryKey:       {"registry.path"},
		event.FieldTargetUser:        {"user.target.name", "destination.user.name"},
		event.FieldService:           {"service.name"},
		event.FieldDNSQuery:          {"dns.question.name"},
		event.FieldURL:               {"url.original", "url.full", "url"},
		event.FieldHTTPMethod:        {"http.request.method"},
		event.FieldHTTPStatus:        {"http.response.status_code"},
		event.FieldRuleName:          {"rule.name"},
		event.FieldBytesOut:          {"source.bytes"},
		event.FieldBytesIn:           {"destination.bytes"},
		event.FieldDeviceVendor:      {"observer.vendor"},
		event.FieldDeviceProduct:     {"observer.product"},
		event.FieldEventCode:         {"event.code"},
	},
}

func applyJSON(ev *event.Event, keep Keep) bool {
	f, ok := parseJSON(ev.Message)
	if !ok {
		return false
	}
	defer f.free()
	f.only = keep
	f.apply(ev, jsonMapping)
	return true
}

func parseJSON(m string) (*fields, bool) {
	m = strings.TrimSpace(m)
	if !strings.HasPrefix(m, "{") {
		return nil, false
	}
	p := jsonParsers.Get()
	defer jsonParsers.Put(p)
	// fastjson reads the whole text as one value (anything after it is an
	// error) without building maps of interfaces: a fifth of what
	// encoding/json cost here. What it returns lives in p until the next
	// parse; flatten copies every string it keeps.
	v, err := p.Parse(m)
	if err != nil || v.Type() != fastjson.TypeObject {
		return nil, false
	}
	f := newFields("json.")
	flatten(f, "", v, 0)
	return f, true
}

// jsonParsers recycles fastjson's parsers (each keeps its buffers).
var jsonParsers fastjson.ParserPool

// member is one key of a JSON object and its value.
type member struct {
	key string
	val *fastjson.Value
}

// sortedMembers appends the members of object v to buf in key order, those
// first says ahead (nil: none), a key written twice once with its last
// value, and keys longer than maxLen left out (-1: none).
func sortedMembers(v *fastjson.Value, buf []member, maxLen int, first func(string) bool) []member {
	o, _ := v.Object()
	o.Visit(func(k []byte, x *fastjson.Value) {
		if maxLen < 0 || len(k) <= maxLen {
			buf = append(buf, member{string(k), x})
		}
	})
	rank := func(k string) int {
		if first != nil && first(k) {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(buf, func(a, b member) int {
		if c := rank(a.key) - rank(b.key); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
	// The sort is stable: of a key written twice, the last is last.
	out := buf[:0]
	for i, m := range buf {
		if i+1 < len(buf) && buf[i+1].key == m.key {
			continue
		}
		out = append(out, m)
	}
	return out
}

// flatten adds v's scalars under their paths, keys in sorted order so the
// result does not depend on the order the sender wrote them in (a key
// written twice counts once, with its last value).
func flatten(f *fields, path string, v *fastjson.Value, depth int) {
	if len(f.keys) >= maxAttrs {
		return
	}
	join := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	if len(path) > maxJSONPath {
		n := maxJSONPath
		for n > 0 && !utf8.RuneStart(path[n]) {
			n-- // cut between characters: names are UTF-8
		}
		f.add(path[:n], compact(v)) // too deep a name: the subtree as text, under a bounded name
		return
	}
	switch v.Type() {
	case fastjson.TypeObject:
		if depth >= maxJSONDepth {
			f.add(path, compact(v))
			return
		}
		// The keys fields and the Windows normalizer read go first, so a
		// message with many others (a host's hundred addresses) does not
		// lose them to the key cap. A longer key than maxKey is not a key:
		// no name of that size is kept.
		var buf [16]member
		members := sortedMembers(v, buf[:0], maxKey, func(k string) bool { return depth == 0 && jsonFirst[k] })
		for _, m := range members {
			if len(f.keys) >= maxAttrs {
				return
			}
			flatten(f, join(m.key), m.val, depth+1)
		}
	case fastjson.TypeArray:
		if depth >= maxJSONDepth {
			f.add(path, compact(v))
			return
		}
		a, _ := v.Array()
		for i, x := range a {
			if len(f.keys) >= maxAttrs {
				return
			}
			flatten(f, join(strconv.Itoa(i)), x, depth+1)
		}
	case fastjson.TypeString:
		f.add(path, string(v.GetStringBytes()))
	case fastjson.TypeNumber:
		f.add(path, string(v.MarshalTo(nil))) // as written: 1.5e3 stays 1.5e3
	case fastjson.TypeTrue:
		f.add(path, "true")
	case fastjson.TypeFalse:
		f.add(path, "false")
	case fastjson.TypeNull:
		// null: no value
	}
}

// compact is v as JSON text, without insignificant spaces, as
// encoding/json wrote the value it read: an object's keys sorted, a
// repeated key once with its last value, strings read and written again
// (fastjson's MarshalTo gives back the sender's text).
func compact(v *fastjson.Value) string {
	return string(appendCompact(nil, v))
}

func appendCompact(b []byte, v *fastjson.Value) []byte {
	switch v.Type() {
	case fastjson.TypeObject:
		b = append(b, '{')
		for _, m := range sortedMembers(v, nil, -1, nil) {
			if b[len(b)-1] != '{' {
				b = append(b, ',')
			}
			b = appendJSONString(b, m.key)
			b = append(b, ':')
			b = appendCompact(b, m.val)
		}
		return append(b, '}')
	case fastjson.TypeArray:
		a, _ := v.Array()
		b = append(b, '[')
		for i, x := range a {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendCompact(b, x)
		}
		return append(b, ']')
	case fastjson.TypeString:
		return appendJSONString(b, string(v.GetStringBytes()))
	}
	return v.MarshalTo(b) // numbers as written, true, false, null
}

// appendJSONString appends s as a JSON string, escaped as encoding/json
// escapes it without HTML escaping (the way the subtree's text was written
// before fastjson; a subtree past the bounds is rare, so it need not be
// fast).
func appendJSONString(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

// jsonFirst are the top-level keys flattened first.
var jsonFirst = map[string]bool{"winlog": true, "event": true, "process": true, "source": true, "destination": true, "user": true,
	"EventID": true, "Channel": true, "SourceName": true, "network": true, "file": true, "dns": true, "url": true, "http": true, "rule": true}
