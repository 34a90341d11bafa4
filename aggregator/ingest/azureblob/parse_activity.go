package azureblob

import (
	"encoding/json"
	"sort"
	"strings"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// Claim URIs in an Activity Log record's identity.claims.
const (
	claimUPN  = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
	claimName = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
)

// activityIdentity is identity in the export shape: claims of the caller's
// token and the authorization that let the call through.
type activityIdentity struct {
	Authorization struct {
		Scope    string `json:"scope"`
		Action   string `json:"action"`
		Evidence struct {
			Role          string `json:"role"`
			PrincipalID   string `json:"principalId"`
			PrincipalType string `json:"principalType"`
		} `json:"evidence"`
	} `json:"authorization"`
	Claims map[string]json.RawMessage `json:"claims"`
}

func (id *activityIdentity) claim(name string) string {
	var s string
	if raw, ok := id.Claims[name]; ok && json.Unmarshal(raw, &s) == nil {
		return s
	}
	return ""
}

// activityProperties holds the properties the parser maps, of both
// administrative records and Security (Defender for Cloud alert) records.
type activityProperties struct {
	EventCategory        string     `json:"eventCategory"`
	StatusCode           string     `json:"statusCode"`
	Entity               string     `json:"entity"`
	Message              string     `json:"message"`
	EventName            flexObject `json:"eventName"` // a string, or {"value":...} in REST-shaped records
	AlertDisplayName     string     `json:"alertDisplayName"`
	Severity             string     `json:"severity"`
	CompromisedEntity    string     `json:"compromisedEntity"`
	Intent               string     `json:"intent"`
	AttackedResourceType string     `json:"attackedResourceType"`
	AlertType            string     `json:"alertType"`
	SystemAlertID        string     `json:"systemAlertId"`
}

// parseActivity maps one Azure Activity Log record (diagnostic-settings
// export shape). Records of category Security are Defender for Cloud
// alerts and become category "alert" events.
func parseActivity(env *envelope, o Origin) ([]*event.Event, error) {
	var id activityIdentity
	if err := env.Identity.decode(&id); err != nil {
		return nil, err
	}
	var p activityProperties
	if err := env.Properties.decode(&p); err != nil {
		return nil, err
	}
	ev := newEvent(o, 0, SourceActivity, eventTime(o, env.Time))
	cat := env.Category
	if cat == "" {
		cat = p.EventCategory
	}
	ev.Category = activityCategory(cat)
	ev.Action = strings.ToLower(env.OperationName)
	ev.MsgID = env.OperationName
	ev.Outcome = outcomeOf(string(env.ResultType))
	ev.Severity = levelSeverity(string(env.Level))
	// The export has no top-level caller: the actor is in the token's
	// claims (upn for users, name or appid otherwise).
	ev.User = firstNonEmpty(id.claim(claimUPN), id.claim(claimName), id.claim("name"), id.claim("appid"))
	ev.SrcIP, ev.SrcPort = cleanIP(firstNonEmpty(env.CallerIPAddress, id.claim("ipaddr")))
	ev.Host = lastSegment(env.ResourceID)
	ev.App = providerOf(env.OperationName)
	ev.Message = firstNonEmpty(env.ResultDescription, p.Message, env.OperationName)
	if strings.EqualFold(cat, "Security") {
		name := firstNonEmpty(p.AlertDisplayName, eventName(p.EventName), env.OperationName)
		ev.Message = name
		ev.Host = firstNonEmpty(p.CompromisedEntity, ev.Host)
		ev.Severity = alertSeverity(p.Severity)
		setAttr(ev, "alert_name", name)
		setAttr(ev, "alert_severity", p.Severity)
		setAttr(ev, "alert_type", p.AlertType)
		setAttr(ev, "alert_id", p.SystemAlertID)
		setAttr(ev, "compromised_entity", p.CompromisedEntity)
		setAttr(ev, "intent", p.Intent)
		setAttr(ev, "attacked_resource_type", p.AttackedResourceType)
	}
	setAttr(ev, "azure_category", cat)
	setAttr(ev, "resource_id", env.ResourceID)
	setAttr(ev, "subscription", armPart(env.ResourceID, "subscriptions"))
	setAttr(ev, "resource_group", strings.ToLower(armPart(env.ResourceID, "resourceGroups")))
	setAttr(ev, "result_type", string(env.ResultType))
	setAttr(ev, "result_signature", string(env.ResultSignature))
	setAttr(ev, "status_code", p.StatusCode)
	setAttr(ev, "correlation_id", env.CorrelationID)
	setAttr(ev, "level", string(env.Level))
	setAttr(ev, "role", id.Authorization.Evidence.Role)
	setAttr(ev, "principal_type", id.Authorization.Evidence.PrincipalType)
	setAttr(ev, "principal_id", id.Authorization.Evidence.PrincipalID)
	setAttr(ev, "scope", id.Authorization.Scope)
	setAttr(ev, "app_id", id.claim("appid"))
	return []*event.Event{ev}, nil
}

// activityCategory maps the Activity Log category to Event.Category.
func activityCategory(cat string) string {
	switch strings.ToLower(cat) {
	case "administrative", "write", "delete", "action":
		return "configuration"
	case "security":
		return "alert"
	case "":
		return "activity"
	}
	return strings.ToLower(cat) // policy, servicehealth, resourcehealth, autoscale, recommendation, alert
}

// providerOf returns the resource provider of an operation name, e.g.
// "microsoft.network" of "MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/WRITE".
func providerOf(op string) string {
	if i := strings.IndexByte(op, '/'); i > 0 {
		return strings.ToLower(op[:i])
	}
	return ""
}

func eventName(f flexObject) string {
	if f.Text != "" {
		return f.Text
	}
	var v struct {
		Value          string `json:"value"`
		LocalizedValue string `json:"localizedValue"`
	}
	_ = f.decode(&v)
	return firstNonEmpty(v.LocalizedValue, v.Value)
}

// alertSeverity maps Defender's alert severity to syslog severity.
func alertSeverity(s string) int {
	switch strings.ToLower(s) {
	case "high":
		return 2
	case "medium":
		return 3
	case "low":
		return 4
	}
	return 6
}

// parseGeneric maps any other resource-log category: the envelope fills
// the typed fields it can, and the scalar top-level fields and properties
// go to Attrs (bounded).
func parseGeneric(rec []byte, env *envelope, o Origin) ([]*event.Event, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(rec, &top); err != nil {
		return nil, err
	}
	ev := newEvent(o, 0, SourceResource, eventTime(o, env.Time, stringField(top, "timeStamp"), stringField(top, "TimeGenerated")))
	ev.Category = strings.ToLower(env.Category)
	ev.Action = env.OperationName
	ev.MsgID = env.OperationName
	ev.Outcome = outcomeOf(string(env.ResultType))
	ev.Severity = levelSeverity(string(env.Level))
	ev.Host = lastSegment(env.ResourceID)
	ev.Message = env.ResultDescription
	ev.SrcIP, ev.SrcPort = cleanIP(env.CallerIPAddress)
	if env.Identity.Text != "" {
		ev.User = env.Identity.Text
	}
	var props map[string]json.RawMessage
	_ = env.Properties.decode(&props)
	if ev.SrcIP == "" {
		for _, k := range []string{"clientIP", "clientIp", "callerIpAddress", "CallerIPAddress", "ipAddress", "requesterIpAddress"} {
			if ip, port := cleanIP(stringField(props, k)); ip != "" {
				ev.SrcIP, ev.SrcPort = ip, port
				break
			}
		}
	}
	setAttr(ev, "azure_category", env.Category)
	setAttr(ev, "resource_id", env.ResourceID)
	flattenInto(ev, "", top, "properties")
	flattenInto(ev, "properties.", props, "")
	return []*event.Event{ev}, nil
}

// maxGenericAttrs bounds the attributes a generic record adds.
const maxGenericAttrs = 64

// flattenInto copies scalar fields of m into ev.Attrs as prefix+key, in
// key order so the result is deterministic, up to maxGenericAttrs.
func flattenInto(ev *event.Event, prefix string, m map[string]json.RawMessage, skip string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != skip {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if len(ev.Attrs) >= maxGenericAttrs {
			return
		}
		if v, ok := scalar(m[k]); ok {
			setAttr(ev, prefix+k, v)
		}
	}
}

// scalar renders a JSON string, number or bool; objects and arrays are not
// scalars.
func scalar(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 {
		return "", false
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return s, true
	case '{', '[', 'n':
		return "", false
	}
	return string(raw), true
}

func stringField(m map[string]json.RawMessage, k string) string {
	if v, ok := scalar(m[k]); ok {
		return v
	}
	return ""
}
