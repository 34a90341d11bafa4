package azureblob

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

var received = time.Date(2026, 3, 2, 16, 0, 0, 0, time.UTC)

// fixtures maps each testdata file to the container Azure writes it to.
var fixtures = []struct{ file, container string }{
	{"signinlogs.jsonl", "insights-logs-signinlogs"},
	{"noninteractiveusersigninlogs.jsonl", "insights-logs-noninteractiveusersigninlogs"},
	{"serviceprincipalsigninlogs.jsonl", "insights-logs-serviceprincipalsigninlogs"},
	{"managedidentitysigninlogs.jsonl", "insights-logs-managedidentitysigninlogs"},
	{"auditlogs.jsonl", "insights-logs-auditlogs"},
	{"activitylogs.jsonl", "insights-activity-logs"},
	{"nsgflow.jsonl", "insights-logs-networksecuritygroupflowevent"},
	{"vnetflow.jsonl", "insights-logs-flowlogflowevent"},
	{"keyvault_storage.jsonl", "insights-logs-auditevent"},
	{"services.jsonl", "insights-logs-azfwnetworkrule"},
}

// parseFixture parses every line of a fixture as the reader would.
func parseFixture(t *testing.T, file, container string) []*event.Event {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []*event.Event
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		o := Origin{Container: container, Sender: "acct/" + container + "/PT1H.json", Key: file + "#" + strconv.Itoa(n), Received: received}
		evs, err := Parse(sc.Bytes(), o)
		if err != nil {
			t.Fatalf("%s:%d: %v", file, n, err)
		}
		out = append(out, evs...)
	}
	return out
}

// TestParseGolden parses every fixture and compares the events with
// testdata/golden/<fixture>.json (go test -run TestParseGolden -update).
func TestParseGolden(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.file, func(t *testing.T) {
			evs := parseFixture(t, fx.file, fx.container)
			got, err := json.MarshalIndent(evs, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := filepath.Join("testdata", "golden", strings.TrimSuffix(fx.file, ".jsonl")+".json")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("events differ from %s (run with -update and review the diff):\n%s", golden, got)
			}
		})
	}
}

// TestParseMapping pins the typed fields rules rely on.
func TestParseMapping(t *testing.T) {
	type want struct {
		source, category, action, outcome, user, src string
		srcPort, dstPort                             int
		dst, protocol, host                          string
		attrs                                        map[string]string
	}
	cases := []struct {
		file, container string
		index           int
		w               want
		time            string
	}{
		{"signinlogs.jsonl", "insights-logs-signinlogs", 0, want{source: SourceSignIn, category: "authentication", action: "logon", outcome: "failure", user: "kim.jansen@fabrikam.example", src: "198.51.100.44",
			attrs: map[string]string{"signin_kind": "interactive", "result_type": "50126", "risk_level": "hidden", "app_id": "9e8d7c6b-5a49-4382-a716-0504f3e2d1c0", "country": "NL"}}, "2026-03-02T09:14:05.1234567Z"},
		{"signinlogs.jsonl", "insights-logs-signinlogs", 1, want{source: SourceSignIn, category: "authentication", action: "logon", outcome: "success", user: "kim.jansen@fabrikam.example", src: "2001:db8:4::17",
			attrs: map[string]string{"risk_level": "medium", "risk_events": "unfamiliarFeatures,anonymizedIPAddress"}}, ""},
		{"signinlogs.jsonl", "insights-logs-signinlogs", 2, want{source: SourceSignIn, outcome: "failure", category: "authentication", action: "logon", user: "admin@fabrikam.example", src: "2001:db8:4::99", srcPort: 51234}, ""},
		{"noninteractiveusersigninlogs.jsonl", "insights-logs-noninteractiveusersigninlogs", 1, want{source: SourceSignIn, category: "authentication", action: "logon", outcome: "failure", user: "svc.backup@fabrikam.example", src: "192.0.2.81",
			attrs: map[string]string{"signin_kind": "non_interactive", "interactive": "false"}}, ""},
		{"serviceprincipalsigninlogs.jsonl", "insights-logs-serviceprincipalsigninlogs", 0, want{source: SourceSignIn, category: "authentication", action: "logon", outcome: "failure", user: "deploy-pipeline", src: "203.0.113.140",
			attrs: map[string]string{"signin_kind": "service_principal", "result_type": "7000215"}}, ""},
		{"managedidentitysigninlogs.jsonl", "insights-logs-managedidentitysigninlogs", 0, want{source: SourceSignIn, category: "authentication", action: "logon", outcome: "success", user: "vm-web01", src: "10.40.2.5",
			attrs: map[string]string{"signin_kind": "managed_identity", "resource": "Azure Storage"}}, ""},
		{"auditlogs.jsonl", "insights-logs-auditlogs", 0, want{source: SourceAudit, category: "iam", action: "Add member to role", outcome: "success", user: "admin@fabrikam.example", src: "198.51.100.23",
			attrs: map[string]string{"target": "kim.jansen@fabrikam.example", "modified": "Role.DisplayName=Global Administrator", "audit_category": "RoleManagement"}}, "2026-03-02T12:00:11.1Z"},
		{"auditlogs.jsonl", "insights-logs-auditlogs", 1, want{source: SourceAudit, category: "iam", action: "Add service principal credentials", outcome: "failure", user: "automation-app",
			attrs: map[string]string{"target": "deploy-pipeline", "target_type": "ServicePrincipal"}}, ""},
		{"activitylogs.jsonl", "insights-activity-logs", 0, want{source: SourceActivity, category: "configuration", action: "microsoft.network/networksecuritygroups/securityrules/write", user: "admin@fabrikam.example", src: "198.51.100.23", srcPort: 50211, host: "ALLOW-SSH-ANY",
			attrs: map[string]string{"role": "Network Contributor", "resource_group": "rg-web", "result_type": "Start"}}, ""},
		{"activitylogs.jsonl", "insights-activity-logs", 1, want{source: SourceActivity, category: "configuration", action: "microsoft.network/networksecuritygroups/securityrules/write", outcome: "success", user: "admin@fabrikam.example", src: "2001:db8::23", srcPort: 443, host: "ALLOW-SSH-ANY",
			attrs: map[string]string{"status_code": "Created", "principal_type": "User"}}, ""},
		{"activitylogs.jsonl", "insights-activity-logs", 2, want{source: SourceActivity, category: "configuration", action: "microsoft.compute/virtualmachines/delete", outcome: "failure", user: "4d3c2b1a-0f9e-4d8c-b7a6-958473625140", src: "203.0.113.9", host: "VM-WEB01"}, ""},
		{"activitylogs.jsonl", "insights-activity-logs", 3, want{source: SourceActivity, category: "alert", action: "microsoft.security/locations/alerts/activate/action", host: "vm-web01",
			attrs: map[string]string{"alert_name": "Suspicious authentication activity", "alert_severity": "High"}}, ""},
		{"nsgflow.jsonl", "insights-logs-networksecuritygroupflowevent", 0, want{source: SourceNSGFlow, category: "network", action: "flow", outcome: "failure", src: "203.0.113.66", srcPort: 40022, dst: "10.50.0.4", dstPort: 22, protocol: "tcp", host: "NSG-WEB",
			attrs: map[string]string{"rule": "DefaultRule_DenyAllInBound", "mac": "000D3A1B2C3D", "decision": "deny", "direction": "inbound", "flow_version": "1"}}, "2026-03-02T14:00:00Z"},
		{"nsgflow.jsonl", "insights-logs-networksecuritygroupflowevent", 3, want{source: SourceNSGFlow, category: "network", action: "flow", outcome: "success", src: "192.0.2.50", srcPort: 55000, dst: "10.50.0.4", dstPort: 443, protocol: "tcp", host: "NSG-WEB",
			attrs: map[string]string{"flow_state": "end", "packets_out": "12", "bytes_out": "1840", "packets_in": "10", "bytes_in": "22011", "flow_version": "2"}}, ""},
		{"nsgflow.jsonl", "insights-logs-networksecuritygroupflowevent", 4, want{source: SourceNSGFlow, category: "network", action: "flow", outcome: "success", src: "10.50.0.4", srcPort: 61000, dst: "198.51.100.200", dstPort: 53, protocol: "udp", host: "NSG-WEB",
			attrs: map[string]string{"direction": "outbound", "flow_state": "continue", "rule": "DefaultRule_AllowInternetOutBound"}}, ""},
		{"vnetflow.jsonl", "insights-logs-flowlogflowevent", 2, want{source: SourceVNetFlow, category: "network", action: "flow", outcome: "failure", src: "203.0.113.66", srcPort: 40100, dst: "10.50.0.4", dstPort: 3389, protocol: "tcp", host: "vnet-web",
			attrs: map[string]string{"decision": "deny", "flow_state": "denied", "encryption": "NX", "acl_id": "aa11bb22-cc33-4d44-8e55-ff6600778899"}}, "2026-03-02T14:05:01Z"},
		{"vnetflow.jsonl", "insights-logs-flowlogflowevent", 3, want{source: SourceVNetFlow, category: "network", action: "flow", outcome: "failure", src: "10.50.0.9", srcPort: 5000, dst: "10.60.0.9", dstPort: 5001, protocol: "udp", host: "vnet-web",
			attrs: map[string]string{"rule": "unspecified", "encryption": "NX_NOT_ENCRYPTED"}}, ""},
		{"keyvault_storage.jsonl", "insights-logs-auditevent", 0, want{source: SourceKeyVault, category: "data_access", action: "secretget", outcome: "success", user: "admin@fabrikam.example", src: "192.0.2.200", host: "KV-FABRIKAM",
			attrs: map[string]string{"user_agent": "azure-cli/2.60", "http_status": "200", "object_id": "https://kv-fabrikam.vault.azure.net/secrets/db-password"}}, ""},
		{"services.jsonl", "insights-logs-azurefirewallnetworkrule", 0, want{source: SourceFirewall, category: "network", action: "deny", outcome: "failure", src: "203.0.113.40", srcPort: 50306, dst: "10.50.0.4", dstPort: 3389, protocol: "tcp", host: "FW-HUB",
			attrs: map[string]string{"rule_name": "deny-rdp"}}, ""},
		{"services.jsonl", "insights-logs-azfwthreatintel", 7, want{source: SourceFirewall, category: "threat_intel", action: "deny", outcome: "failure", src: "10.50.1.9", srcPort: 50112, dst: "198.51.100.66", dstPort: 443, protocol: "tcp", host: "FW-HUB",
			attrs: map[string]string{"threat": "Destination reported by Threat Intelligence"}}, "2026-03-02T15:10:07Z"},
		{"services.jsonl", "insights-logs-kube-audit", 12, want{source: SourceAKS, category: "kubernetes", action: "create", outcome: "success", user: "mallory@fabrikam.example", src: "203.0.113.12", host: "AKS-PROD",
			attrs: map[string]string{"k8s_subresource": "exec", "k8s_namespace": "payments"}}, "2026-03-02T15:12:59.9Z"},
		{"keyvault_storage.jsonl", "insights-logs-storageread", 1, want{source: SourceStorage, category: "data_access", action: "getblob", outcome: "failure", src: "203.0.113.77", srcPort: 41110, host: "DEFAULT",
			attrs: map[string]string{"status_text": "AuthorizationFailure", "file_path": "/stfabrikam/backups/db.bak"}}, ""},
	}
	for _, c := range cases {
		t.Run(c.file+"/"+strconv.Itoa(c.index), func(t *testing.T) {
			evs := parseFixture(t, c.file, c.container)
			if c.index >= len(evs) {
				t.Fatalf("%d events, want index %d", len(evs), c.index)
			}
			ev := evs[c.index]
			got := want{ev.Source, ev.Category, ev.Action, ev.Outcome, ev.User, ev.SrcIP, ev.SrcPort, ev.DstPort, ev.DstIP, ev.Protocol, ev.Host, nil}
			w := c.w
			attrs := w.attrs
			w.attrs = nil
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", w) {
				t.Errorf("got  %+v\nwant %+v", got, w)
			}
			for k, v := range attrs {
				if ev.Attrs[k] != v {
					t.Errorf("attrs[%q] = %q, want %q", k, ev.Attrs[k], v)
				}
			}
			if c.time != "" && ev.Time.Format(time.RFC3339Nano) != c.time {
				t.Errorf("time %s, want %s", ev.Time.Format(time.RFC3339Nano), c.time)
			}
			if ev.ID == "" || ev.Received != received || ev.Sender == "" {
				t.Errorf("id %q received %v sender %q", ev.ID, ev.Received, ev.Sender)
			}
		})
	}
}

// TestParseIDs: ids are stable per position and distinct per tuple.
func TestParseIDs(t *testing.T) {
	a := parseFixture(t, "nsgflow.jsonl", "insights-logs-networksecuritygroupflowevent")
	b := parseFixture(t, "nsgflow.jsonl", "insights-logs-networksecuritygroupflowevent")
	seen := make(map[string]bool)
	for i := range a {
		if a[i].ID != b[i].ID {
			t.Errorf("event %d: id %s then %s", i, a[i].ID, b[i].ID)
		}
		if seen[a[i].ID] {
			t.Errorf("event %d: id %s repeats", i, a[i].ID)
		}
		seen[a[i].ID] = true
	}
}

func TestParseRejects(t *testing.T) {
	nsg := func(version string, tuple string) string {
		return `{"category":"NetworkSecurityGroupFlowEvent","resourceId":"/X/NSG","properties":{"Version":` + version + `,"flows":[{"rule":"r","flows":[{"mac":"m","flowTuples":["` + tuple + `"]}]}]}}`
	}
	cases := []struct {
		name, container, rec string
		schema               bool
	}{
		{"not json", "insights-logs-signinlogs", `not json`, false},
		{"empty", "insights-logs-signinlogs", ``, false},
		{"array", "insights-logs-signinlogs", `[1,2]`, true},
		{"string", "insights-logs-signinlogs", `"x"`, true},
		{"truncated", "insights-logs-signinlogs", `{"time":"2026-03-02T09:14:05Z","properties":{"userPrincipalName":"a@b"`, false},
		{"sign-in without properties", "insights-logs-signinlogs", `{"time":"2026-03-02T09:14:05Z","resultType":"0"}`, true},
		{"properties not an object", "insights-logs-auditlogs", `{"properties":[1]}`, true},
		{"nsg version 3", "insights-logs-networksecuritygroupflowevent", nsg("3", "1,1.2.3.4,1.2.3.5,1,2,T,I,A"), true},
		{"nsg v1 short tuple", "insights-logs-networksecuritygroupflowevent", nsg("1", "1772460000,203.0.113.66,10.50.0.4,40022,22,T,I"), true},
		{"nsg bad ip", "insights-logs-networksecuritygroupflowevent", nsg("1", "1772460000,203.0.113.666,10.50.0.4,40022,22,T,I,D"), true},
		{"nsg bad port", "insights-logs-networksecuritygroupflowevent", nsg("1", "1772460000,203.0.113.66,10.50.0.4,70000,22,T,I,D"), true},
		{"nsg v2 bad state", "insights-logs-networksecuritygroupflowevent", nsg("2", "1772460000,203.0.113.66,10.50.0.4,1,22,T,I,D,X,,,,"), true},
		{"nsg v2 bad counter", "insights-logs-networksecuritygroupflowevent", nsg("2", "1772460000,203.0.113.66,10.50.0.4,1,22,T,I,A,C,x,1,1,1"), true},
		{"vnet without flowRecords", "insights-logs-flowlogflowevent", `{"category":"FlowLogFlowEvent"}`, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			evs, err := Parse([]byte(c.rec), Origin{Container: c.container, Key: "k", Received: received})
			if err == nil {
				t.Fatalf("accepted: %+v", evs)
			}
			if evs != nil {
				t.Errorf("returned events with an error")
			}
			if errors.Is(err, ErrSchema) != c.schema {
				t.Errorf("errors.Is(ErrSchema) = %v, want %v: %v", !c.schema, c.schema, err)
			}
		})
	}
}

func TestCleanIP(t *testing.T) {
	for in, want := range map[string]string{
		"198.51.100.23":       "198.51.100.23 0",
		"198.51.100.23:50211": "198.51.100.23 50211",
		"[2001:db8::1]:443":   "2001:db8::1 443",
		"[2001:db8::1]":       "2001:db8::1 0",
		"2001:db8::1":         "2001:db8::1 0",
		"::ffff:192.0.2.1":    "192.0.2.1 0",
		"":                    " 0",
		"not-an-ip":           " 0",
	} {
		ip, port := cleanIP(in)
		if got := ip + " " + strconv.Itoa(port); got != want {
			t.Errorf("cleanIP(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSplitRecords(t *testing.T) {
	got := splitRecords([]byte(` { "records" : [ {"a":1}, {"b":2} ] }` + "\r"))
	if len(got) != 2 || string(got[0]) != `{"a":1}` || string(got[1]) != `{"b":2}` {
		t.Errorf("records doc: %q", got)
	}
	if got := splitRecords([]byte(`{"time":"x","records_x":[]}`)); len(got) != 1 {
		t.Errorf("plain record split into %d", len(got))
	}
}

func TestBlockRecords(t *testing.T) {
	for in, n := range map[string]int{
		`{"a":1}`:            1,
		`,{"a":1}`:           1,
		"\r\n,{\"a\":1}\r\n": 1,
		`,{"a":1},{"b":2}`:   2,
		``:                   0,
		`,`:                  0,
	} {
		recs, err := blockRecords([]byte(in))
		if err != nil || len(recs) != n {
			t.Errorf("blockRecords(%q) = %d records, %v; want %d", in, len(recs), err, n)
		}
	}
	if _, err := blockRecords([]byte(`,{"a":1`)); err == nil {
		t.Error("accepted a truncated block")
	}
}
