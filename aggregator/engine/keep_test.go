package engine

import (
	"fmt"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

const keepRules = `
rules:
  - {id: pinned, title: T, kind: threshold, severity: 5, condition: 'source == "syslog" && outcome == "failure"', group_by: [src_ip], threshold: 100, window: 2m}
  - {id: open, title: T, kind: threshold, severity: 5, condition: 'outcome == "failure"', group_by: [src_ip], threshold: 100, window: 2m}
  - id: both
    title: T
    kind: sequence
    severity: 5
    window: 2m
    steps:
      - {name: fail, condition: 'source == "syslog" && outcome == "failure"', by: [src_ip], count: 100}
      - {name: ok, condition: 'source == "azure.signin" && outcome == "success"', by: [src_ip]}
  - {id: bounded, title: T, kind: threshold, severity: 5, condition: 'source == "syslog"', group_by: [src_ip], at_most: 3, window: 2m}
`

// A state keeps an event past its window for the lateness of the sources
// its rule can match: a rule pinned to syslog keeps syslog's 2 minutes,
// one that could match an Azure export keeps Azure's 2 hours (the
// default source_lateness), as every rule did before, whatever its
// sources. At 100,000 addresses that was two hours of every key's events
// (docs/benchmarks.md, eighteenth session).
func TestStateKeepsTheLatenessOfItsRulesSources(t *testing.T) {
	set := loadSet(t, keepRules)
	w := NewWindows(DefaultLateness())
	want := map[string]time.Duration{"pinned": 2 * time.Minute, "open": 2 * time.Hour, "both": 2 * time.Hour, "bounded": 2 * time.Hour}
	for _, r := range set.Rules {
		if got := w.keep(r); got != want[r.ID] {
			t.Errorf("%s keeps %s past its window, want %s", r.ID, got, want[r.ID])
		}
	}

	// Thirty failures a minute apart: the pinned rule keeps those of its
	// window and syslog's lateness, the other all of them.
	store := NewMemStore()
	for _, id := range []string{"pinned", "open"} {
		r := set.Rule(id)
		for i := range 30 {
			m := &event.Match{RuleID: id, Key: "src_ip=203.0.113.5", Time: t0.Add(time.Duration(i) * time.Minute), EventID: fmt.Sprintf("e%02d", i)}
			if _, err := w.Apply(store, r, m); err != nil {
				t.Fatal(err)
			}
		}
		st, err := store.State(r, "src_ip=203.0.113.5", false)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(st.Times), map[string]int{"pinned": 5, "open": 30}[id]; got != want {
			t.Errorf("%s: the state keeps %d events, want %d", id, got, want)
		}
	}
}
