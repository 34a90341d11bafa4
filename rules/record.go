package rules

import (
	"sort"
	"strings"

	"github.com/expr-lang/expr/ast"
)

// RecordPrefix starts the attributes a source fills on demand from the
// original record: attrs["rec.<path>"] holds the value at <path> (dotted,
// lowercased) of the record an event came from. Sources that keep records
// too rich to normalize (the Azure exports) fill only the paths some rule
// reads, so the rest of the record is not copied into every event.
const RecordPrefix = "rec."

// RecordFields returns, per event source, the record paths (lowercased,
// without RecordPrefix) the enabled rules read: in conditions, group-by,
// the counted field and carried fields. The key "" holds the paths of
// steps that do not name a source, which every source should fill.
func (s *Set) RecordFields() map[string][]string {
	seen := map[string]map[string]bool{}
	add := func(source, path string) {
		if seen[source] == nil {
			seen[source] = map[string]bool{}
		}
		seen[source][strings.ToLower(path)] = true
	}
	for _, r := range s.Rules {
		var ruleLevel []string // fields of the rule rather than of a step
		for _, f := range append(append([]string{r.Field}, r.GroupBy...), r.Fields...) {
			if p, ok := strings.CutPrefix(f, "attrs."+RecordPrefix); ok && p != "" {
				ruleLevel = append(ruleLevel, p)
			}
		}
		for _, f := range r.CEF {
			if p, ok := strings.CutPrefix(f, "attrs."+RecordPrefix); ok && p != "" {
				ruleLevel = append(ruleLevel, p)
			}
		}
		for _, st := range r.Steps {
			source := st.requires("source")
			for _, f := range st.By {
				if p, ok := strings.CutPrefix(f, "attrs."+RecordPrefix); ok && p != "" {
					add(source, p)
				}
			}
			for _, p := range ruleLevel {
				add(source, p)
			}
			if st.program != nil {
				ast.Find(st.program.Node(), func(n ast.Node) bool {
					if p, ok := recordPath(n); ok {
						add(source, p)
					}
					return false
				})
			}
		}
	}
	out := make(map[string][]string, len(seen))
	for source, paths := range seen {
		list := make([]string, 0, len(paths))
		for p := range paths {
			list = append(list, p)
		}
		sort.Strings(list)
		out[source] = list
	}
	return out
}

// recordPath reports whether n reads attrs["rec.<path>"], and the path.
func recordPath(n ast.Node) (string, bool) {
	m, ok := n.(*ast.MemberNode)
	if !ok {
		return "", false
	}
	id, ok := m.Node.(*ast.IdentifierNode)
	if !ok || id.Value != "attrs" {
		return "", false
	}
	key, ok := m.Property.(*ast.StringNode)
	if !ok {
		return "", false
	}
	p, ok := strings.CutPrefix(key.Value, RecordPrefix)
	return p, ok && p != ""
}

// requires returns the value the step's guards require of a string field,
// or "".
func (st *Step) requires(field string) string {
	for _, g := range st.guards {
		if g.field == field && g.alts == nil {
			return g.want
		}
	}
	return ""
}
