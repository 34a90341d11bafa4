package engine

import (
	"testing"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

// Evaluate hands emit a match it reuses (emit must not keep it): a match
// costs the allocations of its group key and carried fields only. One on
// the heap per match was a third of the rule filter's allocations
// (docs/benchmarks.md, seventh session).
func TestEvaluateAllocatesNoMatch(t *testing.T) {
	set, err := rules.Pack()
	if err != nil {
		t.Fatal(err)
	}
	ev := &event.Event{ID: "e1", Time: t0, Source: "syslog", Host: "web-01", App: "sshd", Category: "authentication",
		Action: "logon", Outcome: "failure", User: "root", SrcIP: "203.0.113.9", Message: "Failed password for root from 203.0.113.9 port 40000 ssh2"}
	var e Evaluator
	matches := 0
	emit := func(*rules.Rule, *event.Match) error { matches++; return nil }
	if err := e.Evaluate(set.Rules, ev, emit); err != nil {
		t.Fatal(err)
	}
	if matches < 2 {
		t.Fatalf("%d matches: the event tells nothing", matches)
	}
	perEvent := matches
	matches = 0
	allocs := testing.AllocsPerRun(100, func() { _ = e.Evaluate(set.Rules, ev, emit) })
	// A group key and an encoding of carried fields per match, at most.
	if limit := float64(2 * perEvent); allocs > limit {
		t.Errorf("%.1f allocations for %d matches, want at most %.0f", allocs, perEvent, limit)
	}
}
