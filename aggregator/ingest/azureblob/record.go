package azureblob

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// recordPrefix starts the attributes filled from the original record on
// demand: rules.RecordPrefix (this package does not import rules).
const recordPrefix = "rec."

// maxRecordArrays bounds the arrays one path descends through (arrays of
// arrays of ... are not what Azure writes, and each level is decoded).
const maxRecordArrays = 4

// maxRecordValue caps one value copied from a record (longer ones are cut).
const maxRecordValue = 4096

// RecordFields are the record paths the running rules read beyond what
// the parsers normalize, per event source (rules.Set.RecordFields). The
// parsers keep a fixed set of fields; a rule that names any other field of
// an Azure record (a Sigma rule written against the export's or Log
// Analytics' names) gets attrs["rec.<path>"], filled only for the paths
// some rule reads, so the rest of the record is not copied into every
// event.
//
// A path is matched without regard to case, segment by segment, at the
// record's top level and, when it is not found there, under `properties`
// (where the storage export keeps what Log Analytics shows as columns:
// ResultType is the record's resultType, AuthenticationRequirement its
// properties.authenticationRequirement). A value is its JSON text when it
// is not a string (numbers as written, objects and arrays compact); JSON
// null and a missing path leave the attribute unset. A segment met by an
// array applies to every element, and the values found are joined by
// newlines.
type RecordFields struct {
	bySource map[string][]recordPath
	any      []recordPath // paths every source fills
}

type recordPath struct {
	attr     string   // "rec." + the path, lowercased
	segments []string // the path's dotted segments
}

// NewRecordFields builds the lookup from paths per source; the source ""
// holds the paths every source fills. Paths are lowercased.
func NewRecordFields(bySource map[string][]string) *RecordFields {
	rf := &RecordFields{bySource: map[string][]recordPath{}}
	for source, paths := range bySource {
		list := make([]recordPath, 0, len(paths))
		for _, p := range paths {
			p = strings.ToLower(p)
			if p == "" {
				continue
			}
			list = append(list, recordPath{attr: recordPrefix + p, segments: strings.Split(p, ".")})
		}
		if source == "" {
			rf.any = list
		} else {
			rf.bySource[source] = list
		}
	}
	return rf
}

// Fill sets, on each of evs (the events parsed from rec), the attributes
// of the paths their source asks for. Only the objects on the way to a
// demanded path are decoded, once per record.
func (rf *RecordFields) Fill(rec []byte, evs []*event.Event) {
	if rf == nil || len(rf.any) == 0 && len(rf.bySource) == 0 {
		return
	}
	var doc *jsonNode
	// Each path is looked up once per record: a flow-log record gives an
	// event per tuple, all with the same record.
	found := map[string]*string{}
	for _, ev := range evs {
		paths := rf.bySource[ev.Source]
		if len(paths) == 0 && len(rf.any) == 0 {
			continue
		}
		if doc == nil {
			doc = &jsonNode{raw: rec}
		}
		if ev.Attrs == nil {
			ev.Attrs = map[string]string{}
		}
		for _, list := range [][]recordPath{paths, rf.any} {
			for _, p := range list {
				v, seen := found[p.attr]
				if !seen {
					if s, ok := doc.lookup(p.segments); ok {
						s = clipUTF8(redactSAS(s), maxRecordValue)
						v = &s
					}
					found[p.attr] = v
				}
				if v != nil {
					ev.Attrs[p.attr] = *v
				}
			}
		}
	}
}

// clipUTF8 cuts s to at most n bytes, not inside a character.
func clipUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// jsonNode is one JSON value of a record, its object members decoded on
// first use.
type jsonNode struct {
	raw     json.RawMessage
	decoded bool
	members map[string]*jsonNode // nil if the value is not an object
	elems   []*jsonNode          // the array's elements, once decoded
	isArray *bool
}

// lookup finds segs from n, the record, and under its properties if not
// at the top level.
func (n *jsonNode) lookup(segs []string) (string, bool) {
	if v, ok := n.values(segs); ok {
		return v, true
	}
	if segs[0] == "properties" {
		return "", false
	}
	if props := n.member("properties"); props != nil {
		return props.values(segs)
	}
	return "", false
}

// values is the text of what segs reach from n. A segment met by an array
// applies to each of its elements (TargetResources.ModifiedProperties.
// NewValue reaches every new value of every target): the values found are
// joined by newlines, in record order.
func (n *jsonNode) values(segs []string) (string, bool) {
	var b strings.Builder
	found := 0
	var walk func(n *jsonNode, segs []string, arrays int)
	walk = func(n *jsonNode, segs []string, arrays int) {
		if b.Len() > maxRecordValue || arrays > maxRecordArrays {
			return
		}
		if len(segs) == 0 {
			if t, ok := n.text(); ok {
				if found > 0 {
					b.WriteByte('\n')
				}
				b.WriteString(t)
				found++
			}
			return
		}
		if elems := n.elements(); elems != nil {
			for _, e := range elems {
				walk(e, segs, arrays+1)
			}
			return
		}
		if m := n.member(segs[0]); m != nil {
			walk(m, segs[1:], arrays)
		}
	}
	walk(n, segs, 0)
	return b.String(), found > 0
}

// elements returns the elements of n if it is an array, else nil.
func (n *jsonNode) elements() []*jsonNode {
	if n.isArray != nil {
		return n.elems
	}
	no := false
	n.isArray = &no
	raw := bytes.TrimSpace(n.raw)
	if len(raw) == 0 || raw[0] != '[' {
		return nil
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		return nil
	}
	n.elems = make([]*jsonNode, len(list))
	for i, r := range list {
		n.elems[i] = &jsonNode{raw: r}
	}
	return n.elems
}

// member returns the value of key in n, matched without regard to case
// (an exact match first); nil if n is not an object or lacks it. An
// object sent as a JSON string (Activity Log records sometimes carry
// properties that way) counts as the object.
func (n *jsonNode) member(key string) *jsonNode {
	if !n.decoded {
		n.decoded = true
		raw := bytes.TrimSpace(n.raw)
		if len(raw) > 0 && raw[0] == '"' {
			var s string
			if json.Unmarshal(raw, &s) == nil {
				raw = bytes.TrimSpace([]byte(s))
			}
		}
		if len(raw) > 0 && raw[0] == '{' {
			var m map[string]json.RawMessage
			if json.Unmarshal(raw, &m) == nil {
				n.members = make(map[string]*jsonNode, len(m))
				for k, v := range m {
					n.members[k] = &jsonNode{raw: v}
				}
			}
		}
	}
	if v, ok := n.members[key]; ok {
		return v
	}
	// Without regard to case: of several spellings (ResultType and
	// resultType), the first by byte order, the same every time.
	var best string
	var found *jsonNode
	for k, v := range n.members {
		if strings.EqualFold(k, key) && (found == nil || k < best) {
			best, found = k, v
		}
	}
	return found
}

// text is the value as an attribute: a string's text, else its JSON
// (numbers as written, objects and arrays compacted); null is no value.
func (n *jsonNode) text() (string, bool) {
	raw := bytes.TrimSpace(n.raw)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return "", false
	case raw[0] == '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return s, true
	case raw[0] == '{' || raw[0] == '[':
		var b bytes.Buffer
		if json.Compact(&b, raw) != nil {
			return "", false
		}
		return b.String(), true
	}
	return string(raw), true
}
