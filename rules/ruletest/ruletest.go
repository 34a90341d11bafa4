// Package ruletest runs the test cases of rule files (`tests:`) through the
// real rule engine — the conditions as the rule filter runs them and the
// window logic the windows stage runs — in memory, in event time.
package ruletest

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/expr-lang/expr/vm"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/window"
	"github.com/outpost-siem/outpost/rules"
)

// defaults are the windows stage's default settings, which tests run with:
// events stay in state for the largest allowed lateness of any source, and
// the watermark is the newest event time minus the default allowed
// lateness — as in the pipeline.
var defaults = func() window.Config {
	var c window.Config
	_ = c.Validate()
	return c
}()

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

// Alerts returns what the test's events raise.
func Alerts(set *rules.Set, t *rules.Test) ([]*event.Alert, error) {
	var v vm.VM
	type keyed struct {
		r   *rules.Rule
		key string
	}
	states := map[keyed]*window.State{}
	var order []keyed
	var alerts []*event.Alert
	var maxTime time.Time
	var hits []rules.Hit
	for _, ev := range t.Events {
		// An event stamped ahead of its `received` is placed at its
		// reception, by the watermark as by the windows (Match.Seen).
		seen := ev.SeenTime()
		if seen.After(maxTime) {
			maxTime = seen
		}
		for _, id := range t.Rules {
			r := set.Rule(id)
			var err error
			if hits, _, err = r.Evaluate(&v, ev, hits[:0]); err != nil {
				return nil, fmt.Errorf("rule %s on event %s: %w", id, ev.ID, err)
			}
			for _, h := range hits {
				k := keyed{r, h.Key}
				st, ok := states[k]
				if !ok {
					st = &window.State{}
					states[k] = st
					order = append(order, k)
				}
				m := &event.Match{RuleID: r.ID, Key: h.Key, Time: ev.Time, EventID: ev.ID, Step: h.Step, Value: h.Value, Fields: r.CarriedFields(ev), Seen: seen}
				if a, _ := window.Apply(r, st, m, defaults.MaxLateness()); a != nil {
					alerts = append(alerts, a)
				}
			}
		}
	}
	watermark := maxTime.Add(t.Advance - defaults.AllowedLateness).UnixNano()
	for _, k := range order {
		if a, _ := window.Expire(k.r, states[k], k.key, watermark); a != nil {
			alerts = append(alerts, a)
		}
	}
	return alerts, nil
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
