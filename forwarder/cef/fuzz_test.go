package cef

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// FuzzEncode builds an alert from fuzzed text and checks the encoding
// against the CEF grammar (parseCEF) and the reference model (wantLine):
// no raw line break, the CEF:0 prefix, seven header fields, every value as
// the model says after truncation, trimming and newline normalization, and
// valid UTF-8 throughout.
func FuzzEncode(f *testing.F) {
	// ruleID, title, desc, key, tags, ids, srcIP, dstIP, srcPort, dstPort, user, extraKey, extraVal, severity, count, first, last
	f.Add("ssh.bruteforce", "SSH brute force", "failed logons", "203.0.113.5", "T1110,T1110.001", "e1,e2,e3",
		"203.0.113.5", "10.0.0.1", "51234", "22", "root", "category", "authentication", 7, 5, int64(1795428000000), int64(1795428090000))
	f.Add(`r|1\`, "a|b\\c\r\nd", "x=y\\z|w\n", " k=v ", "a\\,b=c", ",,x,", "2001:DB8::1", "::ffff:1.2.3.4", "65536", "-1",
		"u\rser", "k=", "=v", 11, 1, int64(0), int64(-1))
	f.Add("é", strings.Repeat("🙂", 200), strings.Repeat("é", 3000), "日本語", "ü,ö", "\xff", "fe80::1%eth0", "1.2.3.4.5", " 80 ", "0080",
		strings.Repeat("é", 600), "\xc3", "\xe2\x82\xac", -3, 0, int64(1), int64(1))
	f.Add("", "", "", "", "", "", "", "", "", "", "", "", "", 0, 0, int64(0), int64(0))
	f.Add("r", "t", "   ", "\t", " ", " ", " 10.0.0.1 ", "not-an-ip", "+1", "1e3", "  ", "  ", "  ", 10, 2, int64(0), int64(5))

	o := Options{Vendor: "Outpost", Product: "Outpost", Version: "dev", DeviceExternalID: "fuzz"}
	enc := newTestEncoder(f, o)
	f.Fuzz(func(t *testing.T, ruleID, title, desc, key, tags, ids, srcIP, dstIP, srcPort, dstPort, user, extraKey, extraVal string,
		severity, count int, first, last int64) {
		a := &event.Alert{
			ID: ids, RuleID: ruleID, Title: title, Description: desc, Key: key, Kind: extraVal,
			Severity: severity, Count: count, GroupBy: strings.Split(extraKey, ","),
			Tags: strings.Split(tags, ","), EventIDs: strings.Split(ids, ","),
			FirstSeen: fuzzTime(first), LastSeen: fuzzTime(last),
			Fields: map[string]string{
				"src_ip": srcIP, "dst_ip": dstIP, "src_port": srcPort, "dst_port": dstPort,
				"user": user, "host": title, "protocol": key, "action": desc, "outcome": tags, "app": ids,
				extraKey: extraVal,
			},
		}
		out := enc.Append(nil, a)
		checkLine(t, o, a, out)
		if !utf8.Valid(out) {
			t.Errorf("output is not valid UTF-8: %q", out)
		}
	})
}

// fuzzTime maps 0 to the zero time, so fuzzing covers omitted timestamps.
func fuzzTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}
