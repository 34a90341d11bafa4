// Package rules is Outpost's rule language: YAML files of detection rules,
// validated and compiled at load, and the shipped rule pack.
//
// A rule file holds `rules:`, and may hold `lists:` (named value lists,
// inline or from files), `macros:` (named condition fragments) and `tests:`
// (events in, alerts expected, run by `outpost rules test`). Loading collects
// every problem in every file, each as `file:line: rule "id": message`, so a
// user fixes them in one pass; a set with any problem is rejected whole.
//
// Kinds, all in event time:
//
//	match      one event satisfying the condition is an alert
//	threshold  at least `threshold` matching events per group key within a sliding `window`
//	distinct   at least `threshold` distinct values of `field` per group key within `window`
//	sequence   ordered `steps` (each its own condition, key fields and count) within `window`
//	absence    no event (or no `expect`ed event after a trigger) for `for`
//	new_value  the first time a value of `field` is seen for a group key, after `learning`
//
// See docs/rules.md for the reference.
package rules

import (
	"slices"
	"strings"
	"time"

	"github.com/expr-lang/expr/vm"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules/sigma"
)

// Kind is a rule kind.
type Kind string

// Rule kinds.
const (
	KindMatch     Kind = "match"
	KindThreshold Kind = "threshold"
	KindDistinct  Kind = "distinct"
	KindSequence  Kind = "sequence"
	KindAbsence   Kind = "absence"
	KindNewValue  Kind = "new_value"
)

var kinds = []Kind{KindMatch, KindThreshold, KindDistinct, KindSequence, KindAbsence, KindNewValue}

// MaxSteps bounds a sequence's steps: a window state keeps each event's
// step in a byte.
const MaxSteps = 255

// Step is one condition of a rule with the fields that key it. Every kind
// but sequence has one step (absence with `expect` has two: the trigger and
// the expected event).
type Step struct {
	Name      string
	Condition string
	By        []string // key fields; same number in every step of a rule
	Count     int      // sequence: events this step needs (default 1)

	program *vm.Program
	native  boolFn  // the program as closures, when it can be (native.go)
	guards  []guard // conjuncts checked before program runs (guard.go)
	by      []getter
}

// Rule is one compiled, validated rule. It is immutable after load and safe
// for concurrent use.
type Rule struct {
	ID          string
	Title       string
	Description string
	Kind        Kind
	Severity    int // 0-10
	Tags        []string
	GroupBy     []string // key field names (a sequence's first step's when not set)
	Threshold   int      // threshold, distinct: the fewest events (values) that fire
	// AtMost, when set, is the most events (values) that fire: the rule
	// is judged when the key's window closes (threshold, distinct).
	AtMost    int
	Window    time.Duration // threshold, distinct, sequence
	Field     string        // distinct, new_value: the field whose values count
	Unordered bool          // sequence: steps in any order
	For       time.Duration // absence
	Learning  time.Duration // new_value
	Suppress  time.Duration // at most one alert per key per Suppress, event time
	Fields    []string      // event fields carried into the alert
	// CEF maps CEF extension keys to event fields, replacing or adding to
	// the encoder's default mapping for this rule's alerts.
	CEF   map[string]string
	Steps []*Step
	// Fingerprint changes when anything that affects the rule's state
	// changes; window state is kept under it, so a reload keeps the state
	// of unchanged rules and starts changed ones afresh.
	Fingerprint string

	File string
	Line int
	// Sigma is the Sigma rule this rule was translated from, if it was;
	// SigmaCorrelation the Sigma correlation rule.
	Sigma            *sigma.Rule
	SigmaCorrelation *sigma.Correlation

	value      getter
	fields     []getter
	cefGetters []namedGetter // the fields CEF maps, carried too
}

type namedGetter struct {
	name string
	get  getter
}

// Hit is one step of r satisfied by an event.
type Hit struct {
	Step  int
	Key   string
	Value string
}

// Evaluate runs every step's condition against ev and appends a Hit for
// each satisfied step whose key fields are all set. noKey counts satisfied
// steps skipped for an empty key field. v is reused across calls by one
// goroutine to avoid allocating a VM per event.
func (r *Rule) Evaluate(v *vm.VM, ev *event.Event, hits []Hit) (_ []Hit, noKey int, err error) {
	for i, st := range r.Steps {
		if !passes(st.guards, ev) {
			continue
		}
		if st.native != nil {
			if !st.native(ev) {
				continue
			}
		} else {
			out, err := v.Run(st.program, ev)
			if err != nil {
				return hits, noKey, err
			}
			if !out.(bool) {
				continue
			}
		}
		key, ok := r.key(st, ev)
		if !ok {
			noKey++
			continue
		}
		h := Hit{Step: i, Key: key}
		if r.value != nil {
			if h.Value = r.value(ev); h.Value == "" {
				noKey++
				continue
			}
		}
		hits = append(hits, h)
	}
	return hits, noKey, nil
}

// key renders the group key: `name=value` pairs joined by ";" with the
// rule's key names and the step's values (so a sequence joins events whose
// key fields differ by name), separators in values escaped. ok is false when
// a value is empty: such an event cannot be attributed to a group.
func (r *Rule) key(st *Step, ev *event.Event) (string, bool) {
	if len(st.by) == 0 {
		return "", true
	}
	if len(st.by) == 1 { // the common case: one string built, no builder
		v := st.by[0](ev)
		if v == "" {
			return "", false
		}
		return r.GroupBy[0] + "=" + keyEscaper.Replace(v), true
	}
	var b strings.Builder
	for i, g := range st.by {
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
	if len(r.fields) == 0 && len(r.cefGetters) == 0 {
		return nil
	}
	m := make(map[string]string, len(r.fields)+len(r.cefGetters))
	for i, g := range r.fields {
		if v := g(ev); v != "" {
			m[r.Fields[i]] = v
		}
	}
	for _, g := range r.cefGetters {
		if v := g.get(ev); v != "" {
			m[g.name] = v
		}
	}
	return m
}

// EncodedCarriedFields is CarriedFields in a match's encoding
// (event.EncodeFields): what the rule filter puts in a match.
func (r *Rule) EncodedCarriedFields(ev *event.Event) []byte {
	n := len(r.fields) + len(r.cefGetters)
	if n == 0 {
		return nil
	}
	var nb, vb [24]string
	names, values := nb[:0], vb[:0]
	if n > len(nb) {
		names, values = make([]string, 0, n), make([]string, 0, n)
	}
	for i, g := range r.fields {
		names, values = append(names, r.Fields[i]), append(values, g(ev))
	}
	for _, g := range r.cefGetters {
		names, values = append(names, g.name), append(values, g.get(ev))
	}
	return event.EncodeFields(names, values)
}

// AlertFields splits the fields a match carried into those the alert lists
// (`fields:`) and its CEF mapping (CEF key → value, and "<key>Label" → the
// field's name for custom keys).
func (r *Rule) AlertFields(carried map[string]string) (fields, cefMap map[string]string) {
	if len(r.CEF) == 0 {
		return carried, nil
	}
	fields = make(map[string]string, len(r.Fields))
	for _, f := range r.Fields {
		if v, ok := carried[f]; ok {
			fields[f] = v
		}
	}
	cefMap = make(map[string]string, len(r.CEF))
	for key, f := range r.CEF {
		if v, ok := carried[f]; ok {
			cefMap[key] = v
			if key == "cs6" || strings.HasPrefix(key, "cn") {
				cefMap[key+"Label"] = f
			}
		}
	}
	return fields, cefMap
}

// Set is a loaded rule set.
type Set struct {
	Rules []*Rule // enabled rules, in file then document order
	Tests []*Test // test cases found in the files
	// Rejected are the Sigma rules of SigmaOptions.Dirs that were not
	// taken, and why.
	Rejected []Rejected
	byID     map[string]*Rule
	index    *Index
}

// Candidates returns the enabled rules to try on ev (Index.Candidates).
func (s *Set) Candidates(ev *event.Event, sc *Scratch) []*Rule {
	if s.index == nil {
		return s.Rules
	}
	return s.index.Candidates(ev, sc)
}

// For returns the enabled rules to try on ev, in the set's order: those
// that can match events of its source (see Index).
func (s *Set) For(ev *event.Event) []*Rule {
	if s.index == nil {
		return s.Rules
	}
	return s.index.For(ev)
}

// Rule returns the enabled rule with id, or nil.
func (s *Set) Rule(id string) *Rule { return s.byID[id] }

// Only returns a set of the enabled rules named by ids, in the set's order
// (the order the rule filter evaluates them in), without tests. Unknown
// ids are left out.
func (s *Set) Only(ids []string) *Set {
	out := &Set{byID: map[string]*Rule{}}
	for _, r := range s.Rules {
		if slices.Contains(ids, r.ID) {
			out.Rules = append(out.Rules, r)
			out.byID[r.ID] = r
		}
	}
	out.index = NewIndex(out.Rules)
	return out
}
