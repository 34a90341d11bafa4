package rules

import (
	"github.com/expr-lang/expr/ast"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// guard is one conjunct of a step's condition of the form
// `field == "constant"` on a string field of the Event. Evaluate checks a
// step's guards, a plain string compare each, before it runs the
// condition's program: an event whose source or action rules a rule out
// costs no VM run. The program still decides every event that passes.
type guard struct {
	field string
	get   getter
	want  string
}

// stringFields are the Event fields a guard may test: strings, read by a
// getter without conversion.
var stringFields = map[string]bool{
	"id": true, "source": true, "sender": true, "host": true, "app": true, "proc_id": true,
	"msg_id": true, "message": true, "category": true, "action": true, "outcome": true,
	"user": true, "src_ip": true, "dst_ip": true, "protocol": true,
}

// guardsOf returns the `field == "constant"` conjuncts of a compiled
// condition's top-level `&&` chain (macros already expanded).
func guardsOf(n ast.Node) []guard {
	var out []guard
	var walk func(ast.Node)
	walk = func(n ast.Node) {
		b, ok := n.(*ast.BinaryNode)
		if !ok {
			return
		}
		switch b.Operator {
		case "&&", "and":
			walk(b.Left)
			walk(b.Right)
		case "==":
			id, s := asFieldAndString(b.Left, b.Right)
			if id == "" {
				id, s = asFieldAndString(b.Right, b.Left)
			}
			if id != "" {
				out = append(out, guard{field: id, get: fieldGetters[id], want: s})
			}
		}
	}
	walk(n)
	return out
}

func asFieldAndString(a, b ast.Node) (string, string) {
	id, ok := a.(*ast.IdentifierNode)
	if !ok || !stringFields[id.Value] {
		return "", ""
	}
	s, ok := b.(*ast.StringNode)
	if !ok {
		return "", ""
	}
	return id.Value, s.Value
}

// passes reports whether ev satisfies every guard.
func passes(gs []guard, ev *event.Event) bool {
	for _, g := range gs {
		if g.get(ev) != g.want {
			return false
		}
	}
	return true
}

// Index picks, for an event, the rules that can match it: a rule each of
// whose steps requires `source == "x"` (a guard: Sigma rules' routes, and
// native rules written so) is tried only on events of source x. The rules
// an event gets keep the order of the set.
type Index struct {
	any      []*Rule            // rules tried on every event
	bySource map[string][]*Rule // per source: its rules and the any rules, in order
}

// NewIndex indexes rs.
func NewIndex(rs []*Rule) *Index {
	ix := &Index{bySource: map[string][]*Rule{}}
	sources := make([]string, len(rs))
	for i, r := range rs {
		sources[i] = r.source()
	}
	for i, r := range rs {
		if sources[i] == "" {
			ix.any = append(ix.any, r)
		}
		if src := sources[i]; src != "" && ix.bySource[src] == nil {
			var list []*Rule
			for j, r2 := range rs {
				if sources[j] == "" || sources[j] == src {
					list = append(list, r2)
				}
			}
			ix.bySource[src] = list
		}
	}
	return ix
}

// For returns the rules to try on ev.
func (ix *Index) For(ev *event.Event) []*Rule {
	if rs, ok := ix.bySource[ev.Source]; ok {
		return rs
	}
	return ix.any
}

// source returns the source every step of r requires, or "".
func (r *Rule) source() string {
	src := ""
	for i, st := range r.Steps {
		s := ""
		for _, g := range st.guards {
			if g.field == "source" {
				s = g.want
				break
			}
		}
		if s == "" || (i > 0 && s != src) {
			return ""
		}
		src = s
	}
	return src
}
