package azureblob

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// Event.Source values this package produces; EVENTS subjects are
// events.<source>.
const (
	SourceSignIn   = "azure.signin"
	SourceAudit    = "azure.audit"
	SourceActivity = "azure.activity"
	SourceNSGFlow  = "azure.nsgflow"
	SourceVNetFlow = "azure.vnetflow"
	SourceResource = "azure.resource"
)

// ErrSchema wraps every parse error that means "valid JSON, wrong shape";
// the reader dead-letters such records with error_type "schema".
var ErrSchema = errors.New("unexpected record schema")

// Origin says where one record was read. Key must identify the record's
// position in the blob so that reading it again gives the same key: the
// reader builds it from account, container, blob, creation time and the
// line's byte offset or the block's id. Event ids are derived from it.
type Origin struct {
	Container string    // decides the parser
	Sender    string    // "<account>/<container>/<blob>", copied to Event.Sender
	Key       string    // stable position of the record
	Received  time.Time // when Outpost read it; the fallback event time
}

// eventID derives the index-th event id of the record at o.Key.
func (o Origin) eventID(index int) string {
	h := sha256.New()
	h.Write([]byte(o.Key))
	h.Write([]byte{0})
	h.Write(strconv.AppendInt(nil, int64(index), 10))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Parse turns one record, a JSON object from a PT1H.json blob, into events:
// one per flow tuple for flow logs, one for every other category. The
// parser is chosen by container (the category in the record decides
// between the sign-in kinds). A record that is not a JSON object, or lacks
// what its category requires, is an error; nothing is returned with it.
func Parse(rec []byte, o Origin) ([]*event.Event, error) {
	rec = bytes.TrimSpace(rec)
	if len(rec) == 0 || rec[0] != '{' {
		if len(rec) > 0 && json.Valid(rec) {
			return nil, fmt.Errorf("%w: valid JSON but not an object", ErrSchema)
		}
		return nil, errors.New("decoding record: not JSON")
	}
	var env envelope
	if err := json.Unmarshal(rec, &env); err != nil {
		return nil, fmt.Errorf("decoding record: %w", err)
	}
	switch parserFor(o.Container, env.Category) {
	case kindNSG:
		return parseNSGFlow(&env, o)
	case kindVNet:
		return parseVNetFlow(&env, o)
	case kindSignIn:
		return parseSignIn(&env, o)
	case kindAudit:
		return parseAudit(&env, o)
	case kindActivity:
		return parseActivity(&env, o)
	case kindFirewall, kindKeyVault, kindWAF, kindWeb, kindAKS, kindStorage:
		return parseServiceRecord(parserFor(o.Container, env.Category), rec, &env, o)
	default:
		return parseGeneric(rec, &env, o)
	}
}

type parserKind int

const (
	kindGeneric parserKind = iota
	kindNSG
	kindVNet
	kindSignIn
	kindAudit
	kindActivity
	kindFirewall
	kindKeyVault
	kindWAF
	kindWeb
	kindAKS
	kindStorage
)

// signInKinds maps the sign-in categories (and containers) to Attrs["signin_kind"].
var signInKinds = map[string]string{
	"signinlogs":                      "interactive",
	"noninteractiveusersigninlogs":    "non_interactive",
	"serviceprincipalsigninlogs":      "service_principal",
	"managedidentitysigninlogs":       "managed_identity",
	"adfssigninlogs":                  "adfs",
	"microsoftserviceprincipalsignin": "service_principal",
}

func parserFor(container, category string) parserKind {
	// The services' categories say what a record is, whatever container
	// it was copied to.
	if k, ok := serviceKinds[strings.ToLower(category)]; ok {
		return k
	}
	switch container {
	case "insights-logs-networksecuritygroupflowevent":
		return kindNSG
	case "insights-logs-flowlogflowevent":
		return kindVNet
	case "insights-activity-logs":
		return kindActivity
	case "insights-logs-auditlogs":
		return kindAudit
	}
	if _, ok := signInKinds[strings.TrimPrefix(container, "insights-logs-")]; ok {
		return kindSignIn
	}
	if k, ok := serviceKinds[strings.TrimPrefix(container, "insights-logs-")]; ok {
		return k
	}
	// Outside the well-known containers (a renamed copy, a custom
	// prefix), the record's own category decides.
	cat := strings.ToLower(category)
	switch {
	case cat == "networksecuritygroupflowevent":
		return kindNSG
	case cat == "flowlogflowevent":
		return kindVNet
	case cat == "auditlogs":
		return kindAudit
	}
	if _, ok := signInKinds[cat]; ok {
		return kindSignIn
	}
	if k, ok := serviceKinds[cat]; ok {
		return k
	}
	return kindGeneric
}

// envelope is the resource-log schema every exported record shares. Fields
// Azure spells two ways (Level/level, resourceId/resourceid) or sends
// either as an object or as a JSON string (identity, properties) are
// normalized by their types.
type envelope struct {
	Time              string     `json:"time"`
	ResourceID        string     `json:"resourceId"`
	OperationName     string     `json:"operationName"`
	Category          string     `json:"category"`
	ResultType        flexString `json:"resultType"`
	ResultSignature   flexString `json:"resultSignature"`
	ResultDescription string     `json:"resultDescription"`
	CallerIPAddress   string     `json:"callerIpAddress"`
	CorrelationID     string     `json:"correlationId"`
	Identity          flexObject `json:"identity"`
	Level             flexString `json:"level"`
	Location          string     `json:"location"`
	TenantID          string     `json:"tenantId"`
	Properties        flexObject `json:"properties"`

	// Flow logs.
	MacAddress        string          `json:"macAddress"`
	FlowLogResourceID string          `json:"flowLogResourceID"`
	TargetResourceID  string          `json:"targetResourceID"`
	FlowRecords       json.RawMessage `json:"flowRecords"`
}

// encoding/json matches keys case-insensitively when there is no exact
// match, so "Level":4 fills Level and "resourceid" fills ResourceID; the
// parsers rely on that.

// flexString is a JSON string or number, kept as its text.
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || bytes.Equal(b, []byte("null")):
		*f = ""
	case b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = flexString(s)
	default:
		*f = flexString(b) // number, bool: its literal text
	}
	return nil
}

// flexObject is a JSON object, or a JSON string that holds one (Activity
// Log records sometimes carry identity and properties that way). Anything
// else (a plain string such as a sign-in's identity display name) is kept
// in Text.
type flexObject struct {
	Raw  json.RawMessage // the object, nil if none
	Text string          // a string that is not an object
}

func (f *flexObject) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || bytes.Equal(b, []byte("null")):
	case b[0] == '{':
		f.Raw = append(json.RawMessage(nil), b...)
	case b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if t := strings.TrimSpace(s); strings.HasPrefix(t, "{") && json.Valid([]byte(t)) {
			f.Raw = json.RawMessage(t)
		} else {
			f.Text = s
		}
	default:
		f.Text = string(b)
	}
	return nil
}

// decode unmarshals the object into v; a missing object leaves v zero.
func (f flexObject) decode(v any) error {
	if f.Raw == nil {
		return nil
	}
	if err := json.Unmarshal(f.Raw, v); err != nil {
		return fmt.Errorf("%w: %v", ErrSchema, err)
	}
	return nil
}

// parseTime reads Azure's timestamps: RFC 3339 with up to 7 fractional
// digits, with Z or an offset. ok is false for anything else.
func parseTime(s string) (time.Time, bool) {
	if s == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(s))
	if err != nil {
		// Some exports omit the zone; they are UTC.
		t, err = time.Parse("2006-01-02T15:04:05.999999999", strings.TrimSpace(s))
		if err != nil {
			return time.Time{}, false
		}
	}
	return t.UTC(), true
}

// eventTime picks the first parsable time, else the receive time.
func eventTime(o Origin, candidates ...string) time.Time {
	for _, c := range candidates {
		if t, ok := parseTime(c); ok {
			return t
		}
	}
	return o.Received
}

// cleanIP normalizes an address as Azure writes it: "a.b.c.d", "a.b.c.d:port",
// "[v6]:port" or a bare IPv6 address. It returns "" for anything that is not
// an address. port is 0 when there is none.
func cleanIP(s string) (ip string, port int) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", 0
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().String(), 0
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().String(), int(ap.Port())
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil {
			return a.Unmap().String(), 0
		}
	}
	return "", 0
}

// newEvent starts an event with what every parser sets.
func newEvent(o Origin, index int, source string, t time.Time) *event.Event {
	return &event.Event{
		ID:       o.eventID(index),
		Source:   source,
		Time:     t,
		Received: o.Received,
		Sender:   o.Sender,
		Severity: 6, // informational unless the record says otherwise
		Attrs:    make(map[string]string, 8),
	}
}

// setAttr stores non-empty values only, capped so one record cannot blow
// up an event.
func setAttr(ev *event.Event, k, v string) {
	if v == "" {
		return
	}
	ev.Attrs[k] = clipUTF8(v, maxAttrLen)
}

const maxAttrLen = 1024

// lastSegment returns the resource name at the end of an ARM id.
func lastSegment(id string) string {
	id = strings.TrimRight(id, "/")
	if i := strings.LastIndexByte(id, '/'); i >= 0 {
		return id[i+1:]
	}
	return id
}

// armPart returns the segment after name (case-insensitive) in an ARM id,
// e.g. armPart(id, "resourceGroups").
func armPart(id, name string) string {
	parts := strings.Split(id, "/")
	for i := 0; i+1 < len(parts); i++ {
		if strings.EqualFold(parts[i], name) {
			return parts[i+1]
		}
	}
	return ""
}

// outcomeOf maps Azure's result words to Event.Outcome.
func outcomeOf(s string) string {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "success", "succeeded", "0":
		return "success"
	case "failure", "failed", "fail", "error":
		return "failure"
	}
	return ""
}

// levelSeverity maps a resource-log level (word or number) to syslog severity.
func levelSeverity(level string) int {
	switch strings.ToLower(strings.TrimSpace(level)) {
	case "critical", "1":
		return 2
	case "error", "2":
		return 3
	case "warning", "3":
		return 4
	}
	return 6
}
