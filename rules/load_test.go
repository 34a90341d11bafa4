package rules

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/expr-lang/expr/vm"

	"github.com/outpost-siem/outpost/aggregator/event"
)

func TestPackLoads(t *testing.T) {
	set, err := Pack()
	if err != nil {
		t.Fatal(err)
	}
	r := set.Rule("ssh-brute-force")
	if r == nil {
		t.Fatal("ssh-brute-force missing from the pack")
	}
	if r.Kind != KindThreshold || r.Threshold != 5 || r.Window != 2*time.Minute || r.Severity != 8 {
		t.Errorf("ssh-brute-force = %+v", r)
	}
}

func TestMatchesAndKeys(t *testing.T) {
	set, err := Pack()
	if err != nil {
		t.Fatal(err)
	}
	r := set.Rule("ssh-brute-force")
	var v vm.VM
	tests := []struct {
		name  string
		ev    event.Event
		match bool
		key   string
		keyOK bool
	}{
		{"failure", event.Event{Source: "syslog", App: "sshd", Category: "authentication", Action: "logon", Outcome: "failure", SrcIP: "203.0.113.5"}, true, "src_ip=203.0.113.5", true},
		{"success", event.Event{Source: "syslog", App: "sshd", Category: "authentication", Action: "logon", Outcome: "success", SrcIP: "203.0.113.5"}, false, "src_ip=203.0.113.5", true},
		{"other app", event.Event{Source: "syslog", App: "su", Category: "authentication", Action: "logon", Outcome: "failure"}, false, "", false},
		{"new openssh", event.Event{Source: "syslog", App: "sshd-session", Category: "authentication", Action: "logon", Outcome: "failure", SrcIP: "2001:db8::1"}, true, "src_ip=2001:db8::1", true},
		{"invalid user line not counted", event.Event{Source: "syslog", App: "sshd", Category: "authentication", Action: "invalid_user", Outcome: "failure", SrcIP: "203.0.113.5"}, false, "src_ip=203.0.113.5", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits, noKey, err := r.Evaluate(&v, &tt.ev, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(hits) > 0 || noKey > 0; got != tt.match {
				t.Errorf("matched = %v, want %v", got, tt.match)
			}
			if tt.match && tt.keyOK && (len(hits) != 1 || hits[0].Key != tt.key) {
				t.Errorf("hits = %+v, want key %q", hits, tt.key)
			}
		})
	}
}

func TestGroupKeyEscapes(t *testing.T) {
	fs := fstest.MapFS{"a.yaml": {Data: []byte(`
rules:
  - id: two
    title: Two keys
    kind: match
    severity: 1
    condition: "true"
    group_by: [user, host]
`)}}
	set, err := LoadFS(fs, "t")
	if err != nil {
		t.Fatal(err)
	}
	var v vm.VM
	hits, _, err := set.Rule("two").Evaluate(&v, &event.Event{User: `a;b=c\`, Host: "h"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := `user=a\;b\=c\\;host=h`; len(hits) != 1 || hits[0].Key != want {
		t.Errorf("hits = %+v, want key %q", hits, want)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // substrings, each must appear
	}{
		{"typo in condition field", `
rules:
  - id: r1
    title: T
    kind: match
    severity: low
    condition: outcom == "failure"
`, []string{`bad.yaml:7: rule "r1": condition: unknown name outcom`}},
		{"unknown rule key", `
rules:
  - id: r1
    title: T
    kind: match
    severity: 3
    condition: "true"
    windw: 5m
`, []string{`bad.yaml:8: rule "r1": unknown key "windw"`}},
		{"threshold without window", `
rules:
  - id: r1
    title: T
    kind: threshold
    severity: 3
    condition: "true"
    threshold: 3
`, []string{`rule "r1": window: required for kind threshold`}},
		{"at_most below threshold", `
rules:
  - id: r1
    title: T
    kind: threshold
    severity: 3
    condition: "true"
    threshold: 3
    at_most: 2
    window: 5m
`, []string{`bad.yaml:9: rule "r1": at_most: 2 is below threshold 3: the rule could never fire`}},
		{"at_most on a match rule, and out of range", `
rules:
  - id: r1
    title: T
    kind: match
    severity: 3
    condition: "true"
    at_most: 2
  - id: r2
    title: T
    kind: distinct
    severity: 3
    condition: "true"
    field: user
    at_most: 0
    window: 5m
`, []string{`bad.yaml:8: rule "r1": at_most: does not apply to kind match`, `rule "r2": at_most: expected an integer from 1 to 10000`}},
		{"bad severity and kind", `
rules:
  - id: r1
    title: T
    kind: sometimes
    severity: 11
    condition: "true"
`, []string{`bad.yaml:5: rule "r1": kind: unknown kind "sometimes"`, `bad.yaml:6: rule "r1": severity: "11" is not 0-10`}},
		{"unknown group field", `
rules:
  - id: r1
    title: T
    kind: match
    severity: 3
    condition: "true"
    group_by: [src_addr]
`, []string{`bad.yaml:8: rule "r1": group_by: unknown field "src_addr"`}},
		{"duplicate id", `
rules:
  - {id: r1, title: T, kind: match, severity: 1, condition: "true"}
  - {id: r1, title: T, kind: match, severity: 1, condition: "true"}
`, []string{`bad.yaml:4: rule "r1": id: duplicate id, first defined at bad.yaml:3`}},
		{"non-bool condition", `
rules:
  - {id: r1, title: T, kind: match, severity: 1, condition: "src_port + 1"}
`, []string{`rule "r1": condition: expected bool`}},
		{"unknown top key", `
rulez: []
`, []string{`bad.yaml:2: unknown key "rulez"`}},
		{"broken yaml", "rules: [\n", []string{"bad.yaml: "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadFS(fstest.MapFS{"bad.yaml": {Data: []byte(tt.yaml)}}, ".")
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("err = %v, want a *LoadError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%s", w, err)
				}
			}
		})
	}
}

func TestDisabledRuleIsValidatedButNotLoaded(t *testing.T) {
	set, err := LoadFS(fstest.MapFS{"a.yaml": {Data: []byte(`
rules:
  - {id: off, title: T, kind: match, severity: 1, condition: "true", enabled: false}
`)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Rules) != 0 || set.Rule("off") != nil {
		t.Errorf("disabled rule was loaded: %+v", set.Rules)
	}
}

// A window state keeps each event's step in a byte: a sequence of more
// steps is refused, natively and from a Sigma temporal correlation.
func TestSequenceStepsAreBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("rules:\n  - {id: long, title: T, kind: sequence, severity: 5, window: 1m, steps: [")
	for i := range MaxSteps + 1 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(`{condition: 'host != ""', by: [host]}`)
	}
	b.WriteString("]}\n")
	_, err := LoadFS(fstest.MapFS{"long.yaml": {Data: []byte(b.String())}}, ".")
	if err == nil || !strings.Contains(err.Error(), "at most 255 steps, got 256") {
		t.Errorf("256 steps: %v", err)
	}
	short := strings.Replace(b.String(), `{condition: 'host != ""', by: [host]}, `, "", 1)
	if _, err := LoadFS(fstest.MapFS{"ok.yaml": {Data: []byte(short)}}, "."); err != nil {
		t.Errorf("255 steps: %v", err)
	}
}
