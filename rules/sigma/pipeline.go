package sigma

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"regexp"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// A pipeline says how the rules of some logsources run on Outpost's
// events: a subset of pySigma's processing pipelines, in its YAML format.
//
//	name: outpost-azure
//	priority: 10
//	transformations:
//	  - id: signinlogs-source            # optional, for messages
//	    type: add_condition              # route: only events with these field values
//	    conditions: {source: azure.signin}
//	    rule_conditions:
//	      - {type: logsource, product: azure, service: signinlogs}
//	  - type: field_name_mapping         # Sigma field -> Outpost field
//	    mapping: {ResultType: attrs.result_type, IPAddress: src_ip}
//	    rule_conditions: [...]
//	  - type: rule_failure               # refuse the rule, with this message
//	    message: ...
//	    rule_conditions: [...]
//	  - type: record_fields              # Outpost's own: read unmapped fields
//	    rule_conditions: [...]           # from the original record
//
// A transformation applies to a rule when every one of its rule conditions
// holds (`rule_cond_op: or`: any). The only rule condition is `logsource`:
// each of category, product and service it names equals the rule's
// (without regard to case). Pipelines apply in priority order, then name.
//
// In Outpost, a rule runs only if some add_condition routes it to events,
// and every field it names is mapped, is one of Outpost's own field names,
// or is read from the original record (record_fields, for sources that
// fill attrs["rec.<path>"] on demand, as the Azure source does): a field
// nothing provides would be a rule that silently matches nothing, so the
// rule is refused with the reason instead.

// Pipeline is a parsed pipeline.
type Pipeline struct {
	Name            string
	Priority        int
	File            string
	Transformations []*Transformation
}

// Transformation is one step of a pipeline.
type Transformation struct {
	ID   string
	Type string
	// add_condition: Outpost field -> value (exact).
	Conditions map[string]string
	// field_name_mapping: Sigma field -> Outpost field.
	Mapping map[string]string
	// drop_detection_item: the fields (field_name_conditions of type
	// include_fields, plain mode) whose items are dropped.
	DropFields []string
	// rule_failure: why.
	Message        string
	RuleConditions []Logsource
	Or             bool
	Line           int
}

// conditionField is what an add_condition may name: an Outpost field.
var conditionField = regexp.MustCompile(`^[a-z_]+$`)

var transformationTypes = []string{"add_condition", "field_name_mapping", "field_name_prefix_mapping", "drop_detection_item", "rule_failure", "detection_item_failure", "record_fields"}

// applies reports whether t applies to a rule of logsource ls.
func (t *Transformation) applies(ls Logsource) bool {
	if len(t.RuleConditions) == 0 {
		return true
	}
	for _, c := range t.RuleConditions {
		ok := (c.Category == "" || strings.EqualFold(c.Category, ls.Category)) &&
			(c.Product == "" || strings.EqualFold(c.Product, ls.Product)) &&
			(c.Service == "" || strings.EqualFold(c.Service, ls.Service))
		if ok && t.Or {
			return true
		}
		if !ok && !t.Or {
			return false
		}
	}
	return !t.Or
}

// ParsePipeline reads one pipeline file.
func ParsePipeline(file string, data []byte) (*Pipeline, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: an empty pipeline", file)
		}
		return nil, fmt.Errorf("%s: %v", file, err)
	}
	var raw struct {
		Name            string `yaml:"name"`
		Priority        int    `yaml:"priority"`
		Transformations []struct {
			ID             string            `yaml:"id"`
			Type           string            `yaml:"type"`
			Conditions     map[string]string `yaml:"conditions"`
			Mapping        map[string]string `yaml:"mapping"`
			Message        string            `yaml:"message"`
			RuleCondOp     string            `yaml:"rule_cond_op"`
			FieldNameConds []struct {
				Type   string   `yaml:"type"`
				Fields []string `yaml:"fields"`
				Mode   string   `yaml:"mode"`
			} `yaml:"field_name_conditions"`
			RuleConditions []struct {
				Type     string `yaml:"type"`
				Category string `yaml:"category"`
				Product  string `yaml:"product"`
				Service  string `yaml:"service"`
			} `yaml:"rule_conditions"`
		} `yaml:"transformations"`
	}
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true) // a misspelt key must not widen what a transformation applies to
	if err := strict.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%s: %v", file, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	p := &Pipeline{Name: raw.Name, Priority: raw.Priority, File: file}
	if p.Name == "" {
		return nil, fmt.Errorf("%s: name: required", file)
	}
	var tnodes []*yaml.Node
	if n := valueOf(doc.Content[0], "transformations"); n != nil {
		tnodes = n.Content
	}
	for i, rt := range raw.Transformations {
		line := 0
		if i < len(tnodes) {
			line = tnodes[i].Line
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%s:%d: transformation %d (%s): %s", file, line, i+1, rt.Type, fmt.Sprintf(format, args...))
		}
		if !slices.Contains(transformationTypes, rt.Type) {
			return nil, bad("type %q is not supported (Outpost supports: %s)", rt.Type, strings.Join(transformationTypes, ", "))
		}
		t := &Transformation{ID: rt.ID, Type: rt.Type, Conditions: rt.Conditions, Mapping: rt.Mapping, Message: rt.Message, Line: line}
		switch rt.RuleCondOp {
		case "", "and":
		case "or":
			t.Or = true
		default:
			return nil, bad("rule_cond_op %q: expected and or or", rt.RuleCondOp)
		}
		for _, c := range rt.RuleConditions {
			if c.Type != "logsource" {
				return nil, bad("rule condition type %q is not supported (only logsource)", c.Type)
			}
			t.RuleConditions = append(t.RuleConditions, Logsource{Category: c.Category, Product: c.Product, Service: c.Service})
		}
		switch t.Type {
		case "add_condition":
			if len(t.Conditions) == 0 {
				return nil, bad("conditions: required")
			}
			for k := range t.Conditions {
				if !conditionField.MatchString(k) {
					return nil, bad("conditions: %q is not a field name (one of Outpost's string fields)", k)
				}
			}
		case "field_name_mapping", "field_name_prefix_mapping":
			if len(t.Mapping) == 0 {
				return nil, bad("mapping: required")
			}
		case "drop_detection_item":
			for _, fc := range rt.FieldNameConds {
				if fc.Type != "include_fields" || (fc.Mode != "" && fc.Mode != "plain") {
					return nil, bad("field_name_conditions: only include_fields in plain mode is supported")
				}
				t.DropFields = append(t.DropFields, fc.Fields...)
			}
			if len(t.DropFields) == 0 {
				return nil, bad("field_name_conditions: an include_fields condition naming the fields is required")
			}
		case "rule_failure", "detection_item_failure":
			if t.Message == "" {
				return nil, bad("message: required")
			}
		}
		p.Transformations = append(p.Transformations, t)
	}
	return p, nil
}

//go:embed pipelines/*.yaml
var shipped embed.FS

// Shipped returns the pipelines Outpost ships, for the sources it
// normalizes.
func Shipped() ([]*Pipeline, error) {
	var out []*Pipeline
	err := fs.WalkDir(shipped, "pipelines", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(shipped, p)
		if err != nil {
			return err
		}
		pl, err := ParsePipeline(p, data)
		if err != nil {
			return err
		}
		out = append(out, pl)
		return nil
	})
	SortPipelines(out)
	return out, err
}

// SortPipelines orders pipelines as they apply: by priority, then name.
func SortPipelines(ps []*Pipeline) {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].Priority != ps[j].Priority {
			return ps[i].Priority < ps[j].Priority
		}
		return ps[i].Name < ps[j].Name
	})
}

// Plan is what the pipelines make of one rule's logsource.
type Plan struct {
	// Route is the Outpost condition that selects the logsource's events
	// (each add_condition's fields equal, all of them); "" when none
	// applies.
	Route string
	// Fields maps Sigma field names (as written, and lowercased) to
	// Outpost field names.
	Fields map[string]string
	// Prefixes maps Sigma field name prefixes to Outpost ones; the
	// longest that matches applies to a field no mapping names.
	Prefixes map[string]string
	// Drop lists the fields whose detection items are dropped.
	Drop map[string]bool
	// Failure is why the rule cannot run, from a rule_failure.
	Failure string
	// ItemFailure is why a rule naming a detection item cannot run, from
	// a detection_item_failure (Outpost applies it to the whole rule).
	ItemFailure string
	// Record says that a field no mapping names is read from the original
	// record (a record_fields transformation applies).
	Record bool
}

// PlanFor applies the pipelines to logsource ls.
func PlanFor(ps []*Pipeline, ls Logsource, quote func(string) string) *Plan {
	pl := &Plan{Fields: map[string]string{}, Prefixes: map[string]string{}, Drop: map[string]bool{}}
	var route []string
	for _, p := range ps {
		for _, t := range p.Transformations {
			if !t.applies(ls) {
				continue
			}
			switch t.Type {
			case "add_condition":
				keys := make([]string, 0, len(t.Conditions))
				for k := range t.Conditions {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					route = append(route, k+" == "+quote(t.Conditions[k]))
				}
			case "field_name_mapping":
				for k, v := range t.Mapping {
					pl.Fields[k] = v
					pl.Fields[strings.ToLower(k)] = v
				}
			case "field_name_prefix_mapping":
				for k, v := range t.Mapping {
					pl.Prefixes[k] = v
				}
			case "drop_detection_item":
				for _, f := range t.DropFields {
					pl.Drop[f] = true
				}
			case "rule_failure":
				if pl.Failure == "" {
					pl.Failure = t.Message
				}
			case "detection_item_failure":
				if pl.ItemFailure == "" {
					pl.ItemFailure = t.Message
				}
			case "record_fields":
				pl.Record = true
			}
		}
	}
	pl.Route = strings.Join(route, " and ")
	return pl
}
