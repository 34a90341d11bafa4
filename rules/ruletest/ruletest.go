// Package ruletest runs the test cases of rule files (`tests:`) through the
// rule engine the appliance runs (aggregator/engine), in memory, in event
// time: what a rule test shows is what the appliance does.
package ruletest

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

// Result is the outcome of one test case.
type Result struct {
	Test   *rules.Test
	Alerts []*event.Alert
	Err    error  // a condition failed at run time
	Diff   string // empty when the alerts are the expected ones
}

// Pass reports whether the test passed.
func (r *Result) Pass() bool { return r.Err == nil && r.Diff == "" }

// Run feeds the test's events, in the order written, through the rules it
// names and compares the alerts with the expected ones.
func Run(set *rules.Set, t *rules.Test) *Result {
	res := &Result{Test: t}
	res.Alerts, res.Err = Alerts(set, t)
	if res.Err == nil {
		res.Diff = diff(t.Expect, res.Alerts)
	}
	return res
}

// Alerts returns what the test's events raise: they go, in the order
// written, through the engine the appliance runs (engine.Local, with the
// default lateness: the gate, the conditions, the windows, the watermark
// and its deadlines), and at the end the watermark moves on by the test's
// `advance`.
func Alerts(set *rules.Set, t *rules.Test) ([]*event.Alert, error) {
	rs := make([]*rules.Rule, 0, len(t.Rules))
	for _, id := range t.Rules {
		rs = append(rs, set.Rule(id))
	}
	lo := engine.NewLocal(rs, engine.DefaultLateness())
	var alerts []*event.Alert
	for _, ev := range t.Events {
		out, err := lo.Event(ev)
		if err != nil {
			return nil, err
		}
		alerts = append(alerts, out...)
	}
	return append(alerts, lo.Finish(t.Advance)...), nil
}

// diff pairs every expected alert with an alert that has its rule (and
// key, count and values where given); what is left over either way is the
// difference.
func diff(want []rules.Expected, got []*event.Alert) string {
	used := make([]bool, len(got))
	var missing []string
	for _, w := range want {
		found := false
		for i, a := range got {
			if !used[i] && matches(w, a) {
				used[i], found = true, true
				break
			}
		}
		if !found {
			missing = append(missing, fmt.Sprintf("  - expected %s", describeExpected(w)))
		}
	}
	var extra []string
	for i, a := range got {
		if !used[i] {
			extra = append(extra, "  + got      "+Describe(a))
		}
	}
	if len(missing) == 0 && len(extra) == 0 {
		return ""
	}
	return strings.Join(append(missing, extra...), "\n")
}

func matches(w rules.Expected, a *event.Alert) bool {
	if w.Rule != a.RuleID || (w.Key != "" && w.Key != a.Key) || (w.Count != 0 && w.Count != a.Count) {
		return false
	}
	if len(w.Values) > 0 {
		got := slices.Clone(a.Values)
		want := slices.Clone(w.Values)
		sort.Strings(got)
		sort.Strings(want)
		return slices.Equal(got, want)
	}
	return true
}

func describeExpected(w rules.Expected) string {
	s := "rule=" + w.Rule
	if w.Key != "" {
		s += " key=" + w.Key
	}
	if w.Count != 0 {
		s += fmt.Sprintf(" count=%d", w.Count)
	}
	if len(w.Values) > 0 {
		s += " values=" + strings.Join(w.Values, ",")
	}
	return s
}

// Describe renders an alert on one line for test output.
func Describe(a *event.Alert) string {
	s := fmt.Sprintf("rule=%s key=%s count=%d", a.RuleID, a.Key, a.Count)
	if len(a.Values) > 0 {
		s += " values=" + strings.Join(a.Values, ",")
	}
	if !a.FirstSeen.IsZero() {
		s += fmt.Sprintf(" first=%s last=%s", a.FirstSeen.Format(time.RFC3339), a.LastSeen.Format(time.RFC3339))
	}
	return s
}
