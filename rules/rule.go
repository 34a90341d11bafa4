// Package rules is Outpost's rule language: YAML files of detection rules,
// validated and compiled at load, and the shipped rule pack.
//
// A rule file holds a list under `rules:`. Loading collects every problem in
// every file, each as `file:line: rule "id": message`, so a user fixes them
// in one pass; a set with any problem is rejected whole.
//
// Kinds (more come with the full language):
//
//	match      one event satisfying the condition is an alert
//	threshold  at least `threshold` matching events per group_by key within
//	           a sliding `window` of event time
//
// See docs/rules.md for the reference.
package rules

import (
	"strings"
	"time"

	"github.com/expr-lang/expr/vm"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// Kind is a rule kind.
type Kind string

// Rule kinds.
const (
	KindMatch     Kind = "match"
	KindThreshold Kind = "threshold"
)

// Rule is one compiled, validated rule. It is immutable after load and safe
// for concurrent use.
type Rule struct {
	ID          string
	Title       string
	Description string
	Kind        Kind
	Severity    int // 0-10
	Tags        []string
	GroupBy     []string
	Threshold   int           // threshold: events needed
	Window      time.Duration // threshold: sliding window, event time
	Suppress    time.Duration // at most one alert per key per Suppress, event time
	Fields      []string      // event fields carried into the alert
	Condition   string

	File string
	Line int

	program *vm.Program
	groupBy []getter
	fields  []getter
}

// Matches reports whether ev satisfies the rule's condition. v is reused
// across calls by one goroutine to avoid allocating a VM per event.
func (r *Rule) Matches(v *vm.VM, ev *event.Event) (bool, error) {
	out, err := v.Run(r.program, ev)
	if err != nil {
		return false, err
	}
	return out.(bool), nil
}

// GroupKey renders the group key of ev, as `field=value` pairs joined by
// ";" (separators in values escaped). ok is false when a group_by field is
// empty: such an event cannot be attributed to a group and is not counted.
func (r *Rule) GroupKey(ev *event.Event) (key string, ok bool) {
	if len(r.groupBy) == 0 {
		return "", true
	}
	var b strings.Builder
	for i, g := range r.groupBy {
		v := g(ev)
		if v == "" {
			return "", false
		}
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(r.GroupBy[i])
		b.WriteByte('=')
		b.WriteString(keyEscaper.Replace(v))
	}
	return b.String(), true
}

// CarriedFields returns the fields the rule carries into its alert, from ev.
// Empty values are left out.
func (r *Rule) CarriedFields(ev *event.Event) map[string]string {
	if len(r.fields) == 0 {
		return nil
	}
	m := make(map[string]string, len(r.fields))
	for i, g := range r.fields {
		if v := g(ev); v != "" {
			m[r.Fields[i]] = v
		}
	}
	return m
}

// Set is a loaded rule set.
type Set struct {
	Rules []*Rule // enabled rules, in file then document order
	byID  map[string]*Rule
}

// Rule returns the rule with id, or nil.
func (s *Set) Rule(id string) *Rule { return s.byID[id] }
