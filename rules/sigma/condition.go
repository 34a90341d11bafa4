package sigma

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
)

// A condition is Sigma's boolean expression over the search identifiers:
//
//	cond   := or
//	or     := and ("or" and)*
//	and    := not ("and" not)*
//	not    := "not" not | atom
//	atom   := "(" cond ")" | quant "of" (pattern | "them") | identifier
//	quant  := "1" | "any" | "all"
//
// Keywords are case-insensitive; identifiers and patterns (`sel_*`) are
// not. `them` is every identifier not starting with `_`. What follows a
// top-level `|` is the older aggregation (aggregation.go).

// node is a parsed condition.
type node interface{ isNode() }

type (
	andNode struct{ l, r node }
	orNode  struct{ l, r node }
	notNode struct{ x node }
	idNode  struct{ name string }
	// ofNode is `1 of X` (all false) or `all of X` over the identifiers
	// that names matched.
	ofNode struct {
		all   bool
		names []string
	}
)

func (andNode) isNode() {}
func (orNode) isNode()  {}
func (notNode) isNode() {}
func (idNode) isNode()  {}
func (ofNode) isNode()  {}

// maxConditionLen bounds a condition's text, and maxDepth its nesting: a
// rule file is input too.
const (
	maxConditionLen = 8 << 10
	maxDepth        = 64
)

type condParser struct {
	toks  []string
	pos   int
	ids   []string // the search identifiers defined, sorted
	depth int
}

// parseCondition parses cond against the search identifiers ids.
func parseCondition(cond string, ids []string) (node, error) {
	if len(cond) > maxConditionLen {
		return nil, fmt.Errorf("condition is %d bytes long, more than %d", len(cond), maxConditionLen)
	}
	toks, err := tokenize(cond)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("condition is empty")
	}
	p := &condParser{toks: toks, ids: ids}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.pos < len(p.toks) {
		return nil, fmt.Errorf("condition: unexpected %q", p.toks[p.pos])
	}
	return n, nil
}

func tokenize(s string) ([]string, error) {
	var out []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(' || c == ')':
			out = append(out, string(c))
			i++
		case isIdentByte(c):
			j := i
			for j < len(s) && isIdentByte(s[j]) {
				j++
			}
			out = append(out, s[i:j])
			i = j
		default:
			return nil, fmt.Errorf("condition: unexpected character %q", c)
		}
	}
	return out, nil
}

func isIdentByte(c byte) bool {
	return c == '_' || c == '*' || c == '-' || c == '.' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func (p *condParser) peek() string {
	if p.pos < len(p.toks) {
		return p.toks[p.pos]
	}
	return ""
}

func (p *condParser) keyword(k string) bool {
	if strings.EqualFold(p.peek(), k) {
		p.pos++
		return true
	}
	return false
}

func (p *condParser) or() (node, error) {
	l, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.keyword("or") {
		r, err := p.and()
		if err != nil {
			return nil, err
		}
		l = orNode{l, r}
	}
	return l, nil
}

func (p *condParser) and() (node, error) {
	l, err := p.not()
	if err != nil {
		return nil, err
	}
	for p.keyword("and") {
		r, err := p.not()
		if err != nil {
			return nil, err
		}
		l = andNode{l, r}
	}
	return l, nil
}

func (p *condParser) not() (node, error) {
	if p.depth++; p.depth > maxDepth {
		return nil, fmt.Errorf("condition nests deeper than %d", maxDepth)
	}
	defer func() { p.depth-- }()
	if p.keyword("not") {
		x, err := p.not()
		if err != nil {
			return nil, err
		}
		return notNode{x}, nil
	}
	return p.atom()
}

var reserved = []string{"and", "or", "not", "of", "them", "all", "any", "1"}

func (p *condParser) atom() (node, error) {
	t := p.peek()
	switch {
	case t == "":
		return nil, fmt.Errorf("condition ends too early")
	case t == "(":
		p.pos++
		n, err := p.or()
		if err != nil {
			return nil, err
		}
		if p.peek() != ")" {
			return nil, fmt.Errorf("condition: missing )")
		}
		p.pos++
		return n, nil
	case t == ")":
		return nil, fmt.Errorf("condition: unexpected )")
	}
	p.pos++
	if _, err := strconv.Atoi(t); err == nil || strings.EqualFold(t, "all") || strings.EqualFold(t, "any") {
		if !strings.EqualFold(p.peek(), "of") {
			if strings.EqualFold(t, "all") || strings.EqualFold(t, "any") || t != "1" {
				return nil, fmt.Errorf("condition: %q must be followed by \"of\"", t)
			}
		} else {
			p.pos++
			if t != "1" && !strings.EqualFold(t, "all") && !strings.EqualFold(t, "any") {
				return nil, fmt.Errorf("condition: %q of: only \"1 of\", \"any of\" and \"all of\" are Sigma", t)
			}
			target := p.peek()
			if target == "" || target == "(" || target == ")" {
				return nil, fmt.Errorf("condition: %s of: expected a pattern or \"them\"", t)
			}
			p.pos++
			names, err := p.expand(target)
			if err != nil {
				return nil, err
			}
			return ofNode{all: strings.EqualFold(t, "all"), names: names}, nil
		}
	}
	if slices.ContainsFunc(reserved, func(r string) bool { return strings.EqualFold(r, t) }) {
		return nil, fmt.Errorf("condition: unexpected %q", t)
	}
	if strings.Contains(t, "*") {
		return nil, fmt.Errorf("condition: %q: a pattern needs \"1 of\" or \"all of\" before it", t)
	}
	if !slices.Contains(p.ids, t) {
		return nil, fmt.Errorf("condition: %q is not a search identifier of the detection", t)
	}
	return idNode{t}, nil
}

// expand returns the identifiers pattern (or `them`) names.
func (p *condParser) expand(pattern string) ([]string, error) {
	var out []string
	if strings.EqualFold(pattern, "them") {
		for _, id := range p.ids {
			if !strings.HasPrefix(id, "_") {
				out = append(out, id)
			}
		}
	} else {
		// As pySigma: an identifier starting with _ only when the pattern
		// does too.
		for _, id := range p.ids {
			if ok, _ := path.Match(pattern, id); ok && (!strings.HasPrefix(id, "_") || strings.HasPrefix(pattern, "_")) {
				out = append(out, id)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("condition: %q names no search identifier", pattern)
	}
	return out, nil
}
