package syslog

import "testing"

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
