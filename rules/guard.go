package rules

import (
	"regexp/syntax"
	"slices"
	"strings"
	"unicode/utf8"

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
	// alts, when set, make the guard "the event holds one of these
	// literals": a literal run of a like() pattern the condition cannot be
	// true without (see necessary).
	alts []litAlt
}

// litAlt is one literal a field may hold: lowercase and compared with
// ASCII case folding if folded.
type litAlt struct {
	field  string
	get    getter
	lit    []byte
	folded bool
	// unicode: the literal comes from a case-insensitive regular
	// expression, which folds Unicode (K matches the Kelvin sign): a value
	// with non-ASCII text is not ruled out by an ASCII search.
	unicode bool
}

// minGuardLiteral is the shortest literal run worth a guard: shorter ones
// occur in too many values to rule much out.
const minGuardLiteral = 3

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
	if alts, ok := necessary(n); ok && len(alts) <= maxGuardAlts {
		out = append(out, guard{alts: alts})
	}
	return out
}

// maxGuardAlts bounds the literals one guard looks for: beyond it, the
// guard would cost as much as the condition.
const maxGuardAlts = 16

// necessary returns literals one of which an event must hold for n to be
// true: a like(field, pattern) call needs the longest literal run of its
// pattern; `a and b` needs what either needs (the fewer, the better); `a
// or b` needs what one of them needs; anything else gives nothing (ok is
// false).
func necessary(n ast.Node) ([]litAlt, bool) {
	switch n := n.(type) {
	case *ast.BinaryNode:
		switch n.Operator {
		case "&&", "and":
			l, lok := necessary(n.Left)
			r, rok := necessary(n.Right)
			switch {
			case lok && rok && len(r) < len(l):
				return r, true
			case lok:
				return l, true
			default:
				return r, rok
			}
		case "||", "or":
			l, lok := necessary(n.Left)
			r, rok := necessary(n.Right)
			if !lok || !rok {
				return nil, false
			}
			return append(l[:len(l):len(l)], r...), true
		case "matches":
			field, get, ok := stringAccessor(n.Left)
			p, isStr := n.Right.(*ast.StringNode)
			if !ok || !isStr {
				return nil, false
			}
			re, err := syntax.Parse(p.Value, syntax.Perl)
			if err != nil {
				return nil, false
			}
			alts, ok := regexpLiterals(re.Simplify())
			for i := range alts {
				alts[i].field, alts[i].get = field, get
			}
			return alts, ok
		}
	case *ast.CallNode:
		id, ok := n.Callee.(*ast.IdentifierNode)
		if !ok || len(n.Arguments) != 2 || (id.Value != "like" && id.Value != "like_cased") {
			return nil, false
		}
		field, get, ok := stringAccessor(n.Arguments[0])
		p, isStr := n.Arguments[1].(*ast.StringNode)
		folded := id.Value == "like"
		if !ok || !isStr {
			return nil, false
		}
		// A non-ASCII pattern is matched lowercased (Unicode), which can
		// turn a non-ASCII letter of the value into an ASCII one: its
		// ASCII literal rules out only ASCII values.
		unicode := folded && !isASCII(p.Value)
		lit := longestLiteral(compileLike(p.Value, !folded))
		if len(lit) < minGuardLiteral {
			return nil, false
		}
		return []litAlt{{field: field, get: get, lit: lit, folded: folded, unicode: unicode}}, true
	}
	return nil, false
}

// stringAccessor recognises a string field of the event: a string field
// by name, or attrs["key"].
func stringAccessor(n ast.Node) (string, getter, bool) {
	switch n := n.(type) {
	case *ast.IdentifierNode:
		if stringFields[n.Value] {
			return n.Value, fieldGetters[n.Value], true
		}
	case *ast.MemberNode:
		id, ok := n.Node.(*ast.IdentifierNode)
		key, isStr := n.Property.(*ast.StringNode)
		if ok && isStr && id.Value == "attrs" && !n.Optional && !n.Method {
			k := key.Value
			return "attrs." + k, func(e *event.Event) string { return e.Attrs[k] }, true
		}
	}
	return "", nil, false
}

// longestLiteral returns the longest run of a pattern's literal bytes
// without `*` or `?` (or, for a lowercased non-ASCII pattern, non-ASCII
// bytes).
func longestLiteral(lp *likePattern) []byte {
	var best []byte
	for _, s := range lp.segs {
		start := 0
		for i := 0; i <= len(s.lit); i++ {
			if i == len(s.lit) || s.wild[i] || lp.lower && s.lit[i] >= utf8.RuneSelf {
				if i-start > len(best) {
					best = s.lit[start:i]
				}
				start = i + 1
			}
		}
	}
	return best
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
	for i := range gs {
		g := &gs[i]
		if g.alts == nil {
			if g.get(ev) != g.want {
				return false
			}
			continue
		}
		found := false
		for _, a := range g.alts {
			v := a.get(ev)
			if a.folded && indexFold(v, a.lit) >= 0 || !a.folded && strings.Contains(v, string(a.lit)) || a.unicode && !isASCII(v) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Index picks, for an event, the rules that can match it: a rule each of
// whose steps requires `source == "x"` (a guard: Sigma rules' routes, and
// native rules written so) is tried only on events of source x, and one
// that also requires `app == "y"` only on those of app y. The rules an
// event gets keep the order of the set.
type Index struct {
	any   []*Rule              // rules tried on every event
	byKey map[indexKey][]*Rule // per (source, app) a rule names: the rules that can match such an event, in order
	// the same lists' prefilters (prefilter.go)
	anyPF *prefilter
	keyPF map[indexKey]*prefilter
}

type indexKey struct{ source, app string }

// NewIndex indexes rs.
func NewIndex(rs []*Rule) *Index {
	ix := &Index{byKey: map[indexKey][]*Rule{}}
	keys := make([]indexKey, len(rs))
	for i, r := range rs {
		keys[i] = indexKey{r.requires("source"), r.requires("app")}
		if keys[i].source == "" {
			keys[i].app = "" // indexed by source first
		}
	}
	// Every (source, app) and (source, "") a rule names gets its list.
	for i, r := range rs {
		if keys[i].source == "" {
			ix.any = append(ix.any, r)
			continue
		}
		for _, k := range []indexKey{keys[i], {keys[i].source, ""}} {
			if _, done := ix.byKey[k]; done {
				continue
			}
			var list []*Rule
			for j, r2 := range rs {
				k2 := keys[j]
				if k2.source == "" || k2.source == k.source && (k2.app == "" || k2.app == k.app) {
					list = append(list, r2)
				}
			}
			ix.byKey[k] = list
		}
	}
	ix.anyPF, ix.keyPF = newPrefilter(ix.any), make(map[indexKey]*prefilter, len(ix.byKey))
	for k, list := range ix.byKey {
		ix.keyPF[k] = newPrefilter(list)
	}
	return ix
}

// Candidates returns the rules to try on ev, in the set's order: those For
// returns, less those whose literals ev's fields lack (prefilter.go). sc is
// the caller's scratch memory; the result is valid until its next use.
func (ix *Index) Candidates(ev *event.Event, sc *Scratch) []*Rule {
	if pf, ok := ix.keyPF[indexKey{ev.Source, ev.App}]; ok {
		return pf.candidates(ev, sc)
	}
	if pf, ok := ix.keyPF[indexKey{ev.Source, ""}]; ok {
		return pf.candidates(ev, sc)
	}
	return ix.anyPF.candidates(ev, sc)
}

// For returns the rules to try on ev.
func (ix *Index) For(ev *event.Event) []*Rule {
	if rs, ok := ix.byKey[indexKey{ev.Source, ev.App}]; ok {
		return rs
	}
	if rs, ok := ix.byKey[indexKey{ev.Source, ""}]; ok {
		return rs
	}
	return ix.any
}

// Sources returns the event sources r can match: the source each of its
// steps requires (`source == "x"`, a guard, so every match of the step
// comes from x), or nil if a step does not name one.
func (r *Rule) Sources() []string {
	var out []string
	for _, st := range r.Steps {
		v := st.requires("source")
		if v == "" {
			return nil
		}
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// requires returns the value every step of r requires of a string field
// (an equality guard), or "".
func (r *Rule) requires(field string) string {
	val := ""
	for i, st := range r.Steps {
		v := st.requires(field)
		if v == "" || (i > 0 && v != val) {
			return ""
		}
		val = v
	}
	return val
}

// regexpLiterals returns literals one of which a text must hold for re to
// match it somewhere: the longest literal of a concatenation, those of
// every branch of an alternation.
func regexpLiterals(re *syntax.Regexp) ([]litAlt, bool) {
	switch re.Op {
	case syntax.OpLiteral:
		folded := re.Flags&syntax.FoldCase != 0
		lit := string(re.Rune)
		if len(lit) < minGuardLiteral || (folded && !isASCII(lit)) {
			return nil, false
		}
		if folded {
			lit = strings.ToLower(lit)
		}
		return []litAlt{{lit: []byte(lit), folded: folded, unicode: folded}}, true
	case syntax.OpCapture:
		return regexpLiterals(re.Sub[0])
	case syntax.OpConcat:
		var best []litAlt
		for _, sub := range re.Sub {
			if alts, ok := regexpLiterals(sub); ok && len(alts) == 1 && (best == nil || len(alts[0].lit) > len(best[0].lit)) {
				best = alts
			}
		}
		return best, best != nil
	case syntax.OpAlternate:
		var out []litAlt
		for _, sub := range re.Sub {
			alts, ok := regexpLiterals(sub)
			if !ok {
				return nil, false
			}
			out = append(out, alts...)
		}
		return out, true
	}
	return nil, false
}
