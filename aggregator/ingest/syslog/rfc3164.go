package syslog

import (
	"strings"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// RFC 3164 is a description of practice more than a grammar, so this reader
// is deliberately lenient, in the way rsyslog's pmrfc3164 is:
//
//	<PRI>TIMESTAMP SP [HOSTNAME SP] [TAG[ "[" PID "]" ] ":" [SP]] MSG
//
// TIMESTAMP is "Mmm dd hh:mm:ss" (dd may be " 1" or "1", an optional
// fraction is allowed) or an RFC 3339 timestamp, as rsyslog's
// RSYSLOG_ForwardFormat and Go's log/syslog send. A token that ends with ':'
// or holds '[' is a TAG, not a HOSTNAME (messages from local senders often
// have none). MSG is everything after the header, byte for byte: tabs and
// other control characters stay.
//
// go-syslog's rfc3164 parser (v3.0.0) is not used: it returns success with
// an empty MSG when the text holds a control character such as a tab, it
// rejects RFC 3339 timestamps with a fraction (rsyslog's forward format),
// it splits "tag[pid]:msg" as TAG tag and MSG "pid]:msg", its WithTimezone
// converts the UTC-read time instead of reading the wall clock in the zone,
// and its WithYear fixes the year when the parser is built.

const (
	maxTagLen    = 48  // RFC 3164 says 32; RFC 5424 APP-NAME allows 48
	maxProcIDLen = 128 // RFC 5424 PROCID
	// maxFutureSkew is how far after its reception a year-less timestamp
	// may lie before the year is taken to be the previous one.
	maxFutureSkew = 24 * time.Hour
)

// parse3164 fills ev from an RFC 3164 message and reports whether it had
// both a valid PRI and a timestamp. If not, it applies RFC 3164 §4.3: with
// a valid PRI but no timestamp (§4.3.2) it keeps the PRI and the text after
// it is the message; without a valid PRI (§4.3.3) the facility is 1 (user),
// the severity 5 (notice), and the whole text is the message. Either way
// the event time is the reception time.
func (p *Parser) parse3164(s string, ev *event.Event) bool {
	pri, rest, ok := parsePRI(s)
	if !ok {
		ev.Facility, ev.Severity, ev.Message = 1, 5, s
		return false
	}
	ev.Facility, ev.Severity = pri/8, pri%8

	t, rest, ok := p.parseTimestamp(rest, ev.Received)
	if !ok {
		ev.Message = rest
		return false
	}
	ev.Time = t

	rest = strings.TrimLeft(rest, " ")
	if tok, after, _ := strings.Cut(rest, " "); tok != "" && isGraph(tok) &&
		!strings.HasSuffix(tok, ":") && !strings.Contains(tok, "[") {
		ev.Host, rest = tok, after
	}
	if tag, pid, msg, ok := splitTag(rest); ok {
		ev.App, ev.ProcID, rest = tag, pid, msg
	}
	ev.Message = rest
	return true
}

// parsePRI reads "<" 1*3DIGIT ">" with a value of 0 to 191.
func parsePRI(s string) (pri int, rest string, ok bool) {
	if len(s) < 3 || s[0] != '<' {
		return 0, s, false
	}
	i := 1
	for ; i < len(s) && i <= 3 && isDigit(s[i]); i++ {
		pri = pri*10 + int(s[i]-'0')
	}
	if i == 1 || i >= len(s) || s[i] != '>' || pri > 191 {
		return 0, s, false
	}
	return pri, s[i+1:], true
}

// splitTag reads `TAG[PID]: ` or `TAG: ` at the start of s. A TAG is 1 to
// maxTagLen visible characters other than ':' and '['; a space before either
// means there is no TAG and s is all message.
func splitTag(s string) (tag, pid, msg string, ok bool) {
	for i := 0; i < len(s) && i <= maxTagLen; i++ {
		switch c := s[i]; {
		case c == ':' && i > 0:
			return s[:i], "", strings.TrimPrefix(s[i+1:], " "), true
		case c == '[' && i > 0:
			end := strings.IndexByte(s[i+1:min(len(s), i+2+maxProcIDLen)], ']')
			if end < 0 {
				return "", "", s, false
			}
			pid = s[i+1 : i+1+end]
			if !isGraph(pid) {
				return "", "", s, false
			}
			// "tag[pid]: msg", and also "tag[pid]:msg" and "tag[pid] msg".
			msg = strings.TrimPrefix(s[i+2+end:], ":")
			return s[:i], pid, strings.TrimPrefix(msg, " "), true
		case c < '!' || c > '~' || c == ':' || c == '[':
			return "", "", s, false
		}
	}
	return "", "", s, false
}

// parseTimestamp reads the timestamp at the start of s and returns the rest
// of s after it. The timestamp must be followed by a space or end s.
func (p *Parser) parseTimestamp(s string, received time.Time) (time.Time, string, bool) {
	if s != "" && isDigit(s[0]) {
		tok, rest, _ := strings.Cut(s, " ")
		t, err := time.Parse(time.RFC3339Nano, tok)
		if err != nil {
			return time.Time{}, s, false
		}
		return t, rest, true
	}
	st, rest, ok := parseStamp(s)
	if !ok {
		return time.Time{}, s, false
	}
	t, ok := p.stampTime(st, received)
	if !ok {
		return time.Time{}, s, false
	}
	return t, rest, true
}

// stamp is a parsed "Mmm dd hh:mm:ss[.frac]": a wall-clock time of an
// unknown year in an unknown zone.
type stamp struct {
	month                     time.Month
	day, hour, min, sec, nsec int
}

// parseStamp reads "Mmm dd hh:mm:ss" with an optional ".fraction" (1 to 9
// digits). The day may be "dd", " d" (the RFC's form) or "d".
func parseStamp(s string) (stamp, string, bool) {
	var st stamp
	if len(s) < len("Jan 2 15:04:05") || s[3] != ' ' {
		return st, s, false
	}
	if st.month = monthOf(s[:3]); st.month == 0 {
		return st, s, false
	}
	i := 4
	switch {
	case s[i] == ' ' && isDigit(s[i+1]):
		st.day, i = int(s[i+1]-'0'), i+2
	case isDigit(s[i]) && isDigit(s[i+1]):
		st.day, i = int(s[i]-'0')*10+int(s[i+1]-'0'), i+2
	case isDigit(s[i]) && s[i+1] == ' ':
		st.day, i = int(s[i]-'0'), i+1
	default:
		return st, s, false
	}
	if len(s) < i+9 {
		return st, s, false
	}
	t := s[i : i+9] // " hh:mm:ss"
	if t[0] != ' ' || t[3] != ':' || t[6] != ':' {
		return st, s, false
	}
	var ok1, ok2, ok3 bool
	st.hour, ok1 = twoDigits(t[1:3], 23)
	st.min, ok2 = twoDigits(t[4:6], 59)
	st.sec, ok3 = twoDigits(t[7:9], 59)
	if !ok1 || !ok2 || !ok3 || st.day < 1 || st.day > 31 {
		return st, s, false
	}
	i += 9
	if i+1 < len(s) && s[i] == '.' && isDigit(s[i+1]) {
		i++
		scale := int(time.Second)
		for ; i < len(s) && isDigit(s[i]); i++ {
			if scale /= 10; scale == 0 {
				return st, s, false // more than 9 digits
			}
			st.nsec += int(s[i]-'0') * scale
		}
	}
	if i < len(s) && s[i] != ' ' {
		return st, s, false
	}
	return st, s[i:], true
}

// stampTime places a year-less timestamp in time. It is wall-clock time in
// the configured zone (RFC 3164 timestamps are the sender's local time).
//
// The year is the latest of the reception year+1, the reception year and
// the one before for which the time is at most 24 h after reception: a
// sender's clock may run a little ahead, but not by most of a year. So
// "Dec 31 23:59:59" received on 1 January lands in the old year, and
// "Jan  1 00:00:01" received late on 31 December (a clock slightly ahead)
// in the new one. A date that does not exist in the chosen year (Feb 29)
// moves on to the year before; one that exists in none (Apr 31) fails.
func (p *Parser) stampTime(st stamp, received time.Time) (time.Time, bool) {
	year := received.In(p.loc).Year()
	limit := received.Add(maxFutureSkew)
	for y := year + 1; y >= year-1; y-- {
		t := time.Date(y, st.month, st.day, st.hour, st.min, st.sec, st.nsec, p.loc)
		if t.Day() == st.day && !t.After(limit) {
			return t, true
		}
	}
	return time.Time{}, false
}

func monthOf(s string) time.Month {
	switch s {
	case "Jan":
		return time.January
	case "Feb":
		return time.February
	case "Mar":
		return time.March
	case "Apr":
		return time.April
	case "May":
		return time.May
	case "Jun":
		return time.June
	case "Jul":
		return time.July
	case "Aug":
		return time.August
	case "Sep":
		return time.September
	case "Oct":
		return time.October
	case "Nov":
		return time.November
	case "Dec":
		return time.December
	}
	return 0
}

func twoDigits(s string, limit int) (int, bool) {
	if !isDigit(s[0]) || !isDigit(s[1]) {
		return 0, false
	}
	n := int(s[0]-'0')*10 + int(s[1]-'0')
	return n, n <= limit
}

// isGraph reports whether s is all visible US-ASCII (no space, no control).
func isGraph(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '!' || s[i] > '~' {
			return false
		}
	}
	return true
}
