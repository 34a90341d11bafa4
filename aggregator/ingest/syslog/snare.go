package syslog

import (
	"strings"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// Snare's Windows format: one event per syslog message, tab-separated,
//
//	MSWinEventLog  criticality  log name  counter  submit time  EventID  source  user  SID type
//	event type  computer  category  data  expanded message  [checksum]
//
// The event's own fields are only in the expanded message, the text
// Windows renders ("... New Logon:  Security ID: ...  Account Name: bob  ...
// Source Network Address: 198.51.100.4 ..."), where Snare turned line
// breaks and tabs into spaces. parseSnare reads the header into win.EventID,
// win.Channel, win.Provider and win.Computer, and the labels the known
// events need from the text into the names Windows gives them
// (TargetUserName, IpAddress, NewProcessName, ...), so normalizeWindows
// treats it as any other Windows event.

// snareLabels are, per event id, the win.<Name> read from the text: the
// section its label is in ("" for the first occurrence) and the label.
// A section starting with "~" is searched from the end (the last
// occurrence, of it and of the label in it): the fields a client chooses
// (an account or workstation name) come before the ones it must not be
// able to forge. A label starting with "$" takes the rest of the text (a
// command line is the event's last field and may hold any spaces).
var snareLabels = map[string][]struct{ name, section, label string }{
	"4624": {{"TargetUserName", "New Logon:", "Account Name:"}, {"SubjectUserName", "Subject:", "Account Name:"}, {"LogonType", "", "Logon Type:"},
		{"IpAddress", "~Network Information:", "Source Network Address:"}, {"IpPort", "~Network Information:", "Source Port:"}, {"ProcessName", "Process Information:", "Process Name:"}},
	"4625": {{"TargetUserName", "Account For Which Logon Failed:", "Account Name:"}, {"SubjectUserName", "Subject:", "Account Name:"}, {"LogonType", "", "Logon Type:"},
		{"IpAddress", "~Network Information:", "Source Network Address:"}, {"IpPort", "~Network Information:", "Source Port:"}, {"Status", "Failure Information:", "Status:"}},
	"4688": {{"SubjectUserName", "Creator Subject:", "Account Name:"}, {"SubjectUserName", "Subject:", "Account Name:"}, {"NewProcessName", "", "New Process Name:"},
		{"CommandLine", "", "$Process Command Line:"}, {"ParentProcessName", "", "Creator Process Name:"}, {"NewProcessId", "", "New Process ID:"}},
	"4720": {{"SubjectUserName", "Subject:", "Account Name:"}, {"TargetUserName", "New Account:", "Account Name:"}, {"TargetSid", "New Account:", "Security ID:"}},
	"4726": {{"SubjectUserName", "Subject:", "Account Name:"}, {"TargetUserName", "Target Account:", "Account Name:"}},
	"4732": {{"SubjectUserName", "Subject:", "Account Name:"}, {"MemberName", "Member:", "Account Name:"}, {"MemberSid", "Member:", "Security ID:"}, {"TargetUserName", "Group:", "Group Name:"}},
	"4728": {{"SubjectUserName", "Subject:", "Account Name:"}, {"MemberName", "Member:", "Account Name:"}, {"MemberSid", "Member:", "Security ID:"}, {"TargetUserName", "Group:", "Group Name:"}},
	"4697": {{"SubjectUserName", "Subject:", "Account Name:"}, {"ServiceName", "", "Service Name:"}, {"ServiceFileName", "", "Service File Name:"}},
	"7045": {{"ServiceName", "", "Service Name:"}, {"ImagePath", "", "Service File Name:"}},
	"1102": {{"SubjectUserName", "Subject:", "Account Name:"}},
	"4740": {{"SubjectUserName", "Subject:", "Account Name:"}, {"TargetUserName", "Account That Was Locked Out:", "Account Name:"}},
}

// parseSnare reads a Snare message into win.* attributes; it reports
// whether the message is one.
func parseSnare(ev *event.Event) bool {
	msg := ev.Message
	if !strings.HasPrefix(msg, "MSWinEventLog\t") {
		return false
	}
	f := strings.Split(msg, "\t")
	if len(f) < 14 {
		return false
	}
	if ev.Attrs == nil {
		ev.Attrs = map[string]string{}
	}
	set := func(name, v string) {
		if v = strings.TrimSpace(v); v != "" && v != "N/A" {
			ev.Attrs[winPrefix+name] = v
		}
	}
	id := strings.TrimSpace(f[5])
	set("EventID", id)
	set("Channel", f[2])
	set("Provider", f[6])
	set("Computer", f[10])
	set("Keywords", f[9])
	text := f[13]
	for _, l := range snareLabels[id] {
		if ev.Attrs[winPrefix+l.name] != "" {
			continue // an earlier, more specific section gave it
		}
		set(l.name, snareValue(text, l.section, l.label))
	}
	return true
}

// snareValue finds label in text (after section, when given) and returns
// what follows it up to the next run of two spaces.
func snareValue(text, section, label string) string {
	last := strings.HasPrefix(section, "~")
	section = strings.TrimPrefix(section, "~")
	if section != "" {
		i := strings.Index(text, section)
		if last {
			i = strings.LastIndex(text, section)
		}
		if i < 0 {
			return ""
		}
		text = text[i+len(section):]
	}
	toEnd := strings.HasPrefix(label, "$")
	label = strings.TrimPrefix(label, "$")
	i := strings.Index(text, label)
	if last {
		i = strings.LastIndex(text, label)
	}
	if i < 0 {
		return ""
	}
	v := strings.TrimLeft(text[i+len(label):], " ")
	if toEnd {
		return strings.TrimSpace(v)
	}
	if j := strings.Index(v, "  "); j >= 0 {
		v = v[:j]
	}
	return strings.TrimSpace(v)
}
