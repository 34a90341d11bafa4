// Package cef encodes Outpost alerts as ArcSight Common Event Format (CEF:0)
// lines. It is a pure mapper: framing, TLS and redial belong to the
// forwarder that carries the lines.
//
// # Header
//
//	CEF:0|<Vendor>|<Product>|<Version>|<RuleID>|<Title>|<Severity>|<extension>
//
// Vendor, Product and Version come from Options (defaults "Outpost",
// "Outpost", "dev"). The class id is the rule id and the name is the alert
// title (the rule id when the title is empty). Severity is the alert's,
// clamped to 0..10.
//
// In header fields `\` becomes `\\` and `|` becomes `\|`, and CR, LF and CRLF
// each become one space. Limits, in escaped bytes: vendor and product 63,
// version 31, class id 1023, name 512.
//
// # Extension
//
// Pairs are written in this fixed order; a pair whose value is empty is
// left out, with its label:
//
//	key                 value                                          limit
//	rt                  LastSeen, epoch milliseconds
//	start               FirstSeen, epoch milliseconds
//	end                 LastSeen, epoch milliseconds
//	cnt                 Count, when > 0
//	externalId          ID                                                40
//	deviceExternalId    Options.DeviceExternalID                         255
//	dvchost             Options.DeviceHost                               100
//	src                 Fields["src_ip"] when IPv4 (or IPv4-mapped IPv6)
//	c6a3Label, c6a3     "Source IPv6 Address", Fields["src_ip"] when IPv6
//	dst                 Fields["dst_ip"] when IPv4 (or IPv4-mapped IPv6)
//	c6a4Label, c6a4     "Destination IPv6 Address", Fields["dst_ip"] when IPv6
//	spt                 Fields["src_port"] when an integer 0..65535
//	dpt                 Fields["dst_port"] when an integer 0..65535
//	proto               Fields["protocol"]                                31
//	suser               Fields["user"]                                  1023
//	dhost               Fields["host"]                                  1023
//	act                 Fields["action"]                                  63
//	outcome             Fields["outcome"]                                 63
//	app                 Fields["app"]                                     31
//	msg                 summary, see below                              1023
//	cs1Label, cs1       "Group Key", Key                                4000
//	cs2Label, cs2       "Rule Kind", Kind                               4000
//	cs3Label, cs3       "MITRE ATT&CK", Tags joined by ","              4000
//	cs4Label, cs4       "Evidence Event IDs", EventIDs joined by ","    4000
//	cs5Label, cs5       "Description", Description                      4000
//	cs6Label, cs6       "Fields", the other Fields as "k=v; k=v"        4000
//	flexString1Label/1  "Distinct Values", Values                       1023
//	flexString2Label/2  "Sequence Steps", Steps as name@time             1023
//
// Addresses are written in canonical form; one that does not parse as an
// IP address (or has an IPv6 zone) is not sent as an address, and neither
// is a port that is not a decimal 0..65535: such fields stay in cs6, which
// holds every field no dedicated key took, sorted by key.
//
// msg is the description (or the title) for a single event. For an
// aggregate it says what was counted: "5 events from src_ip=203.0.113.5
// between 2026-11-23T10:00:00Z and 2026-11-23T10:01:30Z", naming the
// group-by fields and key when there is one, with times in UTC at second
// precision ("at <time>" when first and last are the same).
//
// # Values
//
// Invalid UTF-8 becomes U+FFFD, so every line is valid UTF-8. Leading and
// trailing ASCII whitespace is trimmed, since parsers find the end of a value
// by looking ahead for " key=" and lose it anyway. A value longer than its
// limit, counted in unescaped bytes, is cut on a UTF-8 rune boundary (cs3 and
// cs4 only between whole items, so no partial tag or event id is sent) and
// the cut is counted in Encoder.Truncations. Then `\` becomes `\\`, `=`
// becomes `\=`, and CR, LF and CRLF become the two characters `\n`; `|` is
// not escaped. No raw CR or LF is ever written, so lines are safe to frame
// with a newline.
//
// # Syslog severity
//
// SyslogSeverity maps the CEF severity to the severity of the syslog frame:
// 9-10 critical (2), 7-8 error (3), 4-6 warning (4), 0-3 notice (5).
package cef
