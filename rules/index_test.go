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
	for _, c := range []struct {
		src, app string
		want     []string
	}{
		{"azure.signin", "", []string{"a", "b", "d", "e"}},
		{"syslog", "sshd", []string{"b", "c", "d", "e"}},
		{"syslog", "cron", []string{"b", "d", "e"}},
		{"syslog", "", []string{"b", "d", "e"}},
		{"azure.audit", "sshd", []string{"b", "d", "e"}},
	} {
		if got := ids(set.For(&event.Event{Source: c.src, App: c.app})); !slices.Equal(got, c.want) {
			t.Errorf("rules for source %s app %s: %v, want %v", c.src, c.app, got, c.want)
		}
	}
	// What the index leaves out never matches.
	var v vm.VM
	for _, src := range []string{"azure.signin", "syslog", "azure.audit"} {
		for _, app := range []string{"sshd", "cron", ""} {
			ev := &event.Event{Source: src, Outcome: "failure", App: app, User: "u"}
			for _, r := range set.Rules {
				if slices.Contains(set.For(ev), r) {
					continue
				}
				if hits, _, err := r.Evaluate(&v, ev, nil); err != nil || len(hits) > 0 {
					t.Errorf("rule %s left out for %s/%s matches it (%v)", r.ID, src, app, err)
				}
			}
		}
	}
}
