// Package gen writes synthetic Sigma rules for benchmarks: n rules from
// templates that cover every modifier Outpost supports, over the Linux and
// Azure logsources, with values that vary per rule so that few rules match
// a given event (as in a real rule set).
package gen

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// logsources the templates rotate through, with a field of each that
// holds text.
var logsources = []struct{ ls, text, ip, user string }{
	{"{product: linux, service: sshd}", "message", "src_ip", "user"},
	{"{product: azure, service: signinlogs}", "ResultDescription", "IPAddress", "UserPrincipalName"},
	{"{product: azure, service: auditlogs}", "properties.message", "src_ip", "InitiatedBy"},
	{"{product: azure, service: activitylogs}", "operationName", "callerIpAddress", "Caller"},
}

// templates are detections; %[1]s is the text field, %[2]s an IP field,
// %[3]s a user field, %[4]d the rule's number.
var templates = []string{
	"  selection:\n    %[1]s|contains: 'needle%[4]d'\n  condition: selection",
	"  selection:\n    %[1]s|startswith: 'Start%[4]d'\n  condition: selection",
	"  selection:\n    %[1]s|endswith: 'end%[4]d'\n  condition: selection",
	"  selection:\n    %[1]s|contains|all: ['alpha%[4]d', 'beta']\n  condition: selection",
	"  selection:\n    %[1]s: 'Exact value %[4]d'\n  condition: selection",
	"  selection:\n    %[1]s: 'wild*card?%[4]d*'\n  condition: selection",
	"  selection:\n    %[1]s|re: '^rx%[4]d[0-9]+$'\n  condition: selection",
	"  selection:\n    %[1]s|re|i: 'case%[4]d.*insensitive'\n  condition: selection",
	"  selection:\n    %[2]s|cidr: '10.%[5]d.0.0/16'\n  condition: selection",
	"  selection:\n    %[1]s|base64offset|contains: 'payload%[4]d'\n  condition: selection",
	"  selection:\n    %[1]s|wide|base64offset|contains: 'w%[4]d'\n  condition: selection",
	"  selection:\n    %[1]s|base64: 'b%[4]d'\n  condition: selection",
	"  selection:\n    %[1]s|windash|contains: ' -flag%[4]d'\n  condition: selection",
	"  selection:\n    %[1]s|cased: 'Cased%[4]d'\n  condition: selection",
	"  selection:\n    %[3]s|exists: true\n    %[1]s|contains: 'ex%[4]d'\n  condition: selection",
	"  selection:\n    %[3]s|fieldref: %[1]s\n    %[2]s: '192.0.2.%[5]d'\n  condition: selection",
	"  selection:\n    %[3]s|neq: ['nobody%[4]d']\n    %[1]s|contains: 'neq%[4]d'\n  condition: selection",
	"  sel_a:\n    %[1]s|contains: 'one%[4]d'\n  sel_b:\n    %[3]s: ['u%[4]d', 'v%[4]d']\n  filter:\n    %[2]s: null\n  condition: 1 of sel_* and not filter",
	"  keywords:\n    - 'keyword%[4]d'\n    - 'other keyword %[4]d'\n  condition: keywords",
	"  selection:\n    %[1]s|contains: 'agg%[4]d'\n  timeframe: 5m\n  condition: selection | count() by %[2]s > 5",
	"  selection:\n    %[1]s|contains: 'spray%[4]d'\n  timeframe: 10m\n  condition: selection | count(%[3]s) by %[2]s > 10",
}

// Templates is how many templates there are.
func Templates() int { return len(templates) }

// Rule returns the i-th rule's YAML.
func Rule(i int) string {
	ls := logsources[i%len(logsources)]
	det := fmt.Sprintf(templates[i%len(templates)], ls.text, ls.ip, ls.user, i, i%250)
	level := []string{"low", "medium", "high"}[i%3]
	return fmt.Sprintf("title: Synthetic rule %d\nid: 00000000-0000-4000-8000-%012d\nstatus: stable\nlevel: %s\nlogsource: %s\ndetection:\n%s\n",
		i, i, level, ls.ls, det)
}

// Write writes n rules to dir, one file each.
func Write(dir string, n int) error {
	for i := range n {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("rule_%04d.yml", i)), []byte(Rule(i)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Names lists the modifiers and forms the templates use, for the record.
func Names() string {
	return strings.Join([]string{"contains", "startswith", "endswith", "contains|all", "exact", "wildcards", "re", "re|i", "cidr",
		"base64offset|contains", "wide|base64offset|contains", "base64", "windash|contains", "cased", "exists", "fieldref", "neq",
		"1 of sel_* and not filter (null)", "keywords", "count() by", "count(field) by"}, ", ")
}
