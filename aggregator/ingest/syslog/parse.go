package syslog

import (
	"bytes"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	gosyslog "github.com/influxdata/go-syslog/v3"
	"github.com/influxdata/go-syslog/v3/rfc5424"
	"github.com/nats-io/nuid"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/ingest/payload"
)

// SourceName is the Event.Source of every event this package produces, and
// the source name of its dead letters.
const SourceName = "syslog"

// Parser turns one syslog message into an Event. It is not safe for
// concurrent use: the source gives each listener and connection its own.
type Parser struct {
	loc      *time.Location
	rfc5424  gosyslog.Machine
	ids      *nuid.NUID
	fallback func() // called for each RFC 3164 §4.3 fallback; nil: not counted
	// payload is called for each message whose text is in a structured
	// format (package payload), parsed or not; nil: not counted.
	payload func(format string, parsed bool)

	// attrs, when set and holding a filter, keeps of each event's
	// attributes only what the filter does (attributes.go): the parse
	// stores the rules' keys and what the normalization reads, and the
	// latter go once it is done. dropped counts what was left out.
	attrs   *atomic.Pointer[attrFilter]
	dropped func(n int)
	// keeping is the filter of the message being parsed, left counts the
	// attributes it left out, keepFn is p.keep for payload.Apply.
	keeping *attrFilter
	left    int
	keepFn  payload.Keep

	// scratch is the event of a message delivered alone (UDP, RELP),
	// parsed again for the next: the sink keeps none.
	scratch event.Event
	// win is the Windows fields of the message being parsed.
	win winFields
	// reuseAttrs: Parse clears and fills the Attrs map of the event it is
	// given instead of making one (WithReusedAttrs).
	reuseAttrs bool
}

// keep is payload.Keep for the message being parsed: its filter's say,
// counting what it leaves out and setting aside what only the
// normalization reads.
func (p *Parser) keep(prefix, key, value string) bool {
	attr, aside := p.keeping.keep(prefix, key)
	if attr {
		return true
	}
	p.left++
	if aside {
		p.win.aside = append(p.win.aside, asideAttr{strings.TrimSuffix(prefix, "."), key, value})
	}
	return false
}

// ParserOption configures a Parser.
type ParserOption func(*Parser)

// WithLocation sets the zone RFC 3164 timestamps are read in; they carry
// none. The default is UTC.
func WithLocation(loc *time.Location) ParserOption {
	return func(p *Parser) {
		if loc != nil {
			p.loc = loc
		}
	}
}

// WithoutIDs leaves Event.ID empty, for a caller that sets its own ids
// (outpost rules replay numbers lines).
func WithoutIDs() ParserOption {
	return func(p *Parser) { p.ids = nil }
}

// WithReusedAttrs makes Parse reuse the Attrs map of the event it parses
// into: for a caller whose sink copies what it keeps of an event, map
// included, before the next Parse into the same event (Sink). The map
// left may be empty rather than nil.
func WithReusedAttrs() ParserOption {
	return func(p *Parser) { p.reuseAttrs = true }
}

// NewParser returns a Parser.
func NewParser(opts ...ParserOption) *Parser {
	p := &Parser{
		loc: time.UTC,
		// Best effort only changes what comes back with an error; Parse
		// rejects a message on any error, because a half-parsed header
		// would put text in the wrong fields.
		rfc5424: rfc5424.NewParser(rfc5424.WithBestEffort()),
		ids:     nuid.New(),
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func (p *Parser) nextID() string {
	if p.ids == nil {
		return ""
	}
	return p.ids.Next()
}

// Parse parses one syslog message (framing already removed) received at
// received from sender into ev, overwriting all of ev.
//
// A message that starts "<PRI>1 " is RFC 5424; if go-syslog cannot parse
// it, Parse returns the error and the caller dead-letters the message.
// Anything else is RFC 3164, read leniently (see parse3164); what does not
// even have a PRI and a timestamp is still an event, per RFC 3164 §4.3, and
// never an error.
//
// Event strings are valid UTF-8: invalid bytes become U+FFFD, as they would
// in the event's JSON anyway.
func (p *Parser) Parse(msg []byte, received time.Time, sender string, ev *event.Event) error {
	if !utf8.Valid(msg) {
		// go-syslog rejects a non-UTF-8 RFC 5424 MSG although the RFC
		// allows any octets there (MSG-ANY); repairing the input first
		// keeps those messages.
		msg = bytes.ToValidUTF8(msg, []byte("\uFFFD"))
	}
	attrs := ev.Attrs
	*ev = event.Event{
		ID:       p.nextID(),
		Source:   SourceName,
		Received: received,
		Sender:   sender,
	}
	if p.reuseAttrs {
		ev.Attrs = event.ReuseAttrs(attrs)
	}
	var keep *attrFilter
	if p.attrs != nil {
		keep = p.attrs.Load()
	}
	p.keeping, p.left = keep, 0
	p.win.reset()
	if keep != nil && p.keepFn == nil {
		p.keepFn = p.keep // once: a method value allocates
	}
	if isRFC5424(msg) {
		if err := p.parse5424(msg, ev, keep); err != nil {
			return err
		}
	} else if !p.parse3164(string(msg), ev) && p.fallback != nil {
		p.fallback()
	}
	if ev.Time.IsZero() {
		ev.Time = received
	}
	if f := payload.Detect(ev); f != "" {
		// CEF, LEEF, key=value, JSON: a message it cannot read stays an
		// event with its raw text, counted.
		var only payload.Keep
		if keep != nil {
			only = p.keepFn
		}
		ok := payload.Apply(f, ev, only)
		if p.payload != nil {
			p.payload(f, ok)
		}
	}
	normalize(ev, keep, &p.win)
	if keep != nil {
		if n := keep.prune(ev, p.reuseAttrs) + p.left; n > 0 && p.dropped != nil {
			p.dropped(n)
		}
	}
	return nil
}

// isRFC5424 reports whether msg starts "<PRI>1 ": PRI is 1 to 3 digits and
// VERSION 1 is the only version there is. No RFC 3164 timestamp starts
// with "1 ", so the test is unambiguous.
func isRFC5424(msg []byte) bool {
	if len(msg) < 5 || msg[0] != '<' {
		return false
	}
	i := 1
	for i < len(msg) && i <= 3 && isDigit(msg[i]) {
		i++
	}
	return i > 1 && bytes.HasPrefix(msg[i:], []byte(">1 "))
}

func (p *Parser) parse5424(msg []byte, ev *event.Event, keep *attrFilter) error {
	head, text, split := splitMSG(msg)
	if !split {
		head = msg
	}
	m, err := p.rfc5424.Parse(head)
	if err != nil {
		// RFC 5424 allows at most 6 digits of fractional seconds, but
		// senders that format with nanoseconds (Go's RFC3339Nano, some
		// agents) write up to 9. Be lenient as rsyslog is: cut the
		// fraction to 6 digits and parse again.
		if fixed, ok := trimSecFrac(head); ok {
			m, err = p.rfc5424.Parse(fixed)
		}
		if err != nil {
			return fmt.Errorf("rfc5424: %w", err)
		}
	}
	sm, ok := m.(*rfc5424.SyslogMessage)
	if !ok || sm == nil || sm.Facility == nil || sm.Severity == nil {
		return fmt.Errorf("rfc5424: parser returned no message")
	}
	ev.Facility = int(*sm.Facility)
	ev.Severity = int(*sm.Severity)
	if sm.Timestamp != nil {
		ev.Time = *sm.Timestamp
	}
	ev.Host = deref(sm.Hostname)
	ev.App = deref(sm.Appname)
	ev.ProcID = deref(sm.ProcID)
	ev.MsgID = deref(sm.MsgID)
	if split {
		ev.Message = strings.TrimPrefix(string(text), "\uFEFF")
	} else {
		ev.Message = strings.TrimPrefix(deref(sm.Message), "\uFEFF") // go-syslog keeps the BOM
	}
	if sm.StructuredData != nil {
		for id, params := range *sm.StructuredData {
			for name, value := range params {
				if keep != nil {
					if attr, aside := keep.keepSD(id, name); !attr {
						p.left++
						if aside { // only the Windows normalization reads it
							p.win.aside = append(p.win.aside, asideAttr{id, name, value})
						}
						continue
					}
				}
				if ev.Attrs == nil {
					ev.Attrs = make(map[string]string)
				}
				ev.Attrs[id+"."+name] = value
			}
		}
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// trimSecFrac returns msg with the timestamp's fractional seconds cut to 6
// digits, when the timestamp (the field after "<PRI>1 ") has more.
func trimSecFrac(msg []byte) ([]byte, bool) {
	start := bytes.Index(msg, []byte(">1 "))
	if start < 0 {
		return nil, false
	}
	start += 3
	end := bytes.IndexByte(msg[start:], ' ')
	if end < 0 {
		return nil, false
	}
	end += start
	ts := msg[start:end]
	dot := bytes.IndexByte(ts, '.')
	if dot < 0 {
		return nil, false
	}
	digits := 0
	for dot+1+digits < len(ts) && isDigit(ts[dot+1+digits]) {
		digits++
	}
	if digits <= 6 {
		return nil, false
	}
	out := make([]byte, 0, len(msg))
	out = append(out, msg[:start+dot+1+6]...)
	out = append(out, msg[start+dot+1+digits:]...)
	return out, true
}

// splitMSG splits an RFC 5424 message before its MSG: head is the header
// and the structured data, text the MSG (nil when there is none). go-syslog
// reads MSG byte by byte to check it is UTF-8, which Parse made sure of
// already, and copies it: half of its time on an appliance's message.
// Given head alone it reads the same header and structured data, so splitMSG
// only finds where the structured data ends (RFC 5424 §6.3: "-", or
// elements in brackets whose quoted values may hold \" \] \\), and
// reports false for anything it does not see the end of: go-syslog then
// reads the whole message and says what is wrong with it.
func splitMSG(msg []byte) (head, text []byte, ok bool) {
	// "<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID ": six spaces.
	i := 0
	for range 6 {
		n := bytes.IndexByte(msg[i:], ' ')
		if n < 0 {
			return nil, nil, false
		}
		i += n + 1
	}
	if i >= len(msg) {
		return nil, nil, false
	}
	switch msg[i] {
	case '-':
		i++
	case '[':
		quoted := false
	scan:
		for i < len(msg) {
			switch c := msg[i]; {
			case quoted && c == '\\':
				i += 2
				continue
			case c == '"':
				quoted = !quoted
			case !quoted && c == ']':
				if i+1 < len(msg) && msg[i+1] == '[' {
					i += 2 // the next element
					continue
				}
				i++
				break scan
			}
			i++
		}
		if quoted || i > len(msg) || msg[i-1] != ']' {
			return nil, nil, false
		}
	default:
		return nil, nil, false
	}
	switch {
	case i == len(msg):
		return msg, nil, true
	case msg[i] == ' ':
		return msg[:i], msg[i+1:], true
	}
	return nil, nil, false
}
