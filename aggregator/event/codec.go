package event

import (
	"fmt"

	"github.com/outpost-siem/outpost/aggregator/internal/wire"
)

// The binary encodings of Event and Match on the bus (inside EVENTS and
// MATCHES batches; see aggregator/bus). Each record starts with its format
// version; fields follow in declaration order, strings length-prefixed,
// times as wire.AppendTime. ALERTS and DEADLETTER stay JSON: they are read
// by people and other tools, and carry a few messages a second.
const (
	eventV1 = 1
	matchV1 = 1
)

// AppendEvent appends ev's binary encoding to b.
func AppendEvent(b []byte, ev *Event) []byte {
	b = append(b, eventV1)
	b = wire.AppendString(b, ev.ID)
	b = wire.AppendString(b, ev.Source)
	b = wire.AppendTime(b, ev.Time)
	b = wire.AppendTime(b, ev.Received)
	b = wire.AppendString(b, ev.Sender)
	b = wire.AppendString(b, ev.Host)
	b = wire.AppendString(b, ev.App)
	b = wire.AppendString(b, ev.ProcID)
	b = wire.AppendString(b, ev.MsgID)
	b = wire.AppendVarint(b, int64(ev.Facility))
	b = wire.AppendVarint(b, int64(ev.Severity))
	b = wire.AppendString(b, ev.Message)
	b = wire.AppendString(b, ev.Category)
	b = wire.AppendString(b, ev.Action)
	b = wire.AppendString(b, ev.Outcome)
	b = wire.AppendString(b, ev.User)
	b = wire.AppendString(b, ev.SrcIP)
	b = wire.AppendVarint(b, int64(ev.SrcPort))
	b = wire.AppendString(b, ev.DstIP)
	b = wire.AppendVarint(b, int64(ev.DstPort))
	b = wire.AppendString(b, ev.Protocol)
	return appendMap(b, ev.Attrs)
}

// DecodeEvent decodes a record written by AppendEvent into ev. r is
// scratch the caller may reuse across records (nil is fine); the strings
// of ev share one copy of data.
func DecodeEvent(data []byte, ev *Event, r *wire.Reader) error {
	return decodeEvent(data, ev, r, nil)
}

// maxReusedAttrs bounds the attribute maps ReuseAttrs hands back: a
// cleared map keeps its size, and ranging over or clearing it costs that,
// so one record with many attributes is not paid for by every later one.
const maxReusedAttrs = 32

// ReuseAttrs returns m emptied, for the next event's attributes, or nil
// (make a new one) when m is nil or held more than maxReusedAttrs entries.
// The caller must be done with what m held.
func ReuseAttrs(m map[string]string) map[string]string {
	if len(m) > maxReusedAttrs {
		return nil
	}
	clear(m)
	return m
}

// DecodeEventReusing is DecodeEvent decoding the attributes into ev's
// Attrs map (ReuseAttrs): for a caller that decodes record after record
// into one Event and keeps neither the event nor its map
// (bus.DecodeEvents). The map left may be empty rather than nil.
func DecodeEventReusing(data []byte, ev *Event, r *wire.Reader) error {
	return decodeEvent(data, ev, r, ReuseAttrs(ev.Attrs))
}

func decodeEvent(data []byte, ev *Event, r *wire.Reader, attrs map[string]string) error {
	r, err := open(data, r, true, eventV1, "event")
	if err != nil {
		return err
	}
	*ev = Event{
		ID:       r.String(),
		Source:   r.String(),
		Time:     r.Time(),
		Received: r.Time(),
		Sender:   r.String(),
		Host:     r.String(),
		App:      r.String(),
		ProcID:   r.String(),
		MsgID:    r.String(),
		Facility: r.Int(),
		Severity: r.Int(),
		Message:  r.String(),
		Category: r.String(),
		Action:   r.String(),
		Outcome:  r.String(),
		User:     r.String(),
		SrcIP:    r.String(),
		SrcPort:  r.Int(),
		DstIP:    r.String(),
		DstPort:  r.Int(),
		Protocol: r.String(),
	}
	ev.Attrs = readMapInto(r, attrs)
	if err := r.Done(); err != nil {
		return fmt.Errorf("decoding event: %w", err)
	}
	return nil
}

// AppendMatch appends m's binary encoding to b.
func AppendMatch(b []byte, m *Match) []byte {
	b = append(b, matchV1)
	b = wire.AppendString(b, m.RuleID)
	b = wire.AppendString(b, m.Key)
	b = wire.AppendTime(b, m.Time)
	b = wire.AppendString(b, m.EventID)
	b = wire.AppendVarint(b, int64(m.Step))
	b = wire.AppendString(b, m.Value)
	b = wire.AppendTime(b, m.Seen)
	if m.rawFields != nil {
		return append(b, m.rawFields...)
	}
	return appendMap(b, m.Fields)
}

// EncodeFields is the encoding of a match's carried fields (names[i] =
// values[i], the empty values left out), for SetEncodedFields: building it
// costs one allocation, a map several.
func EncodeFields(names, values []string) []byte {
	n, size := 0, 1
	for i, v := range values {
		if v != "" {
			n++
			size += len(names[i]) + len(v) + 4
		}
	}
	if n == 0 {
		return nil
	}
	b := wire.AppendUvarint(make([]byte, 0, size), uint64(n))
	for i, v := range values {
		if v != "" {
			b = wire.AppendString(b, names[i])
			b = wire.AppendString(b, v)
		}
	}
	return b
}

// SetEncodedFields gives m the fields EncodeFields encoded; CarriedFields
// decodes them when asked, and AppendMatch copies them as they are.
func (m *Match) SetEncodedFields(b []byte) { m.Fields, m.rawFields = nil, b }

// DecodeMatch decodes a record written by AppendMatch into m. Every string
// is its own copy: the windows keep ids and keys for long, and must not
// keep whole records alive with them. r is reusable scratch (nil is fine).
func DecodeMatch(data []byte, m *Match, r *wire.Reader) error {
	if err := DecodeMatchLazy(data, m, r); err != nil {
		return err
	}
	m.CarriedFields()
	return nil
}

// DecodeMatchLazy is DecodeMatch leaving Fields encoded until
// CarriedFields is called; until then m refers to data, which must not
// change.
func DecodeMatchLazy(data []byte, m *Match, r *wire.Reader) error {
	r, err := open(data, r, false, matchV1, "match")
	if err != nil {
		return err
	}
	*m = Match{
		RuleID:  r.String(),
		Key:     r.String(),
		Time:    r.Time(),
		EventID: r.String(),
		Step:    r.Int(),
		Value:   r.String(),
		Seen:    r.Time(),
	}
	m.rawFields = r.Rest()
	if err := skipMap(r); err != nil {
		return fmt.Errorf("decoding match: %w", err)
	}
	if err := r.Done(); err != nil {
		return fmt.Errorf("decoding match: %w", err)
	}
	return nil
}

// open starts reading a record: r (or a new Reader) over data, past its
// version byte, which must be version.
func open(data []byte, r *wire.Reader, shared bool, version byte, what string) (*wire.Reader, error) {
	if r == nil {
		r = new(wire.Reader)
	}
	r.Reset(data, shared)
	if v := r.Byte(); v != version && r.Err() == nil {
		return nil, fmt.Errorf("%s encoding version %d unknown", what, v)
	}
	return r, nil
}

func appendMap(b []byte, m map[string]string) []byte {
	b = wire.AppendUvarint(b, uint64(len(m)))
	for k, v := range m {
		b = wire.AppendString(b, k)
		b = wire.AppendString(b, v)
	}
	return b
}

// skipMap checks and skips appendMap's encoding.
func skipMap(r *wire.Reader) error {
	n := r.Count(2)
	for range 2 * n {
		r.Skip()
	}
	return r.Err()
}

// readMap reads appendMap's encoding; an empty map reads as nil, as JSON's
// omitempty leaves it.
func readMap(r *wire.Reader) map[string]string {
	return readMapInto(r, nil)
}

// readMapInto is readMap filling m, empty, if it is not nil (and then
// returning it even when there is nothing to read).
func readMapInto(r *wire.Reader, m map[string]string) map[string]string {
	n := r.Count(2)
	if n == 0 {
		return m
	}
	if m == nil {
		m = make(map[string]string, n)
	}
	for range n {
		k := r.String()
		m[k] = r.String()
	}
	return m
}
