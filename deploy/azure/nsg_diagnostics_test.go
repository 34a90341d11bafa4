package azure

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/outpost-siem/outpost/aggregator/ingest/azureblob"
)

type securityRule struct {
	name, direction, access, protocol string
	priority                          float64
	sources                           []string // literal prefixes, or the expression
	ports                             []string
}

func nsgRules(t *testing.T, tm *template) []securityRule {
	t.Helper()
	var out []securityRule
	for _, r := range tm.Resources {
		if r["type"] != "Microsoft.Network/networkSecurityGroups" {
			continue
		}
		props, _ := r["properties"].(map[string]any)
		rules, _ := props["securityRules"].([]any)
		for _, x := range rules {
			m, _ := x.(map[string]any)
			p, _ := m["properties"].(map[string]any)
			str := func(k string) string { s, _ := p[k].(string); return s }
			list := func(one, many string) []string {
				var l []string
				if s := str(one); s != "" {
					l = append(l, s)
				}
				switch v := p[many].(type) {
				case string:
					l = append(l, v)
				case []any:
					for _, y := range v {
						s, _ := y.(string)
						l = append(l, s)
					}
				}
				return l
			}
			prio, _ := p["priority"].(float64)
			name, _ := m["name"].(string)
			out = append(out, securityRule{name: name, direction: str("direction"), access: str("access"),
				protocol: str("protocol"), priority: prio,
				sources: list("sourceAddressPrefix", "sourceAddressPrefixes"),
				ports:   list("destinationPortRange", "destinationPortRanges")})
		}
	}
	if len(out) == 0 {
		t.Fatal("no NSG rules")
	}
	return out
}

// TestNSGAdmitsOnlyFromParameters: inbound, the NSG allows exactly syslog
// (514 udp and tcp, 6514 tcp) from the syslogSourcePrefixes parameter and
// SSH and HTTP (22, 9464) from managementPrefix, each source a parameter
// without a default (never *, Internet or a literal); and an explicit
// deny-all, below every allow, keeps the default AllowVnetInBound (65000)
// from admitting the rest of the VNet.
func TestNSGAdmitsOnlyFromParameters(t *testing.T) {
	tm := loadTemplates(t)[vmTemplate]
	wantFrom := map[string]string{
		"Udp/514": "syslogSourcePrefixes", "Tcp/514": "syslogSourcePrefixes", "Tcp/6514": "syslogSourcePrefixes",
		"Tcp/22": "managementPrefix", "Tcp/9464": "managementPrefix",
	}
	opened := map[string]bool{}
	var maxAllow float64
	denyAll := false
	for _, r := range nsgRules(t, tm) {
		if r.direction != "Inbound" {
			continue
		}
		if r.access == "Deny" && r.protocol == "*" && slices.Equal(r.sources, []string{"*"}) && slices.Equal(r.ports, []string{"*"}) {
			denyAll = true
			if r.priority <= maxAllow {
				t.Errorf("%s: priority %v is not below every allow rule", r.name, r.priority)
			}
			continue
		}
		if r.access != "Allow" {
			continue
		}
		maxAllow = max(maxAllow, r.priority)
		if len(r.sources) != 1 {
			t.Errorf("%s: want one source, a parameter; got %q", r.name, r.sources)
			continue
		}
		n, ok, err := parseTemplateString(r.sources[0])
		param, _ := n.literalArg(0)
		if err != nil || !ok || !n.is("parameters") || len(n.access) > 0 {
			t.Errorf("%s: source %q is not a parameter", r.name, r.sources[0])
			continue
		}
		if p, ok := tm.Parameters[param]; !ok || p.DefaultValue != nil {
			t.Errorf("%s: source parameter %s must be declared without a default", r.name, param)
		}
		for _, port := range r.ports {
			key := r.protocol + "/" + port
			if want, ok := wantFrom[key]; !ok || want != param {
				t.Errorf("%s: admits %s from %s; want only %v", r.name, key, param, wantFrom)
			}
			opened[key] = true
		}
	}
	for key := range wantFrom {
		if !opened[key] {
			t.Errorf("no rule admits %s", key)
		}
	}
	if !denyAll {
		t.Error("no explicit inbound deny-all rule")
	}
}

// TestDiagnosticCategories: what the diagnostic-settings templates export
// lands where the config cloud-init writes reads it, Outpost's parser knows
// it (a sample record of each Entra ID category parses as a sign-in or
// audit event, not as a generic resource log), and docs/azure.md names it.
func TestDiagnosticCategories(t *testing.T) {
	var cfg struct {
		Ingest struct {
			AzureBlob struct {
				Accounts []struct {
					Containers []struct {
						Name string `yaml:"name"`
					} `yaml:"containers"`
				} `yaml:"accounts"`
			} `yaml:"azure_blob"`
		} `yaml:"ingest"`
	}
	if err := yaml.Unmarshal([]byte(writtenFile(t, renderCloudInit(t), outpostConfig)), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Ingest.AzureBlob.Accounts) == 0 {
		t.Fatal("the sample config reads no account")
	}
	read := map[string]bool{}
	for _, c := range cfg.Ingest.AzureBlob.Accounts[0].Containers {
		read[c.Name] = true
	}
	docs := readFile(t, filepath.Join("..", "..", "docs", "azure.md"))
	tmpls := loadTemplates(t)
	categories := func(file string) []string {
		p := tmpls[file].Parameters["categories"]
		var out []string
		for _, v := range append(p.AllowedValues, p.DefaultValue.([]any)...) {
			if s := v.(string); !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
		return out
	}

	for _, cat := range categories("diagnostics-entra-id.json") {
		container := "insights-logs-" + strings.ToLower(cat)
		if !read[container] {
			t.Errorf("Entra ID category %s goes to %s, which the config does not read", cat, container)
		}
		if !strings.Contains(docs, "`"+cat+"`") {
			t.Errorf("docs/azure.md does not name %s", cat)
		}
		src := parseSample(t, strings.ToLower(cat)+".jsonl", container)
		if src != azureblob.SourceSignIn && src != azureblob.SourceAudit {
			t.Errorf("a %s record in %s parses as %q", cat, container, src)
		}
	}

	// The Activity Log categories Azure defines; any of them is read from
	// insights-activity-logs.
	activity := []string{"Administrative", "Security", "ServiceHealth", "Alert", "Recommendation", "Policy", "Autoscale", "ResourceHealth"}
	for _, cat := range categories("diagnostics-activity-log.json") {
		if !slices.Contains(activity, cat) {
			t.Errorf("%s is not an Activity Log category", cat)
		}
	}
	for _, v := range tmpls["diagnostics-activity-log.json"].Parameters["categories"].DefaultValue.([]any) {
		if !strings.Contains(docs, "`"+v.(string)+"`") {
			t.Errorf("docs/azure.md does not name the exported Activity Log category %s", v)
		}
	}
	if !read["insights-activity-logs"] {
		t.Error("the config does not read insights-activity-logs")
	}
	if src := parseSample(t, "activitylogs.jsonl", "insights-activity-logs"); src != azureblob.SourceActivity {
		t.Errorf("an Activity Log record parses as %q", src)
	}

	if !read["insights-logs-flowlogflowevent"] {
		t.Error("the config does not read insights-logs-flowlogflowevent (VNet flow logs)")
	}
	if src := parseSample(t, "vnetflow.jsonl", "insights-logs-flowlogflowevent"); src != azureblob.SourceVNetFlow {
		t.Errorf("a VNet flow log record parses as %q", src)
	}
	fl := tmpls["diagnostics-flow-logs.json"].Resources[0]
	props, _ := fl["properties"].(map[string]any)
	if format, _ := props["format"].(map[string]any); fmt.Sprint(format["version"]) != "2" || format["type"] != "JSON" {
		t.Errorf("flow logs format %v, want JSON version 2", props["format"])
	}
}

// parseSample parses the first record of one of the Azure source's test
// files as if read from container and returns the events' source.
func parseSample(t *testing.T, file, container string) string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "aggregator", "ingest", "azureblob", "testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	if !sc.Scan() {
		t.Fatalf("%s: empty", file)
	}
	evs, err := azureblob.Parse(sc.Bytes(), azureblob.Origin{Container: container, Sender: "test/" + container + "/PT1H.json",
		Key: file, Received: time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)})
	if err != nil || len(evs) == 0 {
		t.Fatalf("%s in %s: %v", file, container, err)
	}
	return evs[0].Source
}
