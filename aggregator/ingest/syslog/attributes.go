package syslog

import (
	"maps"
	"strconv"
	"strings"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// Values of Config.Attributes.
const (
	// AttributesRead keeps the attributes the loaded rules read (and the
	// schema's fields): the default.
	AttributesRead = "read"
	// AttributesAll keeps every attribute a message had.
	AttributesAll = "all"
)

// attrFilter is the attributes the running rules read. A message in a
// structured format brings tens of keys (every CEF extension, every
// Windows field); copying each into the event, encoding it on EVENTS and
// decoding it in the rule filter costs more than the rest of the event,
// for the few a rule reads. The message keeps the rest.
//
// The parse keeps, besides the rules' keys, what Outpost's own
// normalization reads (the Windows fields normalizeWindows maps to the
// schema, the audit record's keys): the event's typed and schema fields
// are the same whichever attributes the rules read.
type attrFilter struct {
	// keys is what an event keeps: the rules' keys, the schema's fields
	// and joinKeys.
	keys map[string]bool
	// win is the Windows field names the parse keeps under any prefix
	// (an SD-ID, "json.", "json.winlog.event_data."): those
	// normalizeWindows reads and those of the rules' "win.<Name>" keys.
	win map[string]bool
}

// joinKeys are the attributes the audit join (audit.go) reads after the
// parse: kept whatever the rules read.
var joinKeys = map[string]bool{"audit_serial": true, "kv.key": true}

// windowsNames are the Windows fields normalizeWindows, normalizeSysmon
// and windowsFields read (windows.go); TestReadKeepsTheNormalization
// fails if one is missing.
var windowsNames = []string{
	"Channel", "CommandLine", "Computer", "DestinationIp", "DestinationPort", "EventID", "FailureCode",
	"Hashes", "Image", "ImageLoaded", "ImagePath", "IpAddress", "IpPort", "LogonType", "MemberName",
	"MemberSid", "NewProcessId", "NewProcessName", "ParentCommandLine", "ParentImage", "ParentProcessName",
	"ProcessId", "ProcessName", "Protocol", "Provider", "ProviderName", "QueryName", "ServiceFileName",
	"ServiceName", "SourceImage", "SourceIp", "SourcePort", "SourceName", "SourceUser", "Status",
	"SubjectUserName", "TargetFilename", "TargetImage", "TargetObject", "TargetUserName", "TaskName", "User",
	"Hostname",
}

// windowsRead is windowsNames as a set: windowsFields copies these
// first.
var windowsRead = func() map[string]bool {
	m := make(map[string]bool, len(windowsNames))
	for _, n := range windowsNames {
		m[n] = true
	}
	return m
}()

// windowsJSONKeys are the Winlogbeat keys windowsFields reads.
var windowsJSONKeys = map[string]bool{
	"winlog.event_id": true, "winlog.channel": true, "winlog.provider_name": true, "winlog.computer_name": true,
}

// auditKeys are the key=value keys of an audit record normalizeAudit
// (linux.go) reads; its EXECVE arguments a0..a63 too.
var auditKeys = func() map[string]bool {
	m := map[string]bool{"type": true, "key": true, "exe": true, "pid": true, "auid": true, "success": true,
		"acct": true, "addr": true, "res": true, "id": true}
	for i := range 64 {
		m["a"+strconv.Itoa(i)] = true
	}
	return m
}()

func newAttrFilter(ruleKeys map[string]bool) *attrFilter {
	f := &attrFilter{keys: make(map[string]bool, len(ruleKeys)+len(event.Schema)+len(joinKeys)), win: maps.Clone(windowsRead)}
	maps.Copy(f.keys, ruleKeys)
	maps.Copy(f.keys, joinKeys)
	for _, k := range event.Schema {
		f.keys[k] = true
	}
	for k := range ruleKeys {
		if n, ok := strings.CutPrefix(k, winPrefix); ok {
			f.win[n] = true
		}
	}
	return f
}

// SetAttributes makes the events parsed from now on keep, of their
// attributes, only the schema's fields and keys (what the rules read,
// rules.Set.Attributes); all = true, or the ingest.syslog.attributes
// setting "all", keeps every attribute. Until it is called, every
// attribute is kept.
func (s *Source) SetAttributes(keys map[string]bool, all bool) {
	if all || s.cfg.Attributes == AttributesAll {
		s.attrs.Store(nil)
		return
	}
	s.attrs.Store(newAttrFilter(keys))
}

// keep says whether the parse keeps attribute prefix+key of a structured
// payload (payload.Keep) as an attribute, and if not, whether the
// normalization still reads it: the parse sets those aside (winFields)
// instead of storing them for prune to delete.
func (f *attrFilter) keep(prefix, key string) (attr, aside bool) {
	if f.keys[prefix+key] {
		return true, false
	}
	switch prefix {
	case "kv.":
		return auditKeys[key], false
	case "json.":
		if n, ok := strings.CutPrefix(key, "winlog.event_data."); ok {
			return false, f.win[n]
		}
		return false, f.win[key] || windowsJSONKeys[key]
	}
	return false, false
}

// keepSD is keep for the structured data parameter name of element id.
// An element named like a format prefix ("kv", "json") gives the
// attributes that format would, which the normalization reads as it does
// a payload's: keep decides them. Of any other element, the Windows
// fields the normalization reads are set aside; of an element named
// "win", they are kept for prune to delete: its win.<Name> are read
// from the attributes, as Snare's (windowsFields).
func (f *attrFilter) keepSD(id, name string) (attr, aside bool) {
	prefix := id + "."
	if path, ok := strings.CutPrefix(id, "json."); ok {
		// [json.winlog event_id=...] is json.winlog.event_id: the
		// payload's key winlog.event_id.
		prefix, name = "json.", path+"."+name
	}
	if attr, aside = f.keep(prefix, name); attr || aside {
		return attr, aside
	}
	if id == "win" {
		return f.win[name], false
	}
	return false, f.win[name] && !formatPrefixes[id]
}

// prune deletes the attributes of ev that f does not keep and returns how
// many. It keeps Outpost's own attributes (a name without a dot: the
// schema's fields, group, reason, audit_serial, parse_warning, ...)
// whatever the rules read; of the others (under a format's prefix, an
// SD-ID or win.), those in f.keys. What it deletes is what the parse kept
// for the normalization only. An emptied map is let go of, unless reuse.
func (f *attrFilter) prune(ev *event.Event, reuse bool) int {
	n := 0
	for k := range ev.Attrs {
		if strings.IndexByte(k, '.') >= 0 && !f.keys[k] { // the cheap test first: most are schema fields
			delete(ev.Attrs, k)
			n++
		}
	}
	if len(ev.Attrs) == 0 && !reuse {
		ev.Attrs = nil
	}
	return n
}
