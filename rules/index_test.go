package rules

import (
	"slices"
	"testing"
	"testing/fstest"

	"github.com/expr-lang/expr/vm"

	"github.com/outpost-siem/outpost/aggregator/event"
)

func TestIndexBySource(t *testing.T) {
	set, err := LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(`rules:
  - {id: a, title: A, kind: match, severity: 1, condition: 'source == "azure.signin" && outcome == "failure"'}
  - {id: b, title: B, kind: match, severity: 1, condition: 'outcome == "failure"'}
  - {id: c, title: C, kind: match, severity: 1, condition: 'source == "syslog" && app == "sshd"'}
  - {id: d, title: D, kind: match, severity: 1, condition: 'source == "syslog" || source == "azure.signin"'}
  - id: e
    title: E
    severity: 1
    kind: sequence
    window: 1m
    steps:
      - {condition: 'source == "syslog"', by: [user]}
      - {condition: 'source == "azure.signin"', by: [user]}
`)}}, "x")
	if err != nil {
		t.Fatal(err)
	}
	ids := func(rs []*Rule) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}
	for src, want := range map[string][]string{
		"azure.signin": {"a", "b", "d", "e"},
		"syslog":       {"b", "c", "d", "e"},
		"azure.audit":  {"b", "d", "e"},
	} {
		if got := ids(set.For(&event.Event{Source: src})); !slices.Equal(got, want) {
			t.Errorf("rules for %s: %v, want %v", src, got, want)
		}
	}
	// What the index leaves out never matches.
	var v vm.VM
	for _, src := range []string{"azure.signin", "syslog", "azure.audit"} {
		ev := &event.Event{Source: src, Outcome: "failure", App: "sshd", User: "u"}
		for _, r := range set.Rules {
			if slices.Contains(set.For(ev), r) {
				continue
			}
			if hits, _, err := r.Evaluate(&v, ev, nil); err != nil || len(hits) > 0 {
				t.Errorf("rule %s left out for %s matches it (%v)", r.ID, src, err)
			}
		}
	}
}
