package syslog

import "testing"

// An RFC 5424 SD element named "win" gives attributes win.<Name> before
// the normalization runs. Its copy of the Windows event's fields used to
// overwrite them all; with attributes: read it copies only the names a
// rule reads, and windowsField read the element's win.<Name> first for
// the others: the event's user and address came from the "win" element
// instead of the Windows event's, and differed from attributes: all
// (found by review).
func TestSDElementNamedWinDoesNotShadowTheWindowsFields(t *testing.T) {
	checkParsed(t, `<86>1 2026-12-04T10:00:00Z dc-01 Microsoft-Windows-Security-Auditing 612 - [NXLOG@14506 EventID="4624" TargetUserName="bob" IpAddress="198.51.100.4" LogonType="3"][win TargetUserName="administrator" IpAddress="10.9.9.9" LogonType="10"] An account was successfully logged on.`,
		map[string]string{"action": "logon", "user": "bob", "src_ip": "198.51.100.4", "logon_type": "3"})
}
