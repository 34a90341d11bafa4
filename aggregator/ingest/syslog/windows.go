package syslog

import (
	"slices"
	"strconv"
	"strings"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// Windows events arriving as syslog, in the shapes agents send them:
//
//   - NXLog's to_syslog_ietf(): RFC 5424 with the event's fields as
//     structured data, [NXLOG@14506 EventID="4688" NewProcessName="..."]
//     (any SD-ID: the one that holds EventID);
//   - NXLog's to_json(): a JSON message with the fields at its top level
//     (EventID, Channel, SourceName, TargetUserName, ...);
//   - Winlogbeat / Elastic Agent: JSON with winlog.event_id,
//     winlog.channel, winlog.provider_name and winlog.event_data.<Name>.
//
// Whatever the shape, the event's own fields are copied to
// attrs["win.<Name>"] under the names Windows gives them (EventID,
// Channel, Provider, TargetUserName, CommandLine, Image, ...: what Sigma's
// Windows rules name), and the known events fill the schema (docs/fields.md).

// winPrefix starts the attributes that hold a Windows event's own fields.
const winPrefix = "win."

// formatPrefixes are the attribute prefixes that are not SD-IDs.
var formatPrefixes = map[string]bool{"cef": true, "leef": true, "kv": true, "json": true, "win": true, "rec": true}

// maxWinFields bounds the fields copied from one event.
const maxWinFields = 96

// winFields is a Windows event's own fields by their names (EventID,
// TargetUserName, ...), as windowsFields found them: what the
// normalization reads, looked up without building "win."+name or
// prefix+name each time. A Parser keeps one and reuses it.
type winFields struct {
	m     map[string]string
	found []winField // windowsFields' scratch
	// aside holds the attributes the parse left out of the event
	// because only the normalization reads them (structured data in
	// parse5424, a payload's keys in Parser.keep): they are looked at
	// here, never stored.
	aside []asideAttr
}

type winField struct{ name, value string }

// asideAttr is an attribute set aside: a structured data parameter (id,
// name) or a payload's key (id is the format's prefix without its dot).
type asideAttr struct{ id, name, value string }

// cut returns what follows prefix in the attribute's key, id.name.
func (p asideAttr) cut(prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(prefix, p.id)
	if !ok || rest == "" || rest[0] != '.' {
		return "", false
	}
	return strings.CutPrefix(p.name, rest[1:])
}

// attr is ev's attribute key, or the value set aside under that key.
func (fields *winFields) attr(ev *event.Event, key string) string {
	if v, ok := ev.Attrs[key]; ok {
		return v
	}
	for i := len(fields.aside) - 1; i >= 0; i-- { // the last of a key repeated
		p := fields.aside[i]
		if len(key) == len(p.id)+1+len(p.name) && key[len(p.id)] == '.' && strings.HasPrefix(key, p.id) && strings.HasSuffix(key, p.name) {
			return p.value
		}
	}
	return ""
}

// maxKeptWinScratch bounds the scratch (winFields.aside, .found) kept for
// the next message: one message with thousands of parameters is not
// kept in memory by its parser.
const maxKeptWinScratch = 4 * maxWinFields

// reset forgets the message before.
func (fields *winFields) reset() {
	if cap(fields.aside) > maxKeptWinScratch {
		fields.aside = nil
		return
	}
	clear(fields.aside)
	fields.aside = fields.aside[:0]
}

// get is the field's value, "" if the event has none.
func (w *winFields) get(name string) string { return w.m[name] }

// windowsFields finds a Windows event in ev (its attributes and those set
// aside in fields), copies its fields to attrs["win.<Name>"] and puts them
// in fields by name. It reports whether there is one. keep, when not nil,
// limits the copies to the win.<Name> the rules read: the normalization
// reads the others in fields.
func windowsFields(ev *event.Event, keep *attrFilter, fields *winFields) bool {
	if len(ev.Attrs) == 0 && len(fields.aside) == 0 {
		return false
	}
	if ev.Attrs == nil {
		ev.Attrs = make(map[string]string)
	}
	if fields.m = event.ReuseAttrs(fields.m); fields.m == nil {
		fields.m = make(map[string]string)
	}
	w, found := fields.get, fields.found[:0]
	attr := func(key string) string { return fields.attr(ev, key) }
	// setWin sets field name to v, in the event and in w.
	setWin := func(name, v string) {
		ev.Attrs[winPrefix+name] = v
		fields.m[name] = v
	}
	setWinIf := func(name, v string) {
		if v != "" {
			setWin(name, v)
		}
	}
	copyPrefix := func(prefix string) {
		shadowed := false
		for k, v := range ev.Attrs {
			if name, ok := strings.CutPrefix(k, prefix); ok && name != "" && !strings.Contains(name, ".") {
				found = append(found, winField{name, v})
			} else if strings.HasPrefix(k, winPrefix) {
				shadowed = true
			}
		}
		for _, p := range fields.aside {
			if name, ok := p.cut(prefix); ok && name != "" && !strings.Contains(name, ".") {
				found = append(found, winField{name, p.value})
			}
		}
		// Past maxWinFields, the fields the normalization reads, then
		// the others in name order: the same message keeps the same
		// fields whatever the map's order, no number of other fields
		// pushes out those the schema is filled from, and those are
		// the same whichever attributes the parse kept (attributes.go).
		// A name set aside more than once (the SD and the payload both
		// give it) is one field, its last value, as in the attributes:
		// the stable sort keeps a name's values in order, and only the
		// last is counted and used.
		use := found
		if len(use) > maxWinFields {
			slices.SortStableFunc(use, func(a, b winField) int {
				if ra, rb := windowsRead[a.name], windowsRead[b.name]; ra != rb {
					if ra {
						return -1
					}
					return 1
				}
				return strings.Compare(a.name, b.name)
			})
			n := 0
			for i, f := range use {
				if i+1 == len(use) || use[i+1].name != f.name {
					use[n] = f
					n++
				}
			}
			use = use[:min(n, maxWinFields)]
		}
		for _, f := range use {
			fields.m[f.name] = f.value
			if keep == nil || keep.keys[winPrefix+f.name] {
				ev.Attrs[winPrefix+f.name] = f.value
			} else if shadowed {
				// Not copied: a win.<Name> already there (an SD
				// element named "win") must not pass for the field.
				delete(ev.Attrs, winPrefix+f.name)
			}
		}
	}
	switch {
	case ev.Attrs[winPrefix+"EventID"] != "":
		// Read already (Snare, snare.go).
		for k, v := range ev.Attrs {
			if name, ok := strings.CutPrefix(k, winPrefix); ok {
				fields.m[name] = v
			}
		}
	case attr("json.winlog.event_id") != "":
		copyPrefix("json.winlog.event_data.")
		setWin("EventID", attr("json.winlog.event_id"))
		setWinIf("Channel", attr("json.winlog.channel"))
		setWinIf("Provider", attr("json.winlog.provider_name"))
		setWinIf("Computer", attr("json.winlog.computer_name"))
	case attr("json.EventID") != "":
		copyPrefix("json.")
		setWinIf("Provider", firstOf(attr("json.SourceName"), attr("json.ProviderName")))
		setWinIf("Computer", attr("json.Hostname"))
	default:
		// The SD element holding EventID: NXLog's if there, else the
		// first by name (the same one every time).
		sdid := ""
		pick := func(id string) {
			if id != "" && !strings.Contains(id, ".") && !formatPrefixes[id] &&
				(id == "NXLOG@14506" || sdid == "" || sdid != "NXLOG@14506" && id < sdid) {
				sdid = id
			}
		}
		for k := range ev.Attrs {
			if id, ok := strings.CutSuffix(k, ".EventID"); ok {
				pick(id)
			}
		}
		for _, p := range fields.aside {
			if p.name == "EventID" {
				pick(p.id)
			}
		}
		if sdid == "" {
			return false
		}
		copyPrefix(sdid + ".")
		if w("Provider") == "" {
			// NXLog puts the provider in APP-NAME.
			setWinIf("Provider", firstOf(w("SourceName"), w("ProviderName"), ev.App))
		}
	}
	if w("Channel") == "" && strings.EqualFold(w("Provider"), "Microsoft-Windows-Sysmon") {
		setWin("Channel", "Microsoft-Windows-Sysmon/Operational")
	}
	clear(found) // the strings are the event's: not kept alive here
	fields.found = found[:0]
	if cap(found) > maxKeptWinScratch {
		fields.found = nil
	}
	return true
}

func setIf(ev *event.Event, k, v string) {
	if v != "" {
		ev.Attrs[k] = v
	}
}

func firstOf(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// normalizeWindows fills ev's fields from the Windows event whose fields
// windowsFields copied: event_code and channel always, and per event id
// what it says. It reports whether ev is a Windows event.
func normalizeWindows(ev *event.Event, keep *attrFilter, fields *winFields) bool {
	if !windowsFields(ev, keep, fields) {
		return false
	}
	w := fields.get
	id := w("EventID")
	ev.Set(event.FieldEventCode, id)
	ev.Set(event.FieldChannel, w("Channel"))
	if ev.Host == "" {
		ev.Host = w("Computer")
	}
	sysmon := strings.EqualFold(w("Provider"), "Microsoft-Windows-Sysmon") || strings.HasPrefix(w("Channel"), "Microsoft-Windows-Sysmon")
	if sysmon {
		normalizeSysmon(ev, id, w)
		return true
	}
	set := func(category, action string) { ev.Category, ev.Action = category, action }
	subject := func() { setUser(ev, w("SubjectUserName")) }
	target := func() { ev.Set(event.FieldTargetUser, clean(w("TargetUserName"))) }
	switch id {
	case "4624", "4625":
		set("authentication", "logon")
		ev.Outcome = map[string]string{"4624": "success", "4625": "failure"}[id]
		setUser(ev, w("TargetUserName"))
		ev.SrcIP, ev.SrcPort = parseIP(w("IpAddress")), parsePort(w("IpPort"))
		ev.Set(event.FieldLogonType, w("LogonType"))
		ev.Set(event.FieldProcess, clean(w("ProcessName")))
	case "4634", "4647":
		set("authentication", "logoff")
		setUser(ev, w("TargetUserName"))
		ev.Set(event.FieldLogonType, w("LogonType"))
	case "4648":
		set("authentication", "explicit_credentials")
		subject()
		target()
		ev.SrcIP, ev.SrcPort = parseIP(w("IpAddress")), parsePort(w("IpPort"))
		ev.Set(event.FieldProcess, clean(w("ProcessName")))
	case "4672":
		set("authentication", "special_privileges")
		subject()
	case "4688":
		set("process", "process_created")
		subject()
		ev.Set(event.FieldProcess, w("NewProcessName"))
		ev.Set(event.FieldCommandLine, w("CommandLine"))
		ev.Set(event.FieldParentProcess, w("ParentProcessName"))
		ev.Set(event.FieldProcessID, hexOrDecimal(w("NewProcessId")))
		// The names Sigma's process_creation rules use, as for Sysmon 1.
		setIf(ev, winPrefix+"Image", w("NewProcessName"))
		setIf(ev, winPrefix+"ParentImage", w("ParentProcessName"))
	case "4697", "7045":
		set("configuration", "service_installed")
		subject()
		ev.Set(event.FieldService, w("ServiceName"))
		ev.Set(event.FieldFilePath, firstOf(w("ServiceFileName"), w("ImagePath")))
	case "4698", "4702":
		set("configuration", map[string]string{"4698": "scheduled_task_created", "4702": "scheduled_task_updated"}[id])
		subject()
		ev.Set(event.FieldService, w("TaskName"))
	case "4719":
		set("configuration", "audit_policy_changed")
		subject()
	case "1102":
		set("configuration", "audit_log_cleared")
		subject()
	case "4720", "4722", "4723", "4724", "4725", "4726", "4738", "4740", "4767":
		set("iam", map[string]string{
			"4720": "user_created", "4722": "user_enabled", "4723": "password_change_attempted", "4724": "password_reset",
			"4725": "user_disabled", "4726": "user_deleted", "4738": "user_changed", "4740": "user_locked_out", "4767": "user_unlocked",
		}[id])
		subject()
		target()
	case "4728", "4732", "4756":
		set("iam", "group_member_added")
		subject()
		// The member is a DN or a SID; the group is TargetUserName.
		ev.Set(event.FieldTargetUser, clean(firstOf(w("MemberName"), w("MemberSid"))))
		ev.Set("group", w("TargetUserName"))
	case "4768", "4769", "4771", "4776":
		set("authentication", map[string]string{"4768": "kerberos_tgt", "4769": "kerberos_service_ticket", "4771": "kerberos_preauth", "4776": "ntlm_validation"}[id])
		setUser(ev, w("TargetUserName"))
		ev.SrcIP, ev.SrcPort = parseIP(w("IpAddress")), parsePort(w("IpPort"))
		ev.Set(event.FieldService, w("ServiceName"))
		status := firstOf(w("Status"), w("FailureCode"))
		switch {
		case status == "0x0" || status == "0":
			ev.Outcome = "success"
		case status != "":
			ev.Outcome = "failure"
		}
	default:
		ev.Category = "windows"
	}
	return true
}

// normalizeSysmon maps the Sysmon events (Microsoft-Windows-Sysmon).
func normalizeSysmon(ev *event.Event, id string, w func(string) string) {
	set := func(category, action string) { ev.Category, ev.Action = category, action }
	setUser(ev, w("User"))
	ev.Set(event.FieldProcessID, w("ProcessId"))
	switch id {
	case "1":
		set("process", "process_created")
		ev.Set(event.FieldProcess, w("Image"))
		ev.Set(event.FieldCommandLine, w("CommandLine"))
		ev.Set(event.FieldParentProcess, w("ParentImage"))
		ev.Set(event.FieldParentCommandLine, w("ParentCommandLine"))
		ev.Set(event.FieldFileHash, w("Hashes"))
	case "3":
		set("network", "network_connection")
		ev.Set(event.FieldProcess, w("Image"))
		ev.SrcIP, ev.SrcPort = parseIP(w("SourceIp")), parsePort(w("SourcePort"))
		ev.DstIP, ev.DstPort = parseIP(w("DestinationIp")), parsePort(w("DestinationPort"))
		ev.Protocol = strings.ToLower(w("Protocol"))
	case "7":
		set("process", "image_loaded")
		ev.Set(event.FieldProcess, w("Image"))
		ev.Set(event.FieldFilePath, w("ImageLoaded"))
		ev.Set(event.FieldFileHash, w("Hashes"))
	case "8":
		set("process", "remote_thread_created")
		ev.Set(event.FieldProcess, w("SourceImage"))
		ev.Set(event.FieldFilePath, w("TargetImage"))
	case "10":
		set("process", "process_accessed")
		ev.Set(event.FieldProcess, w("SourceImage"))
		ev.Set(event.FieldFilePath, w("TargetImage"))
		setUser(ev, w("SourceUser"))
	case "11":
		set("file", "file_created")
		ev.Set(event.FieldProcess, w("Image"))
		ev.Set(event.FieldFilePath, w("TargetFilename"))
	case "12", "13", "14":
		set("registry", "registry_event")
		ev.Set(event.FieldProcess, w("Image"))
		ev.Set(event.FieldRegistryKey, w("TargetObject"))
	case "22":
		set("network", "dns_query")
		ev.Set(event.FieldProcess, w("Image"))
		ev.Set(event.FieldDNSQuery, w("QueryName"))
	default:
		ev.Category = "windows"
	}
}

// setUser sets ev.User from a Windows account name, leaving it alone for
// "-" (none) and empty.
func setUser(ev *event.Event, name string) {
	if name = clean(name); name != "" {
		ev.User = name
	}
}

// clean drops Windows' placeholders for "none".
func clean(s string) string {
	if s == "-" || s == "" {
		return ""
	}
	return s
}

// hexOrDecimal turns Security's hex process ids ("0x1a2c") into decimal,
// as Sysmon writes them.
func hexOrDecimal(s string) string {
	if h, ok := strings.CutPrefix(strings.ToLower(s), "0x"); ok {
		if n, err := strconv.ParseUint(h, 16, 64); err == nil {
			return strconv.FormatUint(n, 10)
		}
	}
	return s
}
