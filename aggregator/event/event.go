// Package event holds the types that cross Outpost's bus: the normalized
// Event every source publishes to EVENTS, the Match the rule filter publishes
// to MATCHES, and the Alert the windows publish to ALERTS.
//
// It is a leaf package: every stage imports it, it imports nothing of
// Outpost's but the wire primitives. On EVENTS and MATCHES, events and
// matches travel in the binary encoding of codec.go; the `json` tags are
// their JSON form (dead letters, the HTTP API, batches written by older
// versions) and the ALERTS wire format. The `expr` tags are the names rule
// conditions use, the same as the JSON names on purpose.
package event

import (
	"net/netip"
	"time"

	"github.com/outpost-siem/outpost/aggregator/internal/wire"
)

// Event is one normalized log record.
//
// Sources fill what they know and leave the rest zero. The typed fields are
// the ones rules join and group on across sources (a Defender alert's remote
// IP, an NSG flow's source IP and a logon's IP are all SrcIP); anything else a
// source wants to keep goes in Attrs.
type Event struct {
	// ID is unique per event. Stages use it to make replays idempotent.
	ID string `json:"id" expr:"id"`
	// Source names the input kind: "syslog", later "azure.signin", ...
	Source string `json:"source" expr:"source"`
	// Time is the event time: when the record says it happened. Windows and
	// watermarks use it. Sources fall back to Received when the record has
	// no usable time.
	Time time.Time `json:"time" expr:"time"`
	// Received is when Outpost received the record (processing time).
	Received time.Time `json:"received" expr:"received"`
	// Sender is the network peer the record came from ("ip:port"), or the
	// blob it was read from.
	Sender string `json:"sender,omitempty" expr:"sender"`

	// Syslog header fields; other sources map what fits.
	Host     string `json:"host,omitempty" expr:"host"`
	App      string `json:"app,omitempty" expr:"app"`
	ProcID   string `json:"proc_id,omitempty" expr:"proc_id"`
	MsgID    string `json:"msg_id,omitempty" expr:"msg_id"`
	Facility int    `json:"facility" expr:"facility"`
	Severity int    `json:"severity" expr:"severity"`
	Message  string `json:"message,omitempty" expr:"message"`

	// Normalized security fields, filled by the source's normalizer when it
	// recognizes the record (e.g. an sshd logon line).
	Category string `json:"category,omitempty" expr:"category"` // "authentication", "network", ...
	Action   string `json:"action,omitempty" expr:"action"`     // "logon", "flow", ...
	Outcome  string `json:"outcome,omitempty" expr:"outcome"`   // "success", "failure" or ""
	User     string `json:"user,omitempty" expr:"user"`
	SrcIP    string `json:"src_ip,omitempty" expr:"src_ip"`
	SrcPort  int    `json:"src_port,omitempty" expr:"src_port"`
	DstIP    string `json:"dst_ip,omitempty" expr:"dst_ip"`
	DstPort  int    `json:"dst_port,omitempty" expr:"dst_port"`
	Protocol string `json:"protocol,omitempty" expr:"protocol"`

	// Attrs holds the open-ended rest: RFC 5424 structured data as
	// "sdid.param", source-specific extras.
	Attrs map[string]string `json:"attrs,omitempty" expr:"attrs"`

	// addrOf is the string Addr parsed last, addr and addrOK its result.
	addrOf string
	addr   netip.Addr
	addrOK bool
}

// Addr returns s (one of the event's strings) parsed as an IP address, and
// whether it is one, remembering the last it parsed: the rules' address
// helpers (cidr, is_private, in_list) read the same field of one event
// again and again. An event is evaluated by one goroutine at a time; Addr
// is not safe for concurrent use on one event.
func (ev *Event) Addr(s string) (netip.Addr, bool) {
	if s == "" {
		return netip.Addr{}, false
	}
	if s != ev.addrOf {
		a, err := netip.ParseAddr(s)
		ev.addrOf, ev.addr, ev.addrOK = s, a, err == nil
	}
	return ev.addr, ev.addrOK
}

// SeenTime is the event's time as the watermarks and windows take it: its
// own time, or its reception if that is earlier. Sender-chosen timestamps
// may not move time for others, so an event stamped ahead of its reception
// counts as received then. It is a Match's Seen.
func (ev *Event) SeenTime() time.Time {
	if !ev.Received.IsZero() && ev.Time.After(ev.Received) {
		return ev.Received
	}
	return ev.Time
}

// Match is what the rule filter publishes when one event satisfies one
// rule's single-event condition. It is small on purpose: the windows stage
// needs the rule, the group key, the event time and id, and only the fields
// the rule carries into its alert.
type Match struct {
	RuleID  string    `json:"rule"`
	Key     string    `json:"key"`
	Time    time.Time `json:"time"`
	EventID string    `json:"event_id"`
	// Step is the index of the step the event satisfied: a sequence's
	// step, or an absence rule's 0 (trigger) / 1 (expected event).
	Step int `json:"step,omitempty"`
	// Value is the rule's `field` of the event, for distinct and new_value.
	Value string `json:"value,omitempty"`
	// Seen is the event time capped at its reception: how far this match
	// may move the windows' watermark, so one sender dated in the future
	// cannot make every absence deadline pass.
	Seen   time.Time         `json:"seen,omitzero"`
	Fields map[string]string `json:"fields,omitempty"`

	// rawFields, set by DecodeMatchLazy, holds Fields still encoded: the
	// windows need them only for the few matches that raise an alert.
	rawFields []byte
}

// At is where the windows place the match in event time: its Time, or
// Seen if that is earlier. An event stamped ahead of its reception is
// placed at its reception, so one datagram dated 2099 can neither freeze
// its key's window nor pass its deadlines. Matches without Seen (written
// by older versions, or by rules test) are placed at Time.
func (m *Match) At() time.Time {
	if !m.Seen.IsZero() && m.Seen.Before(m.Time) {
		return m.Seen
	}
	return m.Time
}

// CarriedFields returns Fields, decoding them first if the match was
// decoded lazily.
func (m *Match) CarriedFields() map[string]string {
	if m.rawFields != nil {
		var r wire.Reader
		r.Reset(m.rawFields, false)
		m.Fields, m.rawFields = readMap(&r), nil
	}
	return m.Fields
}

// Alert is a derived security event, the only thing that leaves Outpost.
//
// ID is deterministic: the same rule, group key and window always give the
// same ID, so a replay after a crash produces a duplicate the forwarder and
// the SIEM can recognize (CEF externalId).
type Alert struct {
	ID          string   `json:"id"`
	RuleID      string   `json:"rule"`
	Title       string   `json:"title"`
	Description string   `json:"description,omitempty"`
	Severity    int      `json:"severity"` // 0-10, CEF's scale
	Tags        []string `json:"tags,omitempty"`
	Kind        string   `json:"kind"` // rule kind: "match", "threshold", ...

	// GroupBy names the fields the key was built from, Key is their values
	// joined; both empty for an ungrouped rule.
	GroupBy []string `json:"group_by,omitempty"`
	Key     string   `json:"key,omitempty"`

	// Evidence: how many events, the first and last event time, and (capped)
	// the ids of the events that made the rule fire.
	Count     int       `json:"count"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	EventIDs  []string  `json:"event_ids,omitempty"`
	// Values are the distinct values counted (distinct) or the new value
	// (new_value), capped.
	Values []string `json:"values,omitempty"`
	// Steps are a sequence's steps as they happened, in order.
	Steps []StepHit `json:"steps,omitempty"`

	// Fields are the event fields the rule carries into the alert, taken
	// from the most recent matching event.
	Fields map[string]string `json:"fields,omitempty"`
	// CEF holds the rule's own CEF mapping (`cef:` in the rule file): CEF
	// key → value, and "<key>Label" → the mapped field's name for custom
	// keys. The forwarder's encoder writes them in place of its defaults.
	CEF map[string]string `json:"cef,omitempty"`
}

// StepHit is one step of a sequence alert: which step, when, which event.
type StepHit struct {
	Name    string    `json:"name"`
	Time    time.Time `json:"time"`
	EventID string    `json:"event_id"`
}
