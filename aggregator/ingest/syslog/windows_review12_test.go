package syslog

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// An RFC 5424 SD element named "win" gives the attributes win.<Name>,
// which the normalization reads as a Windows event's own fields (as
// Snare's): [win EventID="4624" ...] is a logon with every attribute
// kept. With attributes: read the parse kept none of its parameters (not
// an attribute a rule reads, and not set aside: "win" is a format
// prefix), so the event was not a Windows event at all (found by review:
// keepSD used to keep the Windows names of every element).
func TestSDElementNamedWinIsAWindowsEvent(t *testing.T) {
	checkParsed(t, `<14>1 2026-12-04T10:00:00Z dc-01 agent - - [win EventID="4624" TargetUserName="bob" IpAddress="198.51.100.4" LogonType="3"] forwarded`,
		map[string]string{"action": "logon", "user": "bob", "src_ip": "198.51.100.4", "logon_type": "3"})
}

// A Windows field given more than once (a Winlogbeat event_data field in
// the SD element json.winlog.event_data, nested in the JSON payload and
// as a flat "winlog.event_data.<Name>" key): with every attribute kept,
// the last value is the attribute's and the field's. With attributes:
// read each is set aside, so windowsFields found the name three times;
// past maxWinFields it sorted them (unstably) and kept the first 96, so
// the field had another value or none, and TargetUserName was cut off
// (found by review).
func TestWindowsFieldRepeatedPastMaxWinFields(t *testing.T) {
	var sd, nested, flat []string
	for _, n := range windowsNames {
		sd = append(sd, n+`="sd"`)
		nested = append(nested, `"`+n+`":"nested"`)
		flat = append(flat, `"winlog.event_data.`+n+`":"flat"`)
	}
	msg := `<14>1 2026-12-04T10:00:00Z dc-01 winlogbeat - - [json.winlog.event_data ` + strings.Join(sd, " ") + `] ` +
		`{"winlog":{"event_id":"4624","event_data":{` + strings.Join(nested, ",") + `}},` + strings.Join(flat, ",") + `}`
	checkParsed(t, msg, map[string]string{"action": "logon", "user": "flat", "logon_type": "flat", "channel": "flat"})
}

// The Windows scratch a Parser keeps between messages (winFields: the
// parameters set aside, windowsFields' list of fields) is let go of when
// one message made it large, as the other reused memory is
// (event.ReuseAttrs, payload's fieldsPool): a 64 kB message of 3,000 SD
// elements each holding EventID, or one element of 3,000 parameters,
// pinned some 150 kB per parser, and at max_message_size 16 MiB tens of
// MB, for as long as the connection or listener lasted (found by
// review).
func TestParserWindowsScratchBounded(t *testing.T) {
	var aside, params strings.Builder
	aside.WriteString(`<14>1 2026-12-04T10:00:00Z dc-01 agent - - `)
	params.WriteString(`<14>1 2026-12-04T10:00:00Z dc-01 agent - - [NXLOG@14506 EventID="4624"`)
	for i := range 3000 {
		fmt.Fprintf(&aside, `[e%d EventID="4624"]`, i)
		fmt.Fprintf(&params, ` p%d="v"`, i)
	}
	aside.WriteString(" x")
	params.WriteString("] x")
	var filter atomic.Pointer[attrFilter]
	filter.Store(newAttrFilter(nil))
	for _, tc := range []struct {
		name  string
		attrs *atomic.Pointer[attrFilter]
		msg   string
	}{{"set aside (attributes: read)", &filter, aside.String()}, {"fields found (attributes: all)", nil, params.String()}} {
		p := NewParser(WithReusedAttrs())
		p.attrs = tc.attrs
		var ev event.Event
		for _, m := range []string{tc.msg, reusedBefore} {
			if err := p.Parse([]byte(m), testReceived, "127.0.0.1:514", &ev); err != nil {
				t.Fatal(err)
			}
		}
		if c := max(cap(p.win.aside), cap(p.win.found)); c > 4*maxWinFields {
			t.Errorf("%s: after a message of %d bytes, the parser keeps scratch for %d fields", tc.name, len(tc.msg), c)
		}
	}
}

// An SD-ID may hold dots: [json.winlog event_id="4624"] gives the
// attribute json.winlog.event_id, which makes the message a Winlogbeat
// event with every attribute kept. With attributes: read keepSD asked
// keep("json.winlog.", "event_id"), which knows only the prefix "json.",
// and dropped it: no Windows event (found by review; the code before
// 5e5aa7c..d5ed851 did the same).
func TestSDElementWithADottedJSONPath(t *testing.T) {
	checkParsed(t, `<14>1 2026-12-04T10:00:00Z dc-01 agent - - [json.winlog event_id="4624" channel="Security"][json.winlog.event_data TargetUserName="bob"] forwarded`,
		map[string]string{"action": "logon", "user": "bob", "event_code": "4624", "channel": "Security"})
}
