// Package sigma reads Sigma rules (the sigma-specification's rule format)
// and translates their detections into Outpost conditions: expressions in
// the language of native rules (docs/rules.md), over Outpost's event
// fields, using the helpers like(), like_cased(), num(), cidr(), iequals()
// and in_list(). The rules package turns a translated Sigma rule into a
// native one, so both run in the same engine, and `outpost rules convert`
// prints what a Sigma rule became.
//
// What this package cannot translate faithfully it refuses, with the
// reason: a Sigma rule never loads as one that silently matches nothing.
// docs/sigma.md lists what is supported.
package sigma

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Rule is one Sigma rule document as read.
type Rule struct {
	Title          string
	ID             string
	Name           string
	Status         string
	Description    string
	Level          string
	Author         string
	Tags           []string
	References     []string
	FalsePositives []string
	Fields         []string
	Logsource      Logsource
	// Timeframe is the older aggregation's window (`timeframe: 5m`).
	Timeframe string
	Line      int

	detection *yaml.Node
	node      *yaml.Node
}

// Logsource is the rule's `logsource`: what kind of log it is written for.
type Logsource struct {
	Category, Product, Service string
}

func (ls Logsource) String() string {
	var parts []string
	for _, p := range [][2]string{{"category", ls.Category}, {"product", ls.Product}, {"service", ls.Service}} {
		if p[1] != "" {
			parts = append(parts, p[0]+": "+p[1])
		}
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// Error is a problem with a rule, at a line of its file.
type Error struct {
	Line int
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func errorf(line int, format string, args ...any) *Error {
	return &Error{Line: line, Msg: fmt.Sprintf(format, args...)}
}

// Is reports whether a YAML document is a Sigma rule: a mapping holding
// `detection` and `logsource`, or `correlation`.
func Is(doc *yaml.Node) bool {
	if doc.Kind != yaml.MappingNode {
		return false
	}
	has := func(k string) bool { return valueOf(doc, k) != nil }
	return has("detection") && has("logsource") || has("correlation") ||
		has("action") && (has("detection") || has("logsource"))
}

// IsCorrelation reports whether a Sigma document is a correlation rule.
func IsCorrelation(doc *yaml.Node) bool { return valueOf(doc, "correlation") != nil }

func valueOf(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// Statuses and levels of the specification.
var (
	Statuses = []string{"stable", "test", "experimental", "deprecated", "unsupported"}
	Levels   = []string{"informational", "low", "medium", "high", "critical"}
)

// Parse reads a Sigma rule document (not a correlation). Keys it does not
// know (custom attributes, which the specification allows) are ignored.
func Parse(doc *yaml.Node) (*Rule, error) {
	r := &Rule{Line: doc.Line, node: doc}
	if a := valueOf(doc, "action"); a != nil {
		return nil, errorf(a.Line, "action: %s: Sigma v1 rule collections (action: global, reset, repeat) are not supported; write each rule whole", a.Value)
	}
	str := func(key string, dst *string) error {
		n := valueOf(doc, key)
		if n == nil {
			return nil
		}
		if n.Kind != yaml.ScalarNode {
			return errorf(n.Line, "%s: expected a string", key)
		}
		*dst = n.Value
		return nil
	}
	list := func(key string, dst *[]string) error {
		n := valueOf(doc, key)
		if n == nil {
			return nil
		}
		if n.Kind == yaml.ScalarNode {
			*dst = []string{n.Value}
			return nil
		}
		if err := n.Decode(dst); err != nil {
			return errorf(n.Line, "%s: expected a list of strings", key)
		}
		return nil
	}
	for _, f := range []error{
		str("title", &r.Title), str("id", &r.ID), str("name", &r.Name), str("status", &r.Status),
		str("description", &r.Description), str("level", &r.Level), str("author", &r.Author),
		str("timeframe", &r.Timeframe),
		list("tags", &r.Tags), list("references", &r.References), list("falsepositives", &r.FalsePositives),
		list("fields", &r.Fields),
	} {
		if f != nil {
			return nil, f
		}
	}
	if r.Title == "" {
		return nil, errorf(doc.Line, "title: required")
	}
	if err := checkStatusLevel(doc.Line, r.Status, r.Level); err != nil {
		return nil, err
	}
	ls := valueOf(doc, "logsource")
	if ls == nil || ls.Kind != yaml.MappingNode {
		return nil, errorf(doc.Line, "logsource: required, a mapping of category, product, service")
	}
	for i := 0; i+1 < len(ls.Content); i += 2 {
		k, v := ls.Content[i].Value, ls.Content[i+1].Value
		switch k {
		case "category":
			r.Logsource.Category = v
		case "product":
			r.Logsource.Product = v
		case "service":
			r.Logsource.Service = v
		}
	}
	r.detection = valueOf(doc, "detection")
	if r.detection == nil || r.detection.Kind != yaml.MappingNode {
		return nil, errorf(doc.Line, "detection: required, a mapping of search identifiers and condition")
	}
	return r, nil
}

// checkStatusLevel refuses a status or level the specification does not
// define (empty is allowed).
func checkStatusLevel(line int, status, level string) error {
	if status != "" && !slices.Contains(Statuses, status) {
		return errorf(line, "status: %q is not one of %s", status, strings.Join(Statuses, ", "))
	}
	if level != "" && !slices.Contains(Levels, level) {
		return errorf(line, "level: %q is not one of %s", level, strings.Join(Levels, ", "))
	}
	return nil
}

// Resolver gives the Outpost expression for a Sigma field name: a string
// valued accessor such as `src_ip` or `attrs["EventID"]`.
type Resolver func(field string) (string, error)

// Translation is what a rule's detection became.
type Translation struct {
	// Condition is the detection as an Outpost condition.
	Condition string
	// Aggregation is the older `| count() ...` part of the condition, if
	// any.
	Aggregation *Aggregation
}

// Translate translates the rule's detection, resolving field names with
// field.
func (r *Rule) Translate(field Resolver) (*Translation, error) {
	det := r.detection
	var ids []string
	searches := map[string]*yaml.Node{}
	var condNode *yaml.Node
	for i := 0; i+1 < len(det.Content); i += 2 {
		k, v := det.Content[i], det.Content[i+1]
		switch k.Value {
		case "condition":
			condNode = v
		case "timeframe":
			if r.Timeframe == "" {
				r.Timeframe = v.Value
			}
		default:
			ids = append(ids, k.Value)
			searches[k.Value] = v
		}
	}
	sort.Strings(ids)
	if condNode == nil {
		return nil, errorf(det.Line, "detection.condition: required")
	}
	var conds []string
	switch condNode.Kind {
	case yaml.ScalarNode:
		conds = []string{condNode.Value}
	case yaml.SequenceNode:
		// Several conditions (an older form): any of them.
		if err := condNode.Decode(&conds); err != nil || len(conds) == 0 {
			return nil, errorf(condNode.Line, "detection.condition: expected a string or a list of strings")
		}
	default:
		return nil, errorf(condNode.Line, "detection.condition: expected a string")
	}
	tr := &Translation{}
	c := &compiler{field: field, searches: searches, done: map[string]string{}}
	var parts []string
	for _, cond := range conds {
		text, agg, _ := strings.Cut(cond, "|")
		n, err := parseCondition(text, ids)
		if err != nil {
			return nil, errorf(condNode.Line, "detection.%v", err)
		}
		if strings.Contains(cond, "|") {
			if len(conds) > 1 {
				return nil, errorf(condNode.Line, "detection.condition: an aggregation (|) in a list of conditions is not supported")
			}
			a, err := parseAggregation(agg)
			if err != nil {
				return nil, errorf(condNode.Line, "detection.condition: %v", err)
			}
			tr.Aggregation = a
		}
		s, err := c.node(n)
		if err != nil {
			return nil, err
		}
		if s == "" {
			return nil, errorf(condNode.Line, "detection: every search identifier the condition names was dropped by a pipeline (drop_detection_item)")
		}
		parts = append(parts, s)
	}
	if len(parts) == 1 {
		tr.Condition = parts[0]
	} else {
		tr.Condition = "(" + strings.Join(parts, ") or (") + ")"
	}
	return tr, nil
}

// compiler renders condition nodes, translating each search identifier
// once.
type compiler struct {
	field    Resolver
	searches map[string]*yaml.Node
	done     map[string]string
}

func (c *compiler) node(n node) (string, error) {
	switch n := n.(type) {
	case andNode:
		return c.binary(n.l, n.r, "and")
	case orNode:
		return c.binary(n.l, n.r, "or")
	case notNode:
		x, err := c.node(n.x)
		if err != nil || x == "" {
			return "", err
		}
		return "not (" + x + ")", nil
	case idNode:
		return c.search(n.name)
	case ofNode:
		op := " or "
		if n.all {
			op = " and "
		}
		var parts []string
		size := 0
		for _, name := range n.names {
			s, err := c.search(name)
			if err != nil {
				return "", err
			}
			if s != "" {
				if size += len(s); size > MaxConditionBytes {
					return "", fmt.Errorf("detection.condition: translates to more than %d bytes", MaxConditionBytes)
				}
				parts = append(parts, "("+s+")")
			}
		}
		return strings.Join(parts, op), nil
	}
	return "", fmt.Errorf("unknown condition node %T", n)
}

func (c *compiler) binary(l, r node, op string) (string, error) {
	ls, err := c.node(l)
	if err != nil {
		return "", err
	}
	rs, err := c.node(r)
	if err != nil {
		return "", err
	}
	// A side a pipeline dropped leaves the expression.
	switch {
	case ls == "":
		return rs, nil
	case rs == "":
		return ls, nil
	case len(ls)+len(rs) > MaxConditionBytes:
		return "", fmt.Errorf("detection.condition: translates to more than %d bytes", MaxConditionBytes)
	}
	return "(" + ls + ") " + op + " (" + rs + ")", nil
}

func (c *compiler) search(name string) (string, error) {
	if s, ok := c.done[name]; ok {
		return s, nil
	}
	s, err := c.searchNode(name, c.searches[name])
	if err != nil {
		return "", err
	}
	c.done[name] = s
	return s, nil
}
