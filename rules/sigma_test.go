package rules_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"

	"github.com/outpost-siem/outpost/rules"
	"github.com/outpost-siem/outpost/rules/ruletest"
	"github.com/outpost-siem/outpost/rules/sigma"
)

// TestSigmaConformance runs the conformance rules and tests of
// sigma/testdata/conformance through the real engine.
func TestSigmaConformance(t *testing.T) {
	set, err := rules.LoadDir("sigma/testdata/conformance")
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Tests) == 0 {
		t.Fatal("no tests found")
	}
	// generate: only a correlation with generate: true keeps the rules it
	// references alerting on their own.
	if set.Rule("0c0a0002-0000-4000-8000-000000000002") != nil {
		t.Error("ssh_success, referenced only by a correlation without generate, alerts on its own")
	}
	if set.Rule("0c0a0002-0000-4000-8000-000000000003") == nil || set.Rule("0c0a0002-0000-4000-8000-000000000001") == nil {
		t.Error("the rules a correlation with generate: true references do not alert on their own")
	}
	for _, tc := range set.Tests {
		t.Run(tc.Name, func(t *testing.T) {
			res := ruletest.Run(set, tc)
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			if res.Diff != "" {
				t.Errorf("%s", res.Diff)
			}
		})
	}
}

// TestSigmaDirs loads a Sigma repository: rules Outpost can run are
// taken, the others are reported with their reason, and the load succeeds.
func TestSigmaDirs(t *testing.T) {
	set, err := rules.Load("", rules.SigmaOptions{Dirs: []string{"sigma/testdata/repo"}})
	if err != nil {
		t.Fatal(err)
	}
	r := set.Rule("7a3e0b10-0000-4000-8000-000000000002")
	if set.Rule("7a3e0b10-0000-4000-8000-000000000001") == nil || r == nil {
		t.Fatalf("the two linux rules are not loaded; rejected: %v", set.Rejected)
	}
	if r.Kind != rules.KindDistinct || r.Threshold != 3 || r.Window != 5*time.Minute || r.Field != "user" || !slices.Equal(r.GroupBy, []string{"src_ip"}) {
		t.Errorf("count(user) by src_ip > 2 over 5m became %s threshold %d window %s field %s by %v", r.Kind, r.Threshold, r.Window, r.Field, r.GroupBy)
	}
	want := map[string]string{
		"7a3e0b10-0000-4000-8000-000000000003": "status experimental is not taken",
		"7a3e0b10-0000-4000-8000-000000000004": "auditd records are not parsed",
		"7a3e0b10-0000-4000-8000-000000000005": "no pipeline routes it",
		"7a3e0b10-0000-4000-8000-000000000006": `field "KexAlgorithm": no pipeline maps it`,
		"7a3e0b10-0000-4000-8000-000000000007": `unknown modifier "sometimes"`,
		"7a3e0b10-0000-4000-8000-000000000008": "correlation.rules: 7a3e0b10-0000-4000-8000-000000000007 was not taken: detection.selection.ResultType: unknown modifier",
		"":                                     "did not find expected",
	}
	got := map[string]rules.Rejected{}
	for _, rj := range set.Rejected {
		got[rj.ID] = rj
	}
	for id, reason := range want {
		rj, ok := got[id]
		if !ok || !strings.Contains(rj.Reason, reason) {
			t.Errorf("rule %q: rejected %+v, want a reason with %q", id, rj, reason)
		}
		if skipped := id == "7a3e0b10-0000-4000-8000-000000000003"; rj.Skipped != skipped {
			t.Errorf("rule %q: skipped = %v, want %v", id, rj.Skipped, skipped)
		}
	}
	if len(set.Rejected) != len(want) {
		t.Errorf("rejected %d, want %d: %v", len(set.Rejected), len(want), set.Rejected)
	}
	if rj := got["7a3e0b10-0000-4000-8000-000000000007"]; rj.Line != 7 || !strings.HasSuffix(rj.File, "azure/bad_modifier.yml") {
		t.Errorf("the bad modifier is reported at %s:%d, want azure/bad_modifier.yml:7", rj.File, rj.Line)
	}
	// An Azure field no mapping names is read from the record, and the set
	// asks the Azure source for it.
	if rr := set.Rule("7a3e0b10-0000-4000-8000-000000000009"); rr == nil || !strings.Contains(rr.Steps[0].Condition, `attrs["rec.loggedbyservice"]`) {
		t.Errorf("LoggedByService is not read from the record: %+v", rr)
	}
	if got := set.RecordFields(); !slices.Equal(got["azure.audit"], []string{"loggedbyservice"}) || len(got) != 1 {
		t.Errorf("RecordFields() = %v, want azure.audit: [loggedbyservice]", got)
	}
	// A Windows process_creation rule reads the event's own fields.
	if rr := set.Rule("7a3e0b10-0000-4000-8000-00000000000a"); rr == nil || !strings.Contains(rr.Steps[0].Condition, `attrs["win.Image"]`) ||
		!strings.Contains(rr.Steps[0].Condition, `action == "process_created"`) {
		t.Errorf("the Windows rule: %+v", rr)
	}
	// Taking experimental rules only.
	exp, err := rules.Load("", rules.SigmaOptions{Dirs: []string{"sigma/testdata/repo"}, Status: []string{"experimental"}})
	if err != nil || exp.Rule("7a3e0b10-0000-4000-8000-000000000003") == nil || exp.Rule("7a3e0b10-0000-4000-8000-000000000001") != nil {
		t.Errorf("with status [experimental], only the experimental rule is taken (err %v)", err)
	}

	// The aggregation runs as a distinct rule.
	tc := &rules.Test{Name: "three users from one address", Rules: []string{r.ID}}
	for i, u := range []string{"root", "admin", "admin", "oracle", "pi"} {
		tc.Events = append(tc.Events, &event.Event{ID: fmt.Sprint(i), Source: "syslog", App: "sshd", Time: time.Date(2026, 1, 1, 0, 0, i*30, 0, time.UTC),
			Message: "Failed password for " + u + " from 192.0.2.9 port 22 ssh2", User: u, SrcIP: "192.0.2.9"})
	}
	tc.Expect = []rules.Expected{{Rule: r.ID, Key: "src_ip=192.0.2.9", Values: []string{"root", "admin", "oracle"}}}
	if res := ruletest.Run(set, tc); !res.Pass() {
		t.Errorf("%v %s", res.Err, res.Diff)
	}
}

// TestSigmaProblemsInTheRulesDir: in rules.dir a Sigma rule with a problem
// fails the load, at its line.
func TestSigmaProblemsInTheRulesDir(t *testing.T) {
	for body, want := range map[string]string{
		"detection:\n  sel: {user|sometimes: x}\n  condition: sel\n":     `x.yml:5: rule "0c0a0002-0000-4000-8000-000000000001": detection.sel.user: unknown modifier "sometimes"`,
		"detection:\n  sel: {user: x}\n  condition: sel and other\n":     `x.yml:6: rule "0c0a0002-0000-4000-8000-000000000001": detection.condition: "other" is not a search identifier`,
		"detection:\n  sel: {user|re: '(x'}\n  condition: sel\n":         `x.yml:5: rule "0c0a0002-0000-4000-8000-000000000001": detection.sel.user: re:`,
		"detection:\n  sel: {Colour: x}\n  condition: sel\n":             `field "Colour": no pipeline maps it`,
		"detection:\n  sel: {user: x}\n  condition: sel | count() > 3\n": "an aggregation needs timeframe",
	} {
		dir := t.TempDir()
		src := "title: t\nid: 0c0a0002-0000-4000-8000-000000000001\nlogsource: {product: linux, service: sshd}\n" + body
		if err := os.WriteFile(filepath.Join(dir, "x.yml"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := rules.LoadDir(dir)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s -> %v\nwant an error with %q", body, err, want)
		}
	}
}

// TestSigmaCorrelationProblems: each correlation Outpost cannot run is a
// load error in rules.dir, with its reason.
func TestSigmaCorrelationProblems(t *testing.T) {
	base := `title: failure
id: 0c0a0003-0000-4000-8000-000000000001
name: fail
logsource: {product: linux, service: sshd}
detection:
  sel: {message|contains: Failed}
  condition: sel
---
title: signin
id: 0c0a0003-0000-4000-8000-000000000002
name: signin
logsource: {product: azure, service: signinlogs}
detection:
  sel: {ResultType: 50126}
  condition: sel
---
title: corr
id: 0c0a0003-0000-4000-8000-000000000009
correlation:
`
	for body, want := range map[string]string{
		"  type: event_count\n  rules: [nosuch]\n  group-by: [src_ip]\n  timespan: 5m\n  condition: {gte: 3}\n":                                                         `no Sigma rule has the id or name "nosuch"`,
		"  type: event_count\n  rules: [fail]\n  group-by: [src_ip]\n  timespan: 5m\n  condition: {lt: 1}\n":                                                            "at most 0 could never hold",
		"  type: event_count\n  rules: [fail]\n  group-by: [src_ip]\n  timespan: 5m\n  condition: {gt: 5, lt: 4}\n":                                                     "from 6 to 3 is empty",
		"  type: event_count\n  rules: [fail]\n  group-by: [src_ip]\n  timespan: 5m\n  condition: {neq: 4}\n":                                                           "condition neq: not supported",
		"  type: value_count\n  rules: [fail]\n  group-by: [src_ip]\n  timespan: 5m\n  condition: {gte: 3}\n":                                                           "value_count needs field",
		"  type: event_count\n  rules: [fail]\n  group-by: [src_ip]\n  timespan: 5x\n  condition: {gte: 3}\n":                                                           "unknown unit",
		"  type: value_sum\n  rules: [fail]\n  group-by: [src_ip]\n  timespan: 5m\n  condition: {field: x, gte: 3}\n":                                                   "value_sum is not supported yet",
		"  type: event_count\n  rules: [fail, signin]\n  group-by: [acct]\n  timespan: 5m\n  condition: {gte: 3}\n  aliases: {acct: {fail: user, signin: IPAddress}}\n": "needs the same fields in every rule",
		"  type: temporal\n  rules: [fail, signin]\n  group-by: [acct]\n  timespan: 5m\n  aliases: {acct: {fail: user}}\n":                                              "correlation.aliases.acct: no field for rule signin",
		"  type: temporal\n  rules: [fail, signin]\n  group-by: [user]\n  timespan: 5m\n  condition: {gte: 1}\n":                                                        "only {gte: 2}",
		"  type: temporal\n  rules: [fail]\n  group-by: [user]\n  timespan: 5m\n":                                                                                       "needs at least two rules",
		"  type: event_count\n  rules: [0C0A0003-0000-4000-8000-000000000009]\n  group-by: [src_ip]\n  timespan: 5m\n  condition: {gte: 3}\n":                           "0C0A0003-0000-4000-8000-000000000009 was not taken: it is a correlation, and a correlation of correlations is not supported yet",
		"  type: event_count\n  rules: [fail]\n  group-by: [src_ip]\n  timespan: 5m\n  condition: {gte: 3}\n---\ntitle: chain\nid: 0c0a0003-0000-4000-8000-00000000000a\ncorrelation:\n  type: event_count\n  rules: [0c0a0003-0000-4000-8000-000000000009]\n  timespan: 5m\n  condition: {gte: 2}\n": "a correlation of correlations is not supported yet",
		"  type: eventcount\n  rules: [fail]\n  timespan: 5m\n": `"eventcount" is not one of`,
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "c.yml"), []byte(base+body), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := rules.LoadDir(dir)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s -> %v\nwant an error with %q", body, err, want)
		}
	}
}

// A pipeline that maps a field to something that is not an Outpost field
// rejects the rules that use it, naming the pipeline's target.
func TestSigmaPipelineMappingToAnUnknownField(t *testing.T) {
	pl, err := sigma.ParsePipeline("ours.yaml", []byte(`name: ours
priority: 20
transformations:
  - type: field_name_mapping
    mapping: {Colour: paint_colour}
    rule_conditions:
      - {type: logsource, product: linux, service: sshd}
`))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := "title: t\nid: 0c0a0004-0000-4000-8000-000000000001\nlogsource: {product: linux, service: sshd}\ndetection:\n  sel: {Colour: red}\n  condition: sel\n"
	if err := os.WriteFile(filepath.Join(dir, "x.yml"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = rules.Load(dir, rules.SigmaOptions{Pipelines: []*sigma.Pipeline{pl}})
	if want := `field "Colour": mapped to "paint_colour", which is not an Outpost field`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want %q", err, want)
	}
	for src, want := range map[string]string{
		"priority: 1\ntransformations: []\n":                                                                                    "name: required",
		"name: x\ntransformations:\n  - {type: drop_detection_item}\n":                                                          "include_fields condition naming the fields is required",
		"name: x\ntransformations:\n  - {type: field_name_suffix}\n":                                                            `type "field_name_suffix" is not supported`,
		"name: x\ntransformations:\n  - {type: add_condition}\n":                                                                "conditions: required",
		"name: x\ntransformations:\n  - {type: rule_failure, message: m, rule_conditions: [{type: processing_item_applied}]}\n": "only logsource",
	} {
		if _, err := sigma.ParsePipeline("p.yaml", []byte(src)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q -> %v, want %q", src, err, want)
		}
	}
}

// field_name_prefix_mapping renames by prefix; drop_detection_item takes
// items out, and a search identifier left empty leaves the condition.
func TestSigmaPipelinePrefixAndDrop(t *testing.T) {
	pl, err := sigma.ParsePipeline("ours.yaml", []byte(`name: ours
priority: 20
transformations:
  - type: field_name_prefix_mapping
    mapping: {props.: attrs.}
  - type: drop_detection_item
    field_name_conditions:
      - {type: include_fields, fields: [Colour]}
`))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := `title: t
id: 0c0a0005-0000-4000-8000-000000000001
logsource: {product: linux, service: sshd}
detection:
  sel:
    props.shape: round
    Colour: red
  filter:
    Colour: blue
  condition: sel and not filter
`
	if err := os.WriteFile(filepath.Join(dir, "x.yml"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := rules.Load(dir, rules.SigmaOptions{Pipelines: []*sigma.Pipeline{pl}})
	if err != nil {
		t.Fatal(err)
	}
	r := set.Rule("0c0a0005-0000-4000-8000-000000000001")
	if cond := r.Steps[0].Condition; strings.Contains(cond, "not") || !strings.Contains(cond, `attrs["shape"]`) {
		t.Errorf("condition %q: want the prefix mapped and the dropped filter gone", cond)
	}
	tc := &rules.Test{Name: "prefix and drop", Rules: []string{r.ID}, Events: []*event.Event{
		{ID: "1", Source: "syslog", App: "sshd", Time: time.Unix(0, 0), Attrs: map[string]string{"shape": "ROUND"}},
		{ID: "2", Source: "syslog", App: "sshd", Time: time.Unix(1, 0), Attrs: map[string]string{"shape": "square"}},
	}, Expect: []rules.Expected{{Rule: r.ID}}}
	if res := ruletest.Run(set, tc); !res.Pass() {
		t.Errorf("%v %s", res.Err, res.Diff)
	}
	// Every identifier dropped: the rule cannot run.
	src = strings.Replace(src, "    props.shape: round\n", "", 1)
	if err := os.WriteFile(filepath.Join(dir, "x.yml"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := rules.Load(dir, rules.SigmaOptions{Pipelines: []*sigma.Pipeline{pl}}); err == nil || !strings.Contains(err.Error(), "was dropped by a pipeline") {
		t.Errorf("all dropped: %v", err)
	}
}

// What the adversarial review found in loading (2026-12-04): a correlation
// in a repository must not switch off a rule of another file; a
// repository's copy of a curated rule is the duplicate; a timespan too long
// for a window is refused rather than overflowing; a rule without level
// counts as medium for sigma_min_level; a pipeline with an unknown key
// fails to load.
func TestSigmaReviewLoading(t *testing.T) {
	write := func(dir, name, src string) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	curated := "title: Root logon\nid: 0c0a0007-0000-4000-8000-000000000001\nname: root_logon\nstatus: stable\nlevel: high\nlogsource: {product: linux, service: sshd}\ndetection:\n  sel: {user: root}\n  condition: sel\n"
	corr := "title: Many root logons\nid: 0c0a0007-0000-4000-8000-000000000002\nstatus: stable\ncorrelation:\n  type: event_count\n  rules: [root_logon]\n  group-by: [src_ip]\n  timespan: 5m\n  condition: {gte: 3}\n"
	dir, repo := t.TempDir(), t.TempDir()
	write(dir, "root.yml", curated)
	write(repo, "corr.yml", corr)
	set, err := rules.Load(dir, rules.SigmaOptions{Dirs: []string{repo}})
	if err != nil {
		t.Fatal(err)
	}
	if set.Rule("0c0a0007-0000-4000-8000-000000000001") == nil || set.Rule("0c0a0007-0000-4000-8000-000000000002") == nil {
		t.Error("a correlation in another file switched off the rule it references (or did not load)")
	}
	// In one file, generate: false (the default) does silence it.
	one := t.TempDir()
	write(one, "both.yml", curated+"---\n"+corr)
	if set, err := rules.LoadDir(one); err != nil || set.Rule("0c0a0007-0000-4000-8000-000000000001") != nil {
		t.Errorf("in the correlation's own file, the referenced rule still alerts on its own (err %v)", err)
	}
	// A repository copy of the curated rule is the duplicate.
	write(repo, "copy.yml", strings.Replace(curated, "level: high", "level: low", 1))
	set, err = rules.Load(dir, rules.SigmaOptions{Dirs: []string{repo}})
	if err != nil {
		t.Fatalf("a repository copy of a curated rule broke the load: %v", err)
	}
	if r := set.Rule("0c0a0007-0000-4000-8000-000000000001"); r == nil || r.Severity != 8 {
		t.Errorf("the curated rule is not the one running: %+v", r)
	}
	// Timespans.
	for span, want := range map[string]string{"300y": "longer than 366 days", "9999999999d": "longer than 366 days", "367d": "longer than 366 days"} {
		bad := t.TempDir()
		write(bad, "c.yml", curated+"---\n"+strings.Replace(corr, "timespan: 5m", "timespan: "+span, 1))
		if _, err := rules.LoadDir(bad); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("timespan %s: %v, want %q", span, err, want)
		}
	}
	// A rule without level is medium for sigma_min_level.
	nolevel := t.TempDir()
	write(nolevel, "r.yml", strings.Replace(curated, "level: high\n", "", 1))
	if set, err := rules.Load("", rules.SigmaOptions{Dirs: []string{nolevel}, MinLevel: "medium"}); err != nil || set.Rule("0c0a0007-0000-4000-8000-000000000001") == nil {
		t.Errorf("a rule without level (severity 5, medium) is left out by sigma_min_level: medium (err %v)", err)
	}
	// Pipelines: an unknown key, a condition that is not a field.
	for src, want := range map[string]string{
		"name: x\ntransformations:\n  - {type: add_condition, conditions: {source: syslog}, rule_conditionz: [{type: logsource, product: linux}]}\n": "rule_conditionz",
		"name: x\ntransformations:\n  - {type: add_condition, conditions: {'source == \"x\" or true': syslog}}\n":                                    "is not a field name",
	} {
		if _, err := sigma.ParsePipeline("p.yaml", []byte(src)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q -> %v, want %q", src, err, want)
		}
	}
}
