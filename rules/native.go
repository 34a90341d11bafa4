package rules

import (
	"math"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/expr-lang/expr/ast"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// A condition whose compiled tree uses only what rule conditions usually
// do — and, or, not, comparisons of fields and constants, matches, in,
// the helpers, lower/upper — also runs as a tree of Go closures: no
// virtual machine, no reflection to read a field, nothing allocated per
// event. The expr program stays the reference: a condition with anything
// else runs on it, and the tests hold both to the same results.

type (
	boolFn func(*event.Event) bool
	strFn  func(*event.Event) string
	numFn  func(*event.Event) float64
)

// nativeInts reads the Event's int fields (intFields) as conditions see
// them: numbers.
var nativeInts = map[string]func(*event.Event) int{
	"facility": func(e *event.Event) int { return e.Facility }, "severity": func(e *event.Event) int { return e.Severity },
	"src_port": func(e *event.Event) int { return e.SrcPort }, "dst_port": func(e *event.Event) int { return e.DstPort },
}

// nativeCompiler turns a compiled condition's tree into closures; lists
// are the rule set's named lists, for in_list.
type nativeCompiler struct {
	lists map[string]*List
}

// condition returns n as a closure, or false if n uses something only the
// expr program runs.
func (c *nativeCompiler) condition(n ast.Node) (boolFn, bool) { return c.boolean(n) }

func (c *nativeCompiler) boolean(n ast.Node) (boolFn, bool) {
	switch n := n.(type) {
	case *ast.BoolNode:
		v := n.Value
		return func(*event.Event) bool { return v }, true
	case *ast.ConstantNode:
		if v, ok := n.Value.(bool); ok {
			return func(*event.Event) bool { return v }, true
		}
	case *ast.UnaryNode:
		if n.Operator == "not" || n.Operator == "!" {
			if f, ok := c.boolean(n.Node); ok {
				return func(e *event.Event) bool { return !f(e) }, true
			}
		}
	case *ast.BinaryNode:
		return c.binary(n)
	case *ast.CallNode:
		return c.call(n)
	case *ast.ConditionalNode:
		cond, ok1 := c.boolean(n.Cond)
		a, ok2 := c.boolean(n.Exp1)
		b, ok3 := c.boolean(n.Exp2)
		if ok1 && ok2 && ok3 {
			return func(e *event.Event) bool {
				if cond(e) {
					return a(e)
				}
				return b(e)
			}, true
		}
	}
	return nil, false
}

func (c *nativeCompiler) binary(n *ast.BinaryNode) (boolFn, bool) {
	switch n.Operator {
	case "and", "&&", "or", "||":
		l, ok1 := c.boolean(n.Left)
		r, ok2 := c.boolean(n.Right)
		if !ok1 || !ok2 {
			return nil, false
		}
		if n.Operator == "and" || n.Operator == "&&" {
			return func(e *event.Event) bool { return l(e) && r(e) }, true
		}
		return func(e *event.Event) bool { return l(e) || r(e) }, true
	case "==", "!=":
		var eq boolFn
		if l, ok := c.str(n.Left); ok {
			if r, ok := c.str(n.Right); ok {
				if k, ok := constString(n.Right); ok {
					eq = func(e *event.Event) bool { return l(e) == k }
				} else {
					eq = func(e *event.Event) bool { return l(e) == r(e) }
				}
			}
		}
		if eq == nil {
			l, ok1 := c.num(n.Left)
			r, ok2 := c.num(n.Right)
			if !ok1 || !ok2 {
				return nil, false
			}
			eq = func(e *event.Event) bool { return l(e) == r(e) }
		}
		if n.Operator == "!=" {
			return func(e *event.Event) bool { return !eq(e) }, true
		}
		return eq, true
	case "<", "<=", ">", ">=":
		l, ok1 := c.num(n.Left)
		r, ok2 := c.num(n.Right)
		if !ok1 || !ok2 {
			return nil, false
		}
		switch n.Operator {
		case "<":
			return func(e *event.Event) bool { return l(e) < r(e) }, true
		case "<=":
			return func(e *event.Event) bool { return l(e) <= r(e) }, true
		case ">":
			return func(e *event.Event) bool { return l(e) > r(e) }, true
		}
		return func(e *event.Event) bool { return l(e) >= r(e) }, true
	case "matches":
		l, ok := c.str(n.Left)
		p, isConst := constString(n.Right)
		if !ok || !isConst {
			return nil, false
		}
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, false
		}
		return func(e *event.Event) bool { return re.MatchString(l(e)) }, true
	case "contains", "startsWith", "endsWith":
		l, ok1 := c.str(n.Left)
		r, ok2 := c.str(n.Right)
		if !ok1 || !ok2 {
			return nil, false
		}
		switch n.Operator {
		case "contains":
			return func(e *event.Event) bool { return strings.Contains(l(e), r(e)) }, true
		case "startsWith":
			return func(e *event.Event) bool { return strings.HasPrefix(l(e), r(e)) }, true
		}
		return func(e *event.Event) bool { return strings.HasSuffix(l(e), r(e)) }, true
	case "in":
		l, ok := c.str(n.Left)
		if !ok {
			return nil, false
		}
		set, ok := constStringSet(n.Right)
		if !ok {
			return nil, false
		}
		return func(e *event.Event) bool { _, in := set[l(e)]; return in }, true
	}
	return nil, false
}

// call compiles the helpers that return a bool.
func (c *nativeCompiler) call(n *ast.CallNode) (boolFn, bool) {
	id, ok := n.Callee.(*ast.IdentifierNode)
	if !ok {
		return nil, false
	}
	args := n.Arguments
	switch id.Value {
	case "like", "like_cased":
		if len(args) != 2 {
			return nil, false
		}
		v, ok := c.str(args[0])
		p, isConst := constString(args[1])
		if !ok || !isConst {
			return nil, false
		}
		lp := compileLike(p, id.Value == "like_cased")
		return func(e *event.Event) bool { return lp.match(v(e)) }, true
	case "iequals":
		if len(args) != 2 {
			return nil, false
		}
		a, ok1 := c.str(args[0])
		b, ok2 := c.str(args[1])
		if !ok1 || !ok2 {
			return nil, false
		}
		return func(e *event.Event) bool { return strings.EqualFold(a(e), b(e)) }, true
	case "cidr":
		if len(args) != 2 {
			return nil, false
		}
		v, ok := c.str(args[0])
		s, isConst := constString(args[1])
		if !ok || !isConst {
			return nil, false
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, false // the program reports it
		}
		p = p.Masked()
		return func(e *event.Event) bool {
			ip, ok := e.Addr(v(e))
			// A zone (fe80::1%eth0) does not take an address out of its prefix.
			return ok && p.Contains(ip.Unmap().WithZone(""))
		}, true
	case "is_private", "is_public":
		if len(args) != 1 {
			return nil, false
		}
		v, ok := c.str(args[0])
		if !ok {
			return nil, false
		}
		private := id.Value == "is_private"
		return func(e *event.Event) bool {
			ip, ok := e.Addr(v(e))
			if !ok {
				return false
			}
			ip = ip.Unmap()
			if private {
				return ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast() || cgnat.Contains(ip)
			}
			return ip.IsGlobalUnicast() && !ip.IsPrivate() && !cgnat.Contains(ip)
		}, true
	case "in_list":
		if len(args) != 2 {
			return nil, false
		}
		name, isConst := constString(args[0])
		v, ok := c.str(args[1])
		if !isConst || !ok {
			return nil, false
		}
		list := c.lists[name]
		if list == nil {
			return func(*event.Event) bool { return false }, true
		}
		return func(e *event.Event) bool {
			s := v(e)
			ip, ok := e.Addr(s)
			return list.contains(s, ip, ok)
		}, true
	}
	return nil, false
}

// str compiles a string-valued node.
func (c *nativeCompiler) str(n ast.Node) (strFn, bool) {
	switch n := n.(type) {
	case *ast.StringNode:
		v := n.Value
		return func(*event.Event) string { return v }, true
	case *ast.ConstantNode:
		if v, ok := n.Value.(string); ok {
			return func(*event.Event) string { return v }, true
		}
	case *ast.IdentifierNode:
		if stringFields[n.Value] {
			return strFn(fieldGetters[n.Value]), true
		}
	case *ast.MemberNode:
		// attrs?.x is nil, not "", on an event without attrs: only the
		// program has nil.
		if id, ok := n.Node.(*ast.IdentifierNode); ok && id.Value == "attrs" && !n.Method && !n.Optional {
			if k, ok := constString(n.Property); ok {
				return func(e *event.Event) string { return e.Attrs[k] }, true
			}
		}
	case *ast.BuiltinNode:
		return c.builtinStr(n.Name, n.Arguments)
	case *ast.CallNode:
		if id, ok := n.Callee.(*ast.IdentifierNode); ok {
			return c.builtinStr(id.Value, n.Arguments)
		}
	case *ast.ConditionalNode:
		cond, ok1 := c.boolean(n.Cond)
		a, ok2 := c.str(n.Exp1)
		b, ok3 := c.str(n.Exp2)
		if ok1 && ok2 && ok3 {
			return func(e *event.Event) string {
				if cond(e) {
					return a(e)
				}
				return b(e)
			}, true
		}
	}
	return nil, false
}

func (c *nativeCompiler) builtinStr(name string, args []ast.Node) (strFn, bool) {
	if len(args) != 1 {
		return nil, false
	}
	switch name {
	case "lower", "upper":
		v, ok := c.str(args[0])
		if !ok {
			return nil, false
		}
		if name == "lower" {
			return func(e *event.Event) string { return strings.ToLower(v(e)) }, true
		}
		return func(e *event.Event) string { return strings.ToUpper(v(e)) }, true
	case "string":
		if id, ok := args[0].(*ast.IdentifierNode); ok {
			if f, ok := nativeInts[id.Value]; ok {
				return func(e *event.Event) string { return strconv.Itoa(f(e)) }, true
			}
		}
		return c.str(args[0])
	}
	return nil, false
}

// num compiles a number-valued node: the int fields, num(), constants.
func (c *nativeCompiler) num(n ast.Node) (numFn, bool) {
	switch n := n.(type) {
	case *ast.IntegerNode:
		v := float64(n.Value)
		return func(*event.Event) float64 { return v }, true
	case *ast.FloatNode:
		v := n.Value
		return func(*event.Event) float64 { return v }, true
	case *ast.IdentifierNode:
		if f, ok := nativeInts[n.Value]; ok {
			return func(e *event.Event) float64 { return float64(f(e)) }, true
		}
	case *ast.CallNode:
		if id, ok := n.Callee.(*ast.IdentifierNode); ok && id.Value == "num" && len(n.Arguments) == 1 {
			if v, ok := c.str(n.Arguments[0]); ok {
				return func(e *event.Event) float64 {
					f, err := strconv.ParseFloat(strings.TrimSpace(v(e)), 64)
					if err != nil {
						return math.NaN()
					}
					return f
				}, true
			}
		}
	}
	return nil, false
}

func constString(n ast.Node) (string, bool) {
	switch n := n.(type) {
	case *ast.StringNode:
		return n.Value, true
	case *ast.ConstantNode:
		s, ok := n.Value.(string)
		return s, ok
	}
	return "", false
}

// constStringSet reads the right side of `in`: a list of string constants
// (or the set expr's optimizer made of one).
func constStringSet(n ast.Node) (map[string]struct{}, bool) {
	set := map[string]struct{}{}
	switch n := n.(type) {
	case *ast.ArrayNode:
		for _, x := range n.Nodes {
			s, ok := constString(x)
			if !ok {
				return nil, false
			}
			set[s] = struct{}{}
		}
		return set, true
	case *ast.ConstantNode:
		switch v := n.Value.(type) {
		case map[string]struct{}:
			return v, true
		case []any:
			for _, x := range v {
				s, ok := x.(string)
				if !ok {
					return nil, false
				}
				set[s] = struct{}{}
			}
			return set, true
		case []string:
			for _, s := range v {
				set[s] = struct{}{}
			}
			return set, true
		}
	}
	return nil, false
}
