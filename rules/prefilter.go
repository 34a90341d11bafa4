package rules

import (
	aho "github.com/coregx/ahocorasick"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// A prefilter picks, among the rules an index key routes an event to, those
// whose literal guard (see necessary) can pass: the literals of every such
// rule are compiled into one multi-pattern automaton (Aho-Corasick) per
// field, so an event's field is scanned once for all of them rather than
// once per rule. A rule without a literal guard is always a candidate. The
// guards still run on the candidates: the prefilter only rules out.
type prefilter struct {
	rules  []*Rule
	always []bool // rules[i] is tried whatever the literals
	fields []*fieldScan
}

// fieldScan holds the literals sought in one field.
type fieldScan struct {
	get getter
	// folded: ASCII case-insensitive patterns; exact: case-sensitive ones.
	// patRules[k] lists the rules (indexes into prefilter.rules) pattern k
	// stands for.
	folded, exact           *aho.Automaton
	foldedRules, exactRules [][]int
	// unicode lists the rules with a literal from a case-insensitive
	// regular expression: a non-ASCII value lets them through.
	unicode []int
}

// maxPrefilterPatterns bounds one automaton; rules beyond it are tried
// always.
const maxPrefilterPatterns = 20_000

// literalGuard returns the alternatives of r's literal guard if r is one
// step with one, else nil.
func literalGuard(r *Rule) []litAlt {
	if len(r.Steps) != 1 {
		return nil
	}
	for _, g := range r.Steps[0].guards {
		if g.alts != nil {
			return g.alts
		}
	}
	return nil
}

func newPrefilter(rs []*Rule) *prefilter {
	pf := &prefilter{rules: rs, always: make([]bool, len(rs))}
	type pats struct {
		folded, exact           [][]byte
		foldedRules, exactRules [][]int
		unicode                 []int
		get                     getter
	}
	byField := map[string]*pats{}
	var order []string
	total := 0
	for i, r := range rs {
		alts := literalGuard(r)
		if alts == nil || total+len(alts) > maxPrefilterPatterns {
			pf.always[i] = true
			continue
		}
		total += len(alts)
		for _, a := range alts {
			p := byField[a.field]
			if p == nil {
				p = &pats{get: a.get}
				byField[a.field] = p
				order = append(order, a.field)
			}
			if a.folded {
				p.folded = append(p.folded, a.lit)
				p.foldedRules = append(p.foldedRules, []int{i})
			} else {
				p.exact = append(p.exact, a.lit)
				p.exactRules = append(p.exactRules, []int{i})
			}
			if a.unicode {
				p.unicode = append(p.unicode, i)
			}
		}
	}
	for _, f := range order {
		p := byField[f]
		fs := &fieldScan{get: p.get, foldedRules: p.foldedRules, exactRules: p.exactRules, unicode: p.unicode}
		// Case-insensitive literals are sought lowercased in the value
		// lowercased (ASCII); the others as they are.
		if len(p.folded) > 0 {
			lower := make([][]byte, len(p.folded))
			for i, lit := range p.folded {
				lower[i] = asciiLower(nil, lit)
			}
			fs.folded = buildAutomaton(lower)
		}
		if len(p.exact) > 0 {
			fs.exact = buildAutomaton(p.exact)
		}
		pf.fields = append(pf.fields, fs)
	}
	return pf
}

// Scratch is the reusable memory of Candidates, one per goroutine.
type Scratch struct {
	mark []bool
	out  []*Rule
	buf  []byte
}

// candidates returns the rules to try on ev.
func (pf *prefilter) candidates(ev *event.Event, sc *Scratch) []*Rule {
	if len(pf.fields) == 0 {
		return pf.rules
	}
	if cap(sc.mark) < len(pf.rules) {
		sc.mark = make([]bool, len(pf.rules))
	}
	mark := sc.mark[:len(pf.rules)]
	copy(mark, pf.always)
	for _, fs := range pf.fields {
		v := fs.get(ev)
		if v == "" {
			continue
		}
		if fs.folded != nil {
			sc.buf = asciiLower(sc.buf[:0], v)
			for _, m := range fs.folded.FindAllOverlapping(sc.buf) {
				for _, i := range fs.foldedRules[m.PatternID] {
					mark[i] = true
				}
			}
		}
		if fs.exact != nil {
			sc.buf = append(sc.buf[:0], v...)
			for _, m := range fs.exact.FindAllOverlapping(sc.buf) {
				for _, i := range fs.exactRules[m.PatternID] {
					mark[i] = true
				}
			}
		}
		if len(fs.unicode) > 0 && !isASCII(v) {
			for _, i := range fs.unicode {
				mark[i] = true
			}
		}
	}
	out := sc.out[:0]
	for i, r := range pf.rules {
		if mark[i] {
			out = append(out, r)
		}
	}
	sc.out = out
	return out
}

// buildAutomaton compiles literals (none empty) into one automaton; a
// literal set it cannot take would be a bug in necessary().
func buildAutomaton(lits [][]byte) *aho.Automaton {
	ac, err := aho.NewBuilder().AddPatterns(lits).Build()
	if err != nil {
		panic("prefilter: " + err.Error())
	}
	return ac
}

// asciiLower appends s with ASCII letters lowercased to b.
func asciiLower[S ~string | ~[]byte](b []byte, s S) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	return b
}
