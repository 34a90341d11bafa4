package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"go.yaml.in/yaml/v3"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// LoadDir loads every *.yaml and *.yml file under dir.
func LoadDir(dir string) (*Set, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("reading rules dir: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("rules dir %s is not a directory", dir)
	}
	return load(os.DirFS(dir), dir)
}

// LoadFS loads every *.yaml and *.yml file in fsys; name prefixes the file
// names in error messages.
func LoadFS(fsys fs.FS, name string) (*Set, error) { return load(fsys, name) }

func load(fsys fs.FS, root string) (*Set, error) {
	var files []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing rule files in %s: %w", root, err)
	}
	sort.Strings(files)
	l := &loader{set: &Set{byID: map[string]*Rule{}}, seen: map[string]string{}}
	for _, f := range files {
		data, err := fs.ReadFile(fsys, f)
		if err != nil {
			l.errs = append(l.errs, fmt.Sprintf("%s: %v", path.Join(root, f), err))
			continue
		}
		l.file(path.Join(root, f), data)
	}
	if len(l.errs) > 0 {
		return nil, &LoadError{Problems: l.errs}
	}
	return l.set, nil
}

// LoadError lists every problem found while loading a rule set.
type LoadError struct {
	Problems []string
}

func (e *LoadError) Error() string {
	return fmt.Sprintf("%d problem(s) in rules:\n  %s", len(e.Problems), strings.Join(e.Problems, "\n  "))
}

type loader struct {
	set  *Set
	seen map[string]string // rule id -> where it was first defined
	errs []string
}

func (l *loader) errorf(file string, line int, id, format string, args ...any) {
	where := fmt.Sprintf("%s:%d", file, line)
	if id != "" {
		where += fmt.Sprintf(": rule %q", id)
	}
	l.errs = append(l.errs, where+": "+fmt.Sprintf(format, args...))
}

func (l *loader) file(file string, data []byte) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			l.errs = append(l.errs, fmt.Sprintf("%s: %s", file, strings.TrimPrefix(err.Error(), "yaml: ")))
			return
		}
		if len(doc.Content) == 0 {
			continue
		}
		top := doc.Content[0]
		if top.Kind != yaml.MappingNode {
			l.errorf(file, top.Line, "", "expected a mapping with a `rules:` list")
			continue
		}
		for i := 0; i+1 < len(top.Content); i += 2 {
			k, v := top.Content[i], top.Content[i+1]
			switch k.Value {
			case "rules":
				if v.Kind != yaml.SequenceNode {
					l.errorf(file, v.Line, "", "rules: expected a list of rules")
					continue
				}
				for _, rn := range v.Content {
					l.rule(file, rn)
				}
			default:
				l.errorf(file, k.Line, "", "unknown key %q (expected: rules)", k.Value)
			}
		}
	}
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)

// ruleKeys are the keys a rule mapping may hold.
var ruleKeys = []string{"id", "title", "description", "kind", "severity", "tags", "enabled",
	"condition", "group_by", "threshold", "window", "suppress", "fields"}

func (l *loader) rule(file string, n *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		l.errorf(file, n.Line, "", "expected a rule (a mapping)")
		return
	}
	nodes := map[string]*yaml.Node{}
	keyLine := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		nodes[k.Value] = n.Content[i+1]
		keyLine[k.Value] = k.Line
	}
	id := scalar(nodes["id"])
	bad := func(key, format string, args ...any) {
		line := n.Line
		if v, ok := nodes[key]; ok {
			line = v.Line
		}
		l.errorf(file, line, id, "%s: %s", key, fmt.Sprintf(format, args...))
	}
	for k := range nodes {
		if !contains(ruleKeys, k) {
			l.errorf(file, keyLine[k], id, "unknown key %q (expected one of: %s)", k, strings.Join(ruleKeys, ", "))
		}
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
	switch r.Kind {
	case KindMatch, KindThreshold:
	case "":
		bad("kind", "required (match or threshold)")
	default:
		bad("kind", "unknown kind %q (expected match or threshold)", r.Kind)
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
	r.Tags = l.stringList(nodes["tags"], func(f string, a ...any) { bad("tags", f, a...) })
	r.GroupBy = l.stringList(nodes["group_by"], func(f string, a ...any) { bad("group_by", f, a...) })
	r.Fields = l.stringList(nodes["fields"], func(f string, a ...any) { bad("fields", f, a...) })
	for _, f := range r.GroupBy {
		g, ok := lookupField(f)
		if !ok {
			bad("group_by", "unknown field %q (expected one of: %s, or attrs.<name>)", f, knownFields())
			continue
		}
		r.groupBy = append(r.groupBy, g)
	}
	for _, f := range r.Fields {
		g, ok := lookupField(f)
		if !ok {
			bad("fields", "unknown field %q (expected one of: %s, or attrs.<name>)", f, knownFields())
			continue
		}
		r.fields = append(r.fields, g)
	}
	r.Suppress = l.duration(nodes["suppress"], func(f string, a ...any) { bad("suppress", f, a...) })
	r.Window = l.duration(nodes["window"], func(f string, a ...any) { bad("window", f, a...) })
	if v, ok := nodes["threshold"]; ok {
		if err := v.Decode(&r.Threshold); err != nil {
			bad("threshold", "expected an integer")
		}
	}
	switch r.Kind {
	case KindThreshold:
		if r.Threshold < 1 {
			bad("threshold", "required for kind threshold: an integer of at least 1")
		}
		if r.Window <= 0 {
			bad("window", "required for kind threshold: a duration such as 5m")
		}
	case KindMatch:
		if _, ok := nodes["threshold"]; ok {
			bad("threshold", "only applies to kind threshold")
		}
		if _, ok := nodes["window"]; ok {
			bad("window", "only applies to kind threshold")
		}
	}
	r.Condition = scalar(nodes["condition"])
	if strings.TrimSpace(r.Condition) == "" {
		bad("condition", "required: an expression over the event, e.g. app == \"sshd\" && outcome == \"failure\"")
	} else {
		prog, err := expr.Compile(r.Condition, expr.Env(event.Event{}), expr.AsBool())
		if err != nil {
			// expr's message carries the position inside the expression.
			bad("condition", "%s", strings.ReplaceAll(err.Error(), "\n", "\n    "))
		}
		r.program = prog
	}
	if enabled && r.program != nil && len(r.groupBy) == len(r.GroupBy) && len(r.fields) == len(r.Fields) {
		if _, dup := l.set.byID[r.ID]; !dup && r.ID != "" {
			l.set.Rules = append(l.set.Rules, r)
			l.set.byID[r.ID] = r
		}
	}
}

func (l *loader) stringList(n *yaml.Node, bad func(string, ...any)) []string {
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

func (l *loader) duration(n *yaml.Node, bad func(string, ...any)) time.Duration {
	if n == nil {
		return 0
	}
	d, err := time.ParseDuration(n.Value)
	if err != nil || d < 0 {
		bad("invalid duration %q (expected e.g. 90s, 5m, 24h)", n.Value)
		return 0
	}
	return d
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

func scalar(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func knownFields() string {
	names := make([]string, 0, len(fieldGetters))
	for k := range fieldGetters {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
