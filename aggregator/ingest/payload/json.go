package payload

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"

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
	dec := json.NewDecoder(strings.NewReader(m))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil || dec.More() {
		return nil, false
	}
	f := newFields("json.")
	flatten(f, "", obj, 0)
	return f, true
}

// flatten adds v's scalars under their paths, keys in sorted order so the
// result does not depend on the map's.
func flatten(f *fields, path string, v any, depth int) {
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
		f.add(path[:maxJSONPath], compact(v)) // too deep a name: the subtree as text, under a bounded name
		return
	}
	switch v := v.(type) {
	case map[string]any:
		if depth >= maxJSONDepth {
			f.add(path, compact(v))
			return
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if depth == 0 {
			// The keys fields and the Windows normalizer read go first,
			// so a message with many others (a host's hundred addresses)
			// does not lose them to the key cap.
			slices.SortStableFunc(keys, func(a, b string) int { return boolInt(!jsonFirst[a]) - boolInt(!jsonFirst[b]) })
		}
		for _, k := range keys {
			if len(f.keys) >= maxAttrs {
				return
			}
			if len(k) > maxKey {
				continue // not a key: no name of that size is kept
			}
			flatten(f, join(k), v[k], depth+1)
		}
	case []any:
		if depth >= maxJSONDepth {
			f.add(path, compact(v))
			return
		}
		for i, x := range v {
			if len(f.keys) >= maxAttrs {
				return
			}
			flatten(f, join(strconv.Itoa(i)), x, depth+1)
		}
	case string:
		f.add(path, v)
	case json.Number:
		f.add(path, v.String())
	case bool:
		f.add(path, strconv.FormatBool(v))
	case nil:
		// null: no value
	}
}

func compact(v any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return strings.TrimSuffix(b.String(), "\n")
}

// jsonFirst are the top-level keys flattened first.
var jsonFirst = map[string]bool{"winlog": true, "event": true, "process": true, "source": true, "destination": true, "user": true,
	"EventID": true, "Channel": true, "SourceName": true, "network": true, "file": true, "dns": true, "url": true, "http": true, "rule": true}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
