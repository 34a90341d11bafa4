package forwarder

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/forwarder/cef"
)

// formatter renders one alert as one syslog message, unframed: the
// transport adds the LF or octet count (stream), sends it as a datagram
// (udp) or wraps it in a RELP syslog command. It is a pure function of the
// alert, the clock and the destination's settings.
type formatter struct {
	format   string
	facility int
	hostname string
	maxSize  int // 0: no cap
	enc      *cef.Encoder
}

// appendMessage appends a's syslog message to dst and reports whether it
// had to be cut to maxSize.
//
// RFC 5424: <PRI>1 TIMESTAMP HOSTNAME outpost - CEF - MSG, no structured
// data, the CEF line as MSG without a BOM (receivers look for "CEF:" at the
// start of MSG).
//
// RFC 3164: <PRI>Mmm dd hh:mm:ss HOSTNAME CEF:0|..., the form of the CEF
// standard's examples, which ArcSight connectors and Sentinel's AMA parse
// (AMA sees "CEF" as the TAG). The timestamp is UTC: RFC 3164 has no zone,
// and the exact time travels in the CEF rt/start/end keys anyway.
func (f *formatter) appendMessage(dst []byte, a *event.Alert, now time.Time) ([]byte, bool) {
	start := len(dst)
	pri := f.facility*8 + cef.SyslogSeverity(a.Severity)
	dst = append(dst, '<')
	dst = strconv.AppendInt(dst, int64(pri), 10)
	now = now.UTC()
	if f.format == FormatRFC3164 {
		dst = append(dst, '>')
		dst = now.AppendFormat(dst, time.Stamp) // "Jan _2 15:04:05"
		dst = append(dst, ' ')
		dst = append(dst, f.hostname...)
		dst = append(dst, ' ')
	} else {
		dst = append(dst, ">1 "...)
		dst = now.AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
		dst = append(dst, ' ')
		dst = append(dst, f.hostname...)
		dst = append(dst, " outpost - CEF - "...)
	}
	dst = f.enc.Append(dst, a)
	if f.maxSize > 0 && len(dst)-start > f.maxSize {
		return dst[:start+cutPoint(dst[start:], f.maxSize)], true
	}
	return dst, false
}

// cutPoint returns a length <= limit at which msg can be cut: on a UTF-8
// rune boundary and not between a CEF escape's backslash and the character
// it escapes (so the last value stays well-formed, just shorter).
func cutPoint(msg []byte, limit int) int {
	n := limit
	for n > 0 && !utf8.RuneStart(msg[n]) {
		n--
	}
	backslashes := 0
	for i := n - 1; i >= 0 && msg[i] == '\\'; i-- {
		backslashes++
	}
	if backslashes%2 == 1 {
		n--
	}
	return n
}

// appendFrame appends msg to dst framed for a byte stream (tcp, tls).
func appendFrame(dst, msg []byte, framing string) []byte {
	if framing == FramingOctetCounting {
		dst = strconv.AppendInt(dst, int64(len(msg)), 10)
		dst = append(dst, ' ')
		dst = append(dst, msg...)
		return dst
	}
	dst = append(dst, msg...)
	return append(dst, '\n')
}
