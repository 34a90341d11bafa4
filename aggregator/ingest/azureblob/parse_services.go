package azureblob

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// Parsers for the diagnostic categories of Azure services beyond Entra ID
// and the Activity Log: Azure Firewall (legacy free-text and structured
// AZFW* records), Key Vault AuditEvent, Application Gateway and Front Door
// WAF and access logs, AKS kube-audit and Storage read/write/delete.
// docs/azure.md lists what each fills. Field names are read without regard
// to case: the services are not consistent (clientIp / clientIP).

// Event.Source values of these categories.
const (
	SourceFirewall = "azure.firewall"
	SourceKeyVault = "azure.keyvault"
	SourceWAF      = "azure.waf"
	SourceWeb      = "azure.web" // Application Gateway and Front Door access logs
	SourceAKS      = "azure.aks"
	SourceStorage  = "azure.storage"
)

// serviceKinds maps a category (lower case, as in the container name) to
// its parser.
var serviceKinds = map[string]parserKind{
	"azurefirewallnetworkrule": kindFirewall, "azurefirewallapplicationrule": kindFirewall, "azurefirewalldnsproxy": kindFirewall,
	"azfwnetworkrule": kindFirewall, "azfwapplicationrule": kindFirewall, "azfwnatrule": kindFirewall, "azfwthreatintel": kindFirewall,
	"azfwidpssignature": kindFirewall, "azfwdnsquery": kindFirewall,
	"auditevent":                         kindKeyVault,
	"applicationgatewayfirewalllog":      kindWAF,
	"frontdoorwebapplicationfirewalllog": kindWAF,
	"applicationgatewayaccesslog":        kindWeb,
	"frontdooraccesslog":                 kindWeb,
	"kube-audit":                         kindAKS,
	"kube-audit-admin":                   kindAKS,
	"storageread":                        kindStorage, "storagewrite": kindStorage, "storagedelete": kindStorage,
}

// props is a JSON object whose keys are matched without regard to case.
type props map[string]json.RawMessage

func decodeProps(raw json.RawMessage) props {
	var m map[string]json.RawMessage
	if len(raw) == 0 || json.Unmarshal(raw, &m) != nil {
		return props{}
	}
	p := make(props, len(m))
	orig := make(map[string]string, len(m))
	for k, v := range m {
		lk := strings.ToLower(k)
		// Of several spellings of one key, the first by byte order wins,
		// the same every time.
		if o, dup := orig[lk]; !dup || k < o {
			p[lk], orig[lk] = v, k
		}
	}
	return p
}

// str returns the first of keys that holds a string or number, as text.
func (p props) str(keys ...string) string {
	for _, k := range keys {
		if v, ok := scalar(p[strings.ToLower(k)]); ok && v != "" {
			return v
		}
	}
	return ""
}

func (p props) obj(key string) props { return decodeProps(p[strings.ToLower(key)]) }

// topProps decodes the whole record, for envelope keys the envelope type
// does not hold (timeStamp, uri, statusCode).
func topProps(rec []byte) props { return decodeProps(rec) }

// httpOutcome: a status below 400 succeeded.
func httpOutcome(status string) string {
	n, err := strconv.Atoi(status)
	switch {
	case err != nil || n == 0:
		return ""
	case n < 400:
		return "success"
	}
	return "failure"
}

// verdict maps an appliance's action word to Action and Outcome.
func verdict(ev *event.Event, action string) {
	ev.Action = strings.ToLower(action)
	switch ev.Action {
	case "allow", "allowed", "accept":
		ev.Outcome = "success"
	case "deny", "denied", "drop", "block", "blocked", "reject", "jschallengeblock":
		ev.Outcome = "failure"
	}
}

func parseServiceRecord(kind parserKind, rec []byte, env *envelope, o Origin) ([]*event.Event, error) {
	top := topProps(rec)
	p := decodeProps(env.Properties.Raw)
	t := eventTime(o, env.Time, top.str("timeStamp", "timestamp"))
	var ev *event.Event
	switch kind {
	case kindFirewall:
		ev = firewallEvent(env, p, o, t)
	case kindKeyVault:
		ev = keyVaultEvent(env, p, o, t)
	case kindWAF:
		ev = wafEvent(env, p, o, t)
	case kindWeb:
		ev = webEvent(env, p, top, o, t)
	case kindAKS:
		var ok bool
		if ev, ok = aksEvent(env, p, o, t); !ok {
			// Not an audit event (a log line of the API server, a
			// truncated record): kept as it is, and said so.
			ev = newEvent(o, 0, SourceAKS, t)
			ev.Category = "kubernetes"
			var log string
			if json.Unmarshal(p["log"], &log) != nil {
				log = string(p["log"])
			}
			ev.Message = log
			setAttr(ev, "parse_warning", "not a Kubernetes audit event: kept as its text")
		}
	case kindStorage:
		ev = storageEvent(env, p, top, o, t)
	}
	ev.Host = lastSegment(env.ResourceID)
	ev.Message, ev.User = clipUTF8(ev.Message, maxAttrLen), clipUTF8(ev.User, maxAttrLen)
	setAttr(ev, "azure_category", env.Category)
	setAttr(ev, "resource_id", env.ResourceID)
	return []*event.Event{ev}, nil
}

// Legacy Azure Firewall records: properties.msg, free text.
var (
	fwRequest = regexp.MustCompile(`^(.+?) +request from (\S+) to (\S+?)\.(?:\s|$)\s*(?:Url: (\S+?)\.(?:\s|$)\s*)?(?:Action: (\w+)\.*)?\s*(.*)$`)
	fwNAT     = regexp.MustCompile(`^(\S+) request from (\S+) to (\S+) was DNAT'ed to (\S+?)\.?(?: (.*))?$`)
	fwRule    = regexp.MustCompile(`(?:^|\. )Rule: (.+?)(?:\. Web Category: .*)?$`)
	fwTI      = regexp.MustCompile(`ThreatIntel: (.+)$`)
	fwIDS     = regexp.MustCompile(`Signature: (\S+?)\. IDS: (.+?)\. Priority: (\d+)\. Classification: (.+?)\.?$`)
)

func firewallEvent(env *envelope, p props, o Origin, t time.Time) *event.Event {
	ev := newEvent(o, 0, SourceFirewall, t)
	ev.Category = "network"
	ev.MsgID = env.OperationName
	if msg := p.str("msg"); msg != "" {
		firewallMsg(ev, msg)
		return ev
	}
	// Structured AZFW* records.
	ev.Protocol = strings.ToLower(p.str("Protocol"))
	ev.SrcIP, _ = cleanIP(p.str("SourceIp"))
	ev.SrcPort = atoiPort(p.str("SourcePort"))
	ev.DstIP, _ = cleanIP(p.str("DestinationIp"))
	ev.DstPort = atoiPort(p.str("DestinationPort"))
	if a := p.str("Action"); a != "" {
		verdict(ev, a)
	} else if p.str("TranslatedIp") != "" {
		ev.Action = "dnat"
	}
	setAttr(ev, event.FieldRuleName, p.str("Rule"))
	setAttr(ev, event.FieldURL, p.str("TargetUrl", "Url"))
	setAttr(ev, event.FieldDNSQuery, strings.TrimSuffix(p.str("QueryName"), "."))
	setAttr(ev, "fqdn", p.str("Fqdn"))
	setAttr(ev, "policy", p.str("Policy"))
	setAttr(ev, "rule_collection", p.str("RuleCollection"))
	setAttr(ev, "action_reason", p.str("ActionReason"))
	setAttr(ev, "web_category", p.str("WebCategory"))
	setAttr(ev, "translated_ip", p.str("TranslatedIp"))
	if d := p.str("ThreatDescription"); d != "" {
		ev.Category = "threat_intel"
		setAttr(ev, "threat", d)
	}
	if sid := p.str("SignatureId"); sid != "" {
		ev.Category = "ids"
		setAttr(ev, event.FieldEventCode, sid)
		setAttr(ev, "signature", p.str("Description"))
		setAttr(ev, "signature_category", p.str("Category"))
		setAttr(ev, "signature_severity", p.str("Severity"))
	}
	if strings.HasPrefix(strings.ToLower(env.Category), "azfwdns") {
		ev.Category, ev.Action = "dns", "dns_query"
		setAttr(ev, "response_code", p.str("ResponseCode"))
	}
	return ev
}

// firewallMsg reads a legacy record's text.
func firewallMsg(ev *event.Event, msg string) {
	ev.Message = msg
	if rest, ok := strings.CutPrefix(msg, "DNS Request: "); ok {
		ev.Category, ev.Action = "dns", "dns_query"
		src, rest, _ := strings.Cut(rest, " - ")
		ev.SrcIP, ev.SrcPort = splitHostPort(src)
		if f := strings.Fields(rest); len(f) >= 4 {
			setAttr(ev, event.FieldDNSQuery, strings.TrimSuffix(f[3], "."))
		}
		return
	}
	if m := fwNAT.FindStringSubmatch(msg); m != nil {
		ev.Protocol, ev.Action = strings.ToLower(m[1]), "dnat"
		ev.SrcIP, ev.SrcPort = splitHostPort(m[2])
		ev.DstIP, ev.DstPort = splitHostPort(m[3])
		ip, port := splitHostPort(m[4])
		setAttr(ev, "translated_ip", ip)
		if port != 0 {
			setAttr(ev, "translated_port", strconv.Itoa(port))
		}
		return
	}
	m := fwRequest.FindStringSubmatch(msg)
	if m == nil {
		return
	}
	if f := strings.Fields(m[1]); len(f) > 0 { // "ICMP Type=8": the first word
		ev.Protocol = strings.ToLower(f[0])
	}
	ev.SrcIP, ev.SrcPort = splitHostPort(m[2])
	dst, dport := splitHostPort(m[3])
	if dst != "" {
		ev.DstIP = dst
	} else if host, _, ok := strings.Cut(m[3], ":"); ok || host != "" {
		setAttr(ev, "fqdn", host) // an application rule's FQDN
	}
	ev.DstPort = dport
	setAttr(ev, event.FieldURL, m[4])
	if m[5] != "" {
		verdict(ev, m[5])
	}
	tail := m[6]
	if r := fwRule.FindStringSubmatch(tail); r != nil {
		setAttr(ev, event.FieldRuleName, r[1])
	}
	if ti := fwTI.FindStringSubmatch(tail); ti != nil {
		ev.Category = "threat_intel"
		setAttr(ev, "threat", ti[1])
	}
	if ids := fwIDS.FindStringSubmatch(tail); ids != nil {
		ev.Category = "ids"
		setAttr(ev, event.FieldEventCode, ids[1])
		setAttr(ev, "signature", ids[2])
		setAttr(ev, "signature_severity", ids[3])
		setAttr(ev, "signature_category", ids[4])
	}
}

// splitHostPort reads "a.b.c.d:port" (either part may be empty) into a
// normalized address and a port; "" and 0 for what is not one.
func splitHostPort(s string) (string, int) {
	s = strings.TrimSpace(s)
	if ip, port := cleanIP(s); ip != "" {
		return ip, port
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		ip, _ := cleanIP(s[:i])
		return ip, atoiPort(s[i+1:])
	}
	return "", 0
}

func atoiPort(s string) int {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > 65535 {
		return 0
	}
	return n
}

// Key Vault AuditEvent: one data-plane call.
func keyVaultEvent(env *envelope, p props, o Origin, t time.Time) *event.Event {
	ev := newEvent(o, 0, SourceKeyVault, t)
	ev.Category = "data_access"
	ev.MsgID = env.OperationName
	ev.Action = strings.ToLower(env.OperationName)
	ev.SrcIP, ev.SrcPort = cleanIP(env.CallerIPAddress)
	status := p.str("httpStatusCode")
	ev.Outcome = httpOutcome(status)
	if ev.Outcome == "" {
		ev.Outcome = outcomeOf(string(env.ResultType))
	}
	setAttr(ev, event.FieldHTTPStatus, status)
	setAttr(ev, event.FieldURL, p.str("requestUri"))
	setAttr(ev, "object_id", p.str("id"))
	setAttr(ev, "result_signature", string(env.ResultSignature))
	setAttr(ev, "user_agent", p.str("clientInfo"))
	claims := decodeProps(env.Identity.Raw).obj("claim")
	ev.User = claims.str("upn", claimUPN, "unique_name")
	setAttr(ev, "app_id", claims.str("appid"))
	setAttr(ev, "object_id_caller", claims.str("oid", "http://schemas.microsoft.com/identity/claims/objectidentifier"))
	if ev.User == "" {
		ev.User = claims.str("appid", "oid")
	}
	return ev
}

// Application Gateway and Front Door WAF: one rule hit, or the decision.
func wafEvent(env *envelope, p props, o Origin, t time.Time) *event.Event {
	ev := newEvent(o, 0, SourceWAF, t)
	ev.Category = "web"
	ev.MsgID = env.OperationName
	ev.SrcIP, _ = cleanIP(p.str("clientIp"))
	ev.SrcPort = atoiPort(p.str("clientPort"))
	verdict(ev, p.str("action"))
	setAttr(ev, event.FieldURL, p.str("requestUri"))
	setAttr(ev, event.FieldRuleName, p.str("ruleId", "ruleName"))
	ev.Message = p.str("message")
	if ev.Message == "" {
		ev.Message = p.obj("details").str("msg", "message")
	}
	setAttr(ev, "rule_group", p.str("ruleGroup"))
	setAttr(ev, "http_host", p.str("hostname", "host"))
	setAttr(ev, "transaction_id", p.str("transactionId", "trackingReference"))
	setAttr(ev, "policy", p.str("policy", "policyId"))
	setAttr(ev, "socket_ip", p.str("socketIP"))
	return ev
}

// Application Gateway and Front Door access logs: one request.
func webEvent(env *envelope, p, top props, o Origin, t time.Time) *event.Event {
	ev := newEvent(o, 0, SourceWeb, t)
	ev.Category, ev.Action = "web", "http_request"
	ev.MsgID = env.OperationName
	ev.SrcIP, _ = cleanIP(p.str("clientIP"))
	ev.SrcPort = atoiPort(p.str("clientPort"))
	status := p.str("httpStatus", "httpStatusCode")
	ev.Outcome = httpOutcome(status)
	setAttr(ev, event.FieldHTTPStatus, status)
	setAttr(ev, event.FieldHTTPMethod, p.str("httpMethod"))
	setAttr(ev, event.FieldURL, p.str("originalRequestUriWithArgs", "requestUri"))
	setAttr(ev, event.FieldBytesIn, p.str("receivedBytes", "requestBytes"))
	setAttr(ev, event.FieldBytesOut, p.str("sentBytes", "responseBytes"))
	setAttr(ev, event.FieldRuleName, top.str("ruleName"))
	setAttr(ev, "http_host", p.str("host", "hostName"))
	setAttr(ev, "user_agent", p.str("userAgent"))
	setAttr(ev, "transaction_id", p.str("transactionId", "trackingReference"))
	return ev
}

// AKS: properties.log holds a Kubernetes audit event as a JSON string.
func aksEvent(env *envelope, p props, o Origin, t time.Time) (*event.Event, bool) {
	var log string
	if json.Unmarshal(p["log"], &log) != nil {
		return nil, false
	}
	a := decodeProps(json.RawMessage(strings.TrimSpace(log)))
	if !strings.EqualFold(a.str("kind"), "Event") {
		return nil, false
	}
	ev := newEvent(o, 0, SourceAKS, eventTime(o, a.str("requestReceivedTimestamp"), env.Time))
	_ = t
	ev.Category = "kubernetes"
	ev.Action = a.str("verb")
	ev.MsgID = env.OperationName
	user := a.obj("user")
	ev.User = user.str("username")
	var ips []string
	if json.Unmarshal(a["sourceips"], &ips) == nil && len(ips) > 0 {
		ev.SrcIP, _ = cleanIP(ips[0])
	}
	ref := a.obj("objectRef")
	setAttr(ev, "k8s_resource", ref.str("resource"))
	setAttr(ev, "k8s_namespace", ref.str("namespace"))
	setAttr(ev, "k8s_name", ref.str("name"))
	setAttr(ev, "k8s_subresource", ref.str("subresource"))
	setAttr(ev, "user_agent", a.str("userAgent"))
	var groups []string
	if json.Unmarshal(user["groups"], &groups) == nil {
		setAttr(ev, "k8s_groups", strings.Join(groups, ","))
	}
	status := a.obj("responseStatus").str("code")
	ev.Outcome = httpOutcome(status)
	setAttr(ev, event.FieldHTTPStatus, status)
	setAttr(ev, event.FieldURL, a.str("requestURI"))
	setAttr(ev, "k8s_decision", a.obj("annotations").str("authorization.k8s.io/decision"))
	return ev, true
}

// Storage: one request to a blob, file, queue or table service.
func storageEvent(env *envelope, p, top props, o Origin, t time.Time) *event.Event {
	ev := newEvent(o, 0, SourceStorage, t)
	ev.Category = "data_access"
	ev.MsgID = env.OperationName
	ev.Action = strings.ToLower(env.OperationName)
	ev.SrcIP, ev.SrcPort = splitHostPort(strings.Trim(env.CallerIPAddress, "[]"))
	if ev.SrcIP == "" {
		// "[v6]:port"
		if h, port, ok := strings.Cut(strings.TrimPrefix(env.CallerIPAddress, "["), "]:"); ok {
			ev.SrcIP, _ = cleanIP(h)
			ev.SrcPort = atoiPort(port)
		}
	}
	status := top.str("statusCode")
	ev.Outcome = httpOutcome(status)
	setAttr(ev, event.FieldHTTPStatus, status)
	setAttr(ev, event.FieldURL, redactSAS(top.str("uri")))
	setAttr(ev, event.FieldFilePath, p.str("objectKey"))
	setAttr(ev, event.FieldBytesOut, p.str("responseBodySize"))
	setAttr(ev, "status_text", top.str("statusText"))
	setAttr(ev, "user_agent", p.str("userAgentHeader"))
	id := decodeProps(env.Identity.Raw)
	setAttr(ev, "auth_type", id.str("type"))
	req := id.obj("requester")
	ev.User = req.str("upn", "objectId", "appId")
	return ev
}

// redactSAS replaces the signature of SAS tokens in s (a URL, or any text
// holding one): it is a credential. sig= may be percent-encoded.
func redactSAS(s string) string {
	if !sasSig.MatchString(s) {
		return s
	}
	return sasSig.ReplaceAllString(s, "${1}=REDACTED")
}

var sasSig = regexp.MustCompile(`(?i)((?:^|[?&;\s"])(?:sig|%73ig|s%69g|si%67|%73%69%67))=[^&\s"]*`)
