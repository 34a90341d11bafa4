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
	s.attrReads(func(source, key string) {
		p, ok := strings.CutPrefix(key, RecordPrefix)
		if !ok || p == "" {
			return
		}
		if seen[source] == nil {
			seen[source] = map[string]bool{}
		}
		seen[source][strings.ToLower(p)] = true
	})
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

// Attributes returns the attribute keys the enabled rules read (in
// conditions, group-by, the counted field, carried and CEF fields), and
// all = true when some condition reads the attributes other than by a
// constant key (attrs[f] with f computed, len(attrs), ...), so that no key
// can be left out. A source may drop the other attributes before
// publishing: no rule would see them.
func (s *Set) Attributes() (keys map[string]bool, all bool) {
	keys = map[string]bool{}
	all = s.attrReads(func(_, key string) { keys[key] = true })
	return keys, all
}

// attrReads calls fn for every attribute key an enabled rule reads, with
// the source the step requires ("" for none; a rule-level field goes to
// each of its steps' sources), and reports whether some condition reads
// the attributes other than by a constant key.
func (s *Set) attrReads(fn func(source, key string)) (dynamic bool) {
	for _, r := range s.Rules {
		var ruleLevel []string // fields of the rule rather than of a step
		for _, f := range append(append([]string{r.Field}, r.GroupBy...), r.Fields...) {
			if k, ok := strings.CutPrefix(f, "attrs."); ok && k != "" {
				ruleLevel = append(ruleLevel, k)
			}
		}
		for _, f := range r.CEF {
			if k, ok := strings.CutPrefix(f, "attrs."); ok && k != "" {
				ruleLevel = append(ruleLevel, k)
			}
		}
		for _, st := range r.Steps {
			source := st.requires("source")
			for _, f := range st.By {
				if k, ok := strings.CutPrefix(f, "attrs."); ok && k != "" {
					fn(source, k)
				}
			}
			for _, k := range ruleLevel {
				fn(source, k)
			}
			if st.program == nil {
				continue
			}
			// Every "attrs" of the tree is either the object of a member
			// node with a constant key (counted here) or something else
			// (counted below); the two counts tell them apart. $env, the
			// whole environment, reaches the attributes too ($env.attrs,
			// get($env, "attrs")): read other than by a constant name
			// ($env.user, $env.attrs), it is a dynamic read.
			idents, constant, env, envConst := 0, 0, 0, 0
			ast.Find(st.program.Node(), func(n ast.Node) bool {
				if isAttrs(n) {
					idents++
				}
				if id, ok := n.(*ast.IdentifierNode); ok && id.Value == "$env" {
					env++
				}
				if m, ok := n.(*ast.MemberNode); ok {
					if id, ok := m.Node.(*ast.IdentifierNode); ok && id.Value == "$env" {
						if _, ok := m.Property.(*ast.StringNode); ok {
							envConst++
						}
					}
				}
				if k, ok := attrKey(n); ok {
					constant++
					fn(source, k)
				}
				return false
			})
			if idents != constant || env != envConst {
				dynamic = true
			}
		}
	}
	return dynamic
}

// isAttrs reports whether n is the attributes map: attrs, or $env.attrs
// ($env["attrs"]), the same map.
func isAttrs(n ast.Node) bool {
	switch n := n.(type) {
	case *ast.IdentifierNode:
		return n.Value == "attrs"
	case *ast.MemberNode:
		id, ok := n.Node.(*ast.IdentifierNode)
		p, isStr := n.Property.(*ast.StringNode)
		return ok && id.Value == "$env" && isStr && p.Value == "attrs"
	}
	return false
}

// attrKey reports whether n reads attrs["<key>"] (or attrs.<key>,
// $env.attrs["<key>"]), and the key.
func attrKey(n ast.Node) (string, bool) {
	m, ok := n.(*ast.MemberNode)
	if !ok {
		return "", false
	}
	if !isAttrs(m.Node) {
		return "", false
	}
	key, ok := m.Property.(*ast.StringNode)
	if !ok {
		return "", false
	}
	return key.Value, true
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
