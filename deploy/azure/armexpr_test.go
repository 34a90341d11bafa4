// Package azure holds no code: its tests check the deployment artifacts in
// this directory (the ARM templates and the cloud-init user data).
//
// This file is a small reader of ARM template expressions — the
// "[func(args)]" strings — just good enough to find the function calls and
// their literal arguments, and to evaluate the handful of functions the
// cloud-init substitution uses. It is not ARM: no operators exist in ARM
// expressions, so a term is a function call, a string or a number, followed
// by any number of .property and [index] accesses.
package azure

import (
	"fmt"
	"strconv"
	"strings"
)

type nodeKind int

const (
	nodeCall nodeKind = iota
	nodeString
	nodeNumber
)

// accessor is one .property or [index] after a term.
type accessor struct {
	prop  string // .prop; empty for an index
	index *node  // [expr]
}

// node is one term of an expression.
type node struct {
	kind   nodeKind
	name   string // nodeCall: the function, as written
	text   string // nodeString: the unescaped value; nodeNumber: the digits
	args   []*node
	access []accessor
}

// isExpression reports whether a JSON string value of a template is an
// expression: "[...]", but not "[[...", which ARM reads as a literal
// starting with "[".
func isExpression(s string) bool {
	return len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' && !strings.HasPrefix(s, "[[")
}

// parseTemplateString parses s if it is an expression; ok is false for a
// literal.
func parseTemplateString(s string) (n *node, ok bool, err error) {
	if !isExpression(s) {
		return nil, false, nil
	}
	n, err = parseExpression(s[1 : len(s)-1])
	return n, true, err
}

// parseExpression parses the text between an expression's brackets.
func parseExpression(src string) (*node, error) {
	p := &parser{src: src}
	p.next()
	n, err := p.term()
	if err != nil {
		return nil, err
	}
	if p.tok != tokEOF {
		return nil, p.errorf("expected the end of the expression, found %s", p.describe())
	}
	return n, nil
}

type tokKind int

const (
	tokEOF tokKind = iota
	tokIdent
	tokString
	tokNumber
	tokPunct // one of ( ) , . [ ]
	tokError
)

type parser struct {
	src  string
	pos  int // offset after the current token
	tok  tokKind
	text string // ident or punct as written; string unescaped; number digits
	at   int    // offset where the current token starts
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("column %d: %s", p.at+1, fmt.Sprintf(format, args...))
}

func (p *parser) describe() string {
	switch p.tok {
	case tokEOF:
		return "the end"
	case tokString:
		return strconv.Quote(p.text) + " (string)"
	case tokError:
		return p.text
	}
	return strconv.Quote(p.text)
}

// next reads one token.
func (p *parser) next() {
	for p.pos < len(p.src) && (p.src[p.pos] == ' ' || p.src[p.pos] == '\t' || p.src[p.pos] == '\n' || p.src[p.pos] == '\r') {
		p.pos++
	}
	p.at = p.pos
	if p.pos >= len(p.src) {
		p.tok, p.text = tokEOF, ""
		return
	}
	c := p.src[p.pos]
	switch {
	case c == '\'':
		var b strings.Builder
		i := p.pos + 1
		for {
			if i >= len(p.src) {
				p.tok, p.text = tokError, "an unterminated string"
				p.pos = len(p.src)
				return
			}
			if p.src[i] == '\'' {
				if i+1 < len(p.src) && p.src[i+1] == '\'' { // '' is a quote
					b.WriteByte('\'')
					i += 2
					continue
				}
				break
			}
			b.WriteByte(p.src[i])
			i++
		}
		p.tok, p.text, p.pos = tokString, b.String(), i+1
	case c == '-' || (c >= '0' && c <= '9'):
		i := p.pos + 1
		for i < len(p.src) && p.src[i] >= '0' && p.src[i] <= '9' {
			i++
		}
		if c == '-' && i == p.pos+1 {
			p.tok, p.text, p.pos = tokError, "a '-' without digits", i
			return
		}
		p.tok, p.text, p.pos = tokNumber, p.src[p.pos:i], i
	case c == '_' || (c|0x20 >= 'a' && c|0x20 <= 'z'):
		i := p.pos + 1
		for i < len(p.src) && (p.src[i] == '_' || (p.src[i]|0x20 >= 'a' && p.src[i]|0x20 <= 'z') || (p.src[i] >= '0' && p.src[i] <= '9')) {
			i++
		}
		p.tok, p.text, p.pos = tokIdent, p.src[p.pos:i], i
	case strings.IndexByte("(),.[]", c) >= 0:
		p.tok, p.text, p.pos = tokPunct, string(c), p.pos+1
	default:
		p.tok, p.text, p.pos = tokError, fmt.Sprintf("an unexpected %q", c), p.pos+1
	}
}

func (p *parser) punct(s string) bool { return p.tok == tokPunct && p.text == s }

// term = (call | string | number) { "." ident | "[" term "]" }
// call = ident "(" [ term { "," term } ] ")"
func (p *parser) term() (*node, error) {
	var n *node
	switch p.tok {
	case tokString:
		n = &node{kind: nodeString, text: p.text}
		p.next()
	case tokNumber:
		n = &node{kind: nodeNumber, text: p.text}
		p.next()
	case tokIdent:
		n = &node{kind: nodeCall, name: p.text}
		p.next()
		if !p.punct("(") {
			return nil, p.errorf("expected ( after the function name %q, found %s", n.name, p.describe())
		}
		p.next()
		if !p.punct(")") {
			for {
				arg, err := p.term()
				if err != nil {
					return nil, err
				}
				n.args = append(n.args, arg)
				if p.punct(")") {
					break
				}
				if !p.punct(",") {
					return nil, p.errorf("expected , or ) in the arguments of %s, found %s", n.name, p.describe())
				}
				p.next()
			}
		}
		p.next()
	default:
		return nil, p.errorf("expected a function call, a string or a number, found %s", p.describe())
	}
	for {
		switch {
		case p.punct("."):
			p.next()
			if p.tok != tokIdent {
				return nil, p.errorf("expected a property name after '.', found %s", p.describe())
			}
			n.access = append(n.access, accessor{prop: p.text})
			p.next()
		case p.punct("["):
			p.next()
			idx, err := p.term()
			if err != nil {
				return nil, err
			}
			if !p.punct("]") {
				return nil, p.errorf("expected ] after the index, found %s", p.describe())
			}
			p.next()
			n.access = append(n.access, accessor{index: idx})
		default:
			return n, nil
		}
	}
}

// String renders n in a canonical form: parsing it gives n again.
func (n *node) String() string {
	var b strings.Builder
	n.render(&b)
	return b.String()
}

func (n *node) render(b *strings.Builder) {
	switch n.kind {
	case nodeString:
		b.WriteByte('\'')
		b.WriteString(strings.ReplaceAll(n.text, "'", "''"))
		b.WriteByte('\'')
	case nodeNumber:
		b.WriteString(n.text)
	case nodeCall:
		b.WriteString(n.name)
		b.WriteByte('(')
		for i, a := range n.args {
			if i > 0 {
				b.WriteString(", ")
			}
			a.render(b)
		}
		b.WriteByte(')')
	}
	for _, a := range n.access {
		if a.index != nil {
			b.WriteByte('[')
			a.index.render(b)
			b.WriteByte(']')
		} else {
			b.WriteByte('.')
			b.WriteString(a.prop)
		}
	}
}

// is reports whether n is a call of the function name (ARM function names
// are case-insensitive).
func (n *node) is(name string) bool { return n.kind == nodeCall && strings.EqualFold(n.name, name) }

// literalArg returns the i-th argument if it is a string literal.
func (n *node) literalArg(i int) (string, bool) {
	if i >= len(n.args) || n.args[i].kind != nodeString {
		return "", false
	}
	return n.args[i].text, true
}

// walk calls fn for n and every term inside it (arguments and indexes),
// depth first.
func (n *node) walk(fn func(*node)) {
	fn(n)
	for _, a := range n.args {
		a.walk(fn)
	}
	for _, a := range n.access {
		if a.index != nil {
			a.index.walk(fn)
		}
	}
}

// calls returns every call of the function name in n.
func (n *node) calls(name string) []*node {
	var out []*node
	n.walk(func(m *node) {
		if m.is(name) {
			out = append(out, m)
		}
	})
	return out
}
