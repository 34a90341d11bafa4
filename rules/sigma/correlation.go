package sigma

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Correlation is a Sigma correlation rule (specification v2): a condition
// over the matches of other rules, per group, within a timespan.
type Correlation struct {
	Title       string
	ID          string
	Name        string
	Status      string
	Description string
	Level       string
	Tags        []string
	Line        int

	Type    string   // event_count, value_count, temporal, temporal_ordered
	Rules   []string // the rules it correlates, by id or name
	GroupBy []string
	// Timespan as written (e.g. 5m).
	Timespan string
	// Condition: operator -> number (gt, gte, lt, lte, eq, neq); Field
	// for value_count.
	Condition map[string]int
	Field     string
	// Aliases: alias -> rule (id or name) -> the field in that rule's
	// events.
	Aliases  map[string]map[string]string
	Generate bool
}

// CorrelationTypes are the types of the specification; Outpost runs the
// first four.
var CorrelationTypes = []string{"event_count", "value_count", "temporal", "temporal_ordered", "value_sum", "value_avg", "value_percentile"}

var conditionOps = []string{"gt", "gte", "lt", "lte", "eq", "neq"}

// MaxCount bounds the counts of conditions: a window holds at most that
// many events.
const MaxCount = 1_000_000

// ParseCorrelation reads a correlation rule document.
func ParseCorrelation(doc *yaml.Node) (*Correlation, error) {
	c := &Correlation{Line: doc.Line}
	var raw struct {
		Title       string   `yaml:"title"`
		ID          string   `yaml:"id"`
		Name        string   `yaml:"name"`
		Status      string   `yaml:"status"`
		Description string   `yaml:"description"`
		Level       string   `yaml:"level"`
		Tags        []string `yaml:"tags"`
	}
	if err := doc.Decode(&raw); err != nil {
		return nil, errorf(doc.Line, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	c.Title, c.ID, c.Name, c.Status, c.Description, c.Level, c.Tags = raw.Title, raw.ID, raw.Name, raw.Status, raw.Description, raw.Level, raw.Tags
	if c.Title == "" {
		return nil, errorf(doc.Line, "title: required")
	}
	if err := checkStatusLevel(doc.Line, c.Status, c.Level); err != nil {
		return nil, err
	}
	cn := valueOf(doc, "correlation")
	if cn.Kind != yaml.MappingNode {
		return nil, errorf(cn.Line, "correlation: expected a mapping")
	}
	bad := func(key string, format string, args ...any) error {
		line := cn.Line
		if n := valueOf(cn, key); n != nil {
			line = n.Line
		}
		return errorf(line, "correlation.%s: %s", key, fmt.Sprintf(format, args...))
	}
	c.Type = scalarOf(valueOf(cn, "type"))
	if !slices.Contains(CorrelationTypes, c.Type) {
		return nil, bad("type", "%q is not one of %s", c.Type, strings.Join(CorrelationTypes, ", "))
	}
	var err error
	if c.Rules, err = stringsOf(valueOf(cn, "rules")); err != nil || len(c.Rules) == 0 {
		return nil, bad("rules", "required: the ids or names of the rules it correlates")
	}
	if c.GroupBy, err = stringsOf(valueOf(cn, "group-by")); err != nil {
		return nil, bad("group-by", "expected a list of field names")
	}
	c.Timespan = scalarOf(valueOf(cn, "timespan"))
	if c.Timespan == "" {
		return nil, bad("timespan", "required, e.g. 5m")
	}
	if g := valueOf(cn, "generate"); g != nil {
		if err := g.Decode(&c.Generate); err != nil {
			return nil, bad("generate", "expected true or false")
		}
	}
	if cond := valueOf(cn, "condition"); cond != nil {
		if cond.Kind != yaml.MappingNode {
			return nil, bad("condition", "expected a mapping such as {gte: 10}")
		}
		c.Condition = map[string]int{}
		for i := 0; i+1 < len(cond.Content); i += 2 {
			k, v := cond.Content[i].Value, cond.Content[i+1]
			switch {
			case k == "field":
				c.Field = v.Value
			case slices.Contains(conditionOps, k):
				n, err := strconv.Atoi(v.Value)
				if err != nil || n < 0 || n > MaxCount {
					return nil, bad("condition", "%s: expected a whole number from 0 to %d, got %q", k, MaxCount, v.Value)
				}
				c.Condition[k] = n
			default:
				return nil, bad("condition", "unknown key %q (expected field or one of %s)", k, strings.Join(conditionOps, ", "))
			}
		}
	}
	if a := valueOf(cn, "aliases"); a != nil {
		if err := a.Decode(&c.Aliases); err != nil {
			return nil, bad("aliases", "expected alias: {rule: field, ...}")
		}
	}
	switch c.Type {
	case "event_count", "value_count":
		if len(c.Condition) == 0 {
			return nil, bad("condition", "required for %s, e.g. {gte: 10}", c.Type)
		}
	}
	if c.Type == "value_count" && c.Field == "" {
		return nil, bad("condition", "value_count needs field: the field whose distinct values count")
	}
	return c, nil
}

func scalarOf(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

func stringsOf(n *yaml.Node) ([]string, error) {
	if n == nil {
		return nil, nil
	}
	if n.Kind == yaml.ScalarNode {
		return []string{n.Value}, nil
	}
	var out []string
	err := n.Decode(&out)
	return out, err
}

// Bounds returns the counts the condition accepts: from least to most
// (most 0: no upper bound). gt and gte set the least, lt and lte the most,
// eq both; together they make a range. A condition with an upper bound can
// only be judged once the window has closed. An error names what Outpost
// cannot run.
func (c *Correlation) Bounds() (least, most int, err error) {
	var ops []string
	for op := range c.Condition {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	least = 1 // a key's window holds at least the event that opened it
	bounded := false
	upper := func(n int) {
		if !bounded || n < most {
			most = n
		}
		bounded = true
	}
	for _, op := range ops {
		n := c.Condition[op]
		switch op {
		case "gt":
			least = max(least, n+1)
		case "gte":
			least = max(least, n)
		case "lt":
			upper(n - 1)
		case "lte":
			upper(n)
		case "eq":
			least = max(least, n)
			upper(n)
		default:
			return 0, 0, fmt.Errorf("condition %s: not supported (gt, gte, lt, lte and eq are)", op)
		}
	}
	if bounded && least > most {
		if most < 1 {
			return 0, 0, fmt.Errorf("condition: at most %d could never hold: a key Outpost counts has at least one event", most)
		}
		return 0, 0, fmt.Errorf("condition: from %d to %d is empty", least, most)
	}
	return least, most, nil
}
