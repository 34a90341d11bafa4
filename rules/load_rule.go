package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/outpost-siem/outpost/aggregator/event"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/outpost-siem/outpost/forwarder/cef"
)

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)

var ruleKeys = []string{"id", "title", "description", "kind", "severity", "tags", "enabled",
	"condition", "group_by", "threshold", "window", "suppress", "fields", "field", "steps",
	"unordered", "for", "expect", "learning", "cef", "at_most"}

// kindKeys are the keys that only some kinds take.
var kindKeys = map[string][]Kind{
	"threshold": {KindThreshold, KindDistinct},
	"at_most":   {KindThreshold, KindDistinct},
	"window":    {KindThreshold, KindDistinct, KindSequence},
	"field":     {KindDistinct, KindNewValue},
	"steps":     {KindSequence},
	"unordered": {KindSequence},
	"for":       {KindAbsence},
	"expect":    {KindAbsence},
	"learning":  {KindNewValue},
	"condition": {KindMatch, KindThreshold, KindDistinct, KindAbsence, KindNewValue},
}

// maxAtMost bounds at_most: a window judged at its close keeps up to
// at_most+1 events per key.
const maxAtMost = 10000

var stepKeys = []string{"name", "condition", "by", "count"}

func (l *loader) rule(file string, n *yaml.Node) {
	id := ""
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "id" {
				id = n.Content[i+1].Value
			}
		}
	}
	nodes, ok := l.mapping(file, n, id, ruleKeys)
	if !ok {
		return
	}
	nerr := len(l.errs)
	bad := func(key, format string, args ...any) {
		line := n.Line
		if v, ok := nodes[key]; ok {
			line = v.Line
		}
		l.errorf(file, line, id, "%s: %s", key, fmt.Sprintf(format, args...))
	}
	r := &Rule{File: file, Line: n.Line, ID: id}
	switch {
	case id == "":
		bad("id", "required")
	case !idPattern.MatchString(id):
		bad("id", "%q must be lowercase letters, digits, '.', '_' or '-' (at most 128)", id)
	default:
		if prev, dup := l.seen[id]; dup {
			bad("id", "duplicate id, first defined at %s", prev)
		} else {
			l.seen[id] = fmt.Sprintf("%s:%d", file, n.Line)
		}
	}
	r.Title = scalar(nodes["title"])
	if r.Title == "" {
		bad("title", "required")
	}
	r.Description = scalar(nodes["description"])
	r.Kind = Kind(scalar(nodes["kind"]))
	if !containsKind(kinds, r.Kind) {
		if r.Kind == "" {
			bad("kind", "required (one of %s)", kindList())
		} else {
			bad("kind", "unknown kind %q (expected one of %s)", r.Kind, kindList())
		}
	} else {
		for key, ks := range kindKeys {
			if _, set := nodes[key]; set && !containsKind(ks, r.Kind) {
				bad(key, "does not apply to kind %s", r.Kind)
			}
		}
	}
	if sev, err := parseSeverity(scalar(nodes["severity"])); err != nil {
		bad("severity", "%v", err)
	} else {
		r.Severity = sev
	}
	enabled := true
	if v, ok := nodes["enabled"]; ok {
		if err := v.Decode(&enabled); err != nil {
			bad("enabled", "expected true or false")
		}
	}
	if v, ok := nodes["unordered"]; ok {
		if err := v.Decode(&r.Unordered); err != nil {
			bad("unordered", "expected true or false")
		}
	}
	r.Tags = stringList(nodes["tags"], func(f string, a ...any) { bad("tags", f, a...) })
	r.GroupBy = stringList(nodes["group_by"], func(f string, a ...any) { bad("group_by", f, a...) })
	r.Fields = stringList(nodes["fields"], func(f string, a ...any) { bad("fields", f, a...) })
	for _, f := range r.Fields {
		if g, ok := lookupField(f); ok {
			r.fields = append(r.fields, g)
		} else {
			bad("fields", "unknown field %q (expected one of: %s, or attrs.<name>)", f, knownFields())
		}
	}
	if n, ok := nodes["cef"]; ok {
		l.cefMapping(r, n, func(f string, a ...any) { bad("cef", f, a...) })
	}
	r.Field = scalar(nodes["field"])
	if r.Field != "" {
		if g, ok := lookupField(r.Field); ok {
			r.value = g
		} else {
			bad("field", "unknown field %q (expected one of: %s, or attrs.<name>)", r.Field, knownFields())
		}
	} else if r.Kind == KindDistinct || r.Kind == KindNewValue {
		bad("field", "required for kind %s: the field whose values count", r.Kind)
	}
	dur := func(key string) time.Duration {
		n := nodes[key]
		if n == nil {
			return 0
		}
		d, err := time.ParseDuration(n.Value)
		if err != nil || d < 0 {
			bad(key, "invalid duration %q (expected e.g. 90s, 5m, 24h)", n.Value)
			return 0
		}
		return d
	}
	r.Suppress, r.Window, r.For, r.Learning = dur("suppress"), dur("window"), dur("for"), dur("learning")
	if v, ok := nodes["threshold"]; ok {
		if err := v.Decode(&r.Threshold); err != nil {
			bad("threshold", "expected an integer")
		}
	}
	if v, ok := nodes["at_most"]; ok {
		if err := v.Decode(&r.AtMost); err != nil || r.AtMost < 1 || r.AtMost > maxAtMost {
			bad("at_most", "expected an integer from 1 to %d", maxAtMost)
		} else if _, set := nodes["threshold"]; !set {
			r.Threshold = 1 // "at most N": from the window's first event
		}
	}
	switch r.Kind {
	case KindThreshold, KindDistinct:
		if r.Threshold < 1 {
			bad("threshold", "required for kind %s: an integer of at least 1", r.Kind)
		} else if r.AtMost > 0 && r.Threshold > r.AtMost {
			bad("at_most", "%d is below threshold %d: the rule could never fire", r.AtMost, r.Threshold)
		}
	case KindAbsence:
		if r.For <= 0 {
			bad("for", "required for kind absence: how long the silence must last, e.g. 15m")
		}
	}
	if (r.Kind == KindThreshold || r.Kind == KindDistinct || r.Kind == KindSequence) && r.Window <= 0 {
		bad("window", "required for kind %s: a duration such as 5m", r.Kind)
	}

	// Steps: a sequence lists them; every other kind has one built from
	// condition and group_by (absence with expect: two).
	if r.Kind == KindSequence {
		l.steps(file, r, nodes["steps"], bad)
	} else if containsKind(kinds, r.Kind) {
		cond := scalar(nodes["condition"])
		if strings.TrimSpace(cond) == "" {
			bad("condition", "required: an expression over the event, e.g. app == \"sshd\" && outcome == \"failure\"")
		}
		r.Steps = []*Step{{Name: "condition", Condition: cond, By: r.GroupBy, Count: 1}}
		if exp, ok := nodes["expect"]; ok {
			if exp.Kind != yaml.ScalarNode || strings.TrimSpace(exp.Value) == "" {
				bad("expect", "expected an expression for the event that must follow, or leave expect out")
			}
			r.Steps = append(r.Steps, &Step{Name: "expect", Condition: exp.Value, By: r.GroupBy, Count: 1})
		}
		keys := []string{"condition", "expect"}
		for i, st := range r.Steps {
			l.compileStep(r, st, func(f string, a ...any) { bad(keys[i], f, a...) })
			l.keyGetters(st, func(f string, a ...any) { bad("group_by", f, a...) })
		}
	}
	if len(l.errs) > nerr {
		return
	}
	r.Fingerprint = fingerprint(n)
	if enabled {
		l.set.Rules = append(l.set.Rules, r)
		l.set.byID[r.ID] = r
	}
}

func (l *loader) steps(file string, r *Rule, n *yaml.Node, bad func(string, string, ...any)) {
	if n == nil || n.Kind != yaml.SequenceNode || len(n.Content) < 2 {
		bad("steps", "required for kind sequence: a list of at least two steps")
		return
	}
	if len(n.Content) > MaxSteps {
		bad("steps", "at most %d steps, got %d", MaxSteps, len(n.Content))
		return
	}
	for i, sn := range n.Content {
		nodes, ok := l.mapping(file, sn, r.ID, stepKeys)
		if !ok {
			continue
		}
		st := &Step{Name: scalar(nodes["name"]), Condition: scalar(nodes["condition"]), Count: 1}
		if st.Name == "" {
			st.Name = "step" + strconv.Itoa(i+1)
		}
		stepBad := func(f string, a ...any) {
			l.errorf(file, sn.Line, r.ID, "steps[%d] (%s): %s", i, st.Name, fmt.Sprintf(f, a...))
		}
		if v, ok := nodes["count"]; ok {
			if err := v.Decode(&st.Count); err != nil || st.Count < 1 {
				stepBad("count: expected an integer of at least 1")
			}
		}
		st.By = stringList(nodes["by"], stepBad)
		if len(st.By) == 0 {
			st.By = r.GroupBy
		}
		if strings.TrimSpace(st.Condition) == "" {
			stepBad("condition: required")
		}
		r.Steps = append(r.Steps, st)
		l.compileStep(r, st, func(f string, a ...any) { stepBad("condition: "+f, a...) })
		l.keyGetters(st, stepBad)
	}
	if len(r.GroupBy) == 0 && len(r.Steps) > 0 {
		r.GroupBy = r.Steps[0].By
	}
	for i, st := range r.Steps {
		if len(st.By) != len(r.GroupBy) {
			bad("steps", "steps[%d] (%s) is keyed by %d field(s), the rule by %d: every step joins on the same number of fields", i, st.Name, len(st.By), len(r.GroupBy))
		}
	}
}

func (l *loader) keyGetters(st *Step, bad func(string, ...any)) {
	for _, f := range st.By {
		g, ok := lookupField(f)
		if !ok {
			bad("unknown field %q (expected one of: %s, or attrs.<name>)", f, knownFields())
			continue
		}
		st.by = append(st.by, g)
	}
}

// fingerprint hashes the rule's YAML as written: any edit gives the rule a
// new window state.
func fingerprint(n *yaml.Node) string {
	b, _ := yaml.Marshal(n)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}

func stringList(n *yaml.Node, bad func(string, ...any)) []string {
	if n == nil {
		return nil
	}
	if n.Kind == yaml.ScalarNode {
		return []string{n.Value}
	}
	var out []string
	if err := n.Decode(&out); err != nil {
		bad("expected a list of strings")
		return nil
	}
	return out
}

// Severity names map to the middle-to-top of CEF's buckets.
var severityNames = map[string]int{"low": 3, "medium": 5, "high": 8, "critical": 10}

func parseSeverity(s string) (int, error) {
	if s == "" {
		return 0, errors.New("required: 0-10 or low, medium, high, critical")
	}
	if v, ok := severityNames[strings.ToLower(s)]; ok {
		return v, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 10 {
		return 0, fmt.Errorf("%q is not 0-10 or low, medium, high, critical", s)
	}
	return n, nil
}

func containsKind(list []Kind, k Kind) bool {
	for _, v := range list {
		if v == k {
			return true
		}
	}
	return false
}

func kindList() string {
	s := make([]string, len(kinds))
	for i, k := range kinds {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}

func knownFields() string {
	names := make([]string, 0, len(fieldGetters)+len(event.Schema))
	for k := range fieldGetters {
		names = append(names, k)
	}
	names = append(names, event.Schema...)
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// fieldName is what a field mapped to a CEF key may be called: it becomes
// the label of custom keys, written unescaped.
var fieldName = regexp.MustCompile(`^[A-Za-z0-9_.]+$`)

// cefMapping reads `cef:`, CEF key → event field, and adds the fields to
// those the rule carries.
func (l *loader) cefMapping(r *Rule, n *yaml.Node, bad func(string, ...any)) {
	var m map[string]string
	if err := n.Decode(&m); err != nil {
		bad("expected a mapping of CEF key to event field, e.g. {act: action, fname: attrs.file}")
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	r.CEF = map[string]string{}
	for _, key := range keys {
		field := m[key]
		if !cef.IsMappable(key) {
			bad("%q is not a CEF key a rule may map (one of: %s)", key, strings.Join(cef.MappableKeys(), ", "))
			continue
		}
		g, ok := lookupField(field)
		if !ok || !fieldName.MatchString(field) {
			bad("%s: unknown field %q (expected one of: %s, or attrs.<name>)", key, field, knownFields())
			continue
		}
		r.CEF[key] = field
		r.cefGetters = append(r.cefGetters, namedGetter{field, g})
	}
}
