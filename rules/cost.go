package rules

import (
	"fmt"

	"github.com/expr-lang/expr/ast"
)

// Limits on what a condition may cost. A condition runs on every event, so
// its cost is bounded when it loads, from its syntax tree after macros are
// expanded and before expr's optimizer folds constants (folding 1..999999
// would itself build the million-element array).
const (
	// maxConditionCost bounds a condition's estimated steps per event: a
	// step is one node of the tree, an element of a range it builds, or
	// one run of a predicate's node, about 1-60ns each. The shipped
	// pack's costliest condition takes 30.
	maxConditionCost = 5_000
	// maxMacroNodes bounds the nodes a condition's macros expand to; a
	// tree larger than maxConditionCost is refused anyway.
	maxMacroNodes = maxConditionCost
)

// costCap keeps the estimate from overflowing; anything this large is
// rejected anyway.
const costCap = 1 << 40

// conditionCost estimates the steps one run of the condition n takes and
// returns a problem for each construct with no bound a rule author can see:
// a range whose bounds are not integer constants, an iteration over event
// data nested in another one (its cost grows with the square of the
// event's size), repeat(), and a total above maxConditionCost. An
// iteration over event data (split(message, " "), keys(attrs)) counts its
// predicate once: its cost grows with the event, which the sources bound.
func conditionCost(n ast.Node) (int64, []string) {
	c := &coster{vars: map[string]size{}}
	total := c.cost(n)
	if total > maxConditionCost && len(c.errs) == 0 {
		msg := fmt.Sprintf("costs about %d steps per event, which exceeds the limit of %d", total, maxConditionCost)
		if c.worst != "" {
			msg += fmt.Sprintf(": %s", c.worst)
		}
		c.errs = append(c.errs, msg)
	}
	return total, c.errs
}

// size is what the coster knows of a collection's length: at most n
// elements, or fromEvent, as many as the event's data makes.
type size struct {
	n         int64
	fromEvent bool
}

type coster struct {
	inEventLoop bool
	vars        map[string]size // let variables in scope
	worst       string          // the largest constant iteration or range, for the message
	worstN      int64
	errs        []string
}

func (c *coster) bad(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	for _, e := range c.errs {
		if e == msg {
			return
		}
	}
	c.errs = append(c.errs, msg)
}

func (c *coster) note(n int64, format string, args ...any) {
	if n > c.worstN {
		c.worstN, c.worst = n, fmt.Sprintf(format, args...)
	}
}

func add(a, b int64) int64 { return min(a+b, costCap) }

// sum is base plus the cost of every node.
func (c *coster) sum(base int64, nodes []ast.Node) int64 {
	for _, n := range nodes {
		base = add(base, c.cost(n))
	}
	return base
}

func mul(a, b int64) int64 {
	if a != 0 && b > costCap/a {
		return costCap
	}
	return min(a*b, costCap)
}

func (c *coster) cost(n ast.Node) int64 {
	switch n := n.(type) {
	case nil:
		return 0
	case *ast.BinaryNode:
		switch n.Operator {
		case "..":
			lo, hi, ok := c.rangeBounds(n)
			if !ok {
				return 1
			}
			size := rangeSize(lo, hi)
			c.note(size, "the range %s (%d elements)", n, size)
			return max(size, 1)
		case "in":
			// expr's optimizer turns `x in a..b`, constant bounds and x
			// an int, into two compares: it builds no array.
			if r, ok := n.Right.(*ast.BinaryNode); ok && r.Operator == ".." && c.isInt(n.Left) {
				if _, _, ok := c.rangeBounds(r); ok {
					return add(2, c.cost(n.Left))
				}
				return add(1, c.cost(n.Left))
			}
		}
		return add(1, add(c.cost(n.Left), c.cost(n.Right)))
	case *ast.BuiltinNode:
		return c.builtin(n)
	case *ast.PredicateNode:
		return c.cost(n.Node)
	case *ast.UnaryNode:
		return add(1, c.cost(n.Node))
	case *ast.ChainNode:
		return c.cost(n.Node)
	case *ast.MemberNode:
		return add(1, add(c.cost(n.Node), c.cost(n.Property)))
	case *ast.SliceNode:
		return add(1, add(c.cost(n.Node), add(c.cost(n.From), c.cost(n.To))))
	case *ast.CallNode:
		return c.sum(1, n.Arguments)
	case *ast.ConditionalNode:
		return add(1, add(c.cost(n.Cond), add(c.cost(n.Exp1), c.cost(n.Exp2))))
	case *ast.VariableDeclaratorNode:
		v := c.cost(n.Value)
		prev, shadowed := c.vars[n.Name]
		c.vars[n.Name] = c.sizeOf(n.Value, v)
		e := c.cost(n.Expr)
		if shadowed {
			c.vars[n.Name] = prev
		} else {
			delete(c.vars, n.Name)
		}
		return add(v, e)
	case *ast.SequenceNode:
		return c.sum(0, n.Nodes)
	case *ast.ArrayNode:
		return c.sum(1, n.Nodes)
	case *ast.MapNode:
		return c.sum(1, n.Pairs)
	case *ast.PairNode:
		return add(c.cost(n.Key), c.cost(n.Value))
	default: // identifiers, literals, #pointers
		return 1
	}
}

func (c *coster) builtin(n *ast.BuiltinNode) int64 {
	if n.Name == "repeat" {
		// Its result's size is its count times its string's: strings.Repeat
		// allocates before expr's memory budget can object.
		c.bad("repeat() is not allowed in a condition: its result grows with its arguments")
		return 1
	}
	pred := -1
	for i, a := range n.Arguments {
		if _, ok := a.(*ast.PredicateNode); ok {
			pred = i
		}
	}
	if pred < 1 {
		return c.sum(1, n.Arguments)
	}
	coll := n.Arguments[0]
	collCost := c.cost(coll)
	sz := c.sizeOf(coll, collCost)
	var body int64
	if sz.fromEvent {
		if c.inEventLoop {
			c.bad("%s(%s, ...) iterates over event data inside another iteration over event data: its cost grows with the square of the event's size", n.Name, coll)
		}
		outer := c.inEventLoop
		c.inEventLoop = true
		body = c.cost(n.Arguments[pred])
		c.inEventLoop = outer
	} else {
		body = mul(max(sz.n, 1), add(1, c.cost(n.Arguments[pred])))
		c.note(body, "%s over %s (%d elements)", n.Name, coll, sz.n)
	}
	t := add(1, add(collCost, body))
	for i, a := range n.Arguments[1:] {
		if i+1 != pred {
			t = add(t, c.cost(a))
		}
	}
	return t
}

// sizeOf bounds the length of the collection n, whose cost is cost: a
// constant range or an array literal exactly; an expression over constants
// by its cost (building a collection takes a step per element); anything
// reading the event or a predicate's element is fromEvent.
func (c *coster) sizeOf(n ast.Node, cost int64) size {
	switch n := n.(type) {
	case *ast.BinaryNode:
		if n.Operator == ".." {
			lo, okLo := constInt(n.Left)
			hi, okHi := constInt(n.Right)
			if okLo && okHi {
				return size{n: rangeSize(lo, hi)}
			}
			return size{n: 1} // reported by rangeBounds
		}
	case *ast.ArrayNode:
		return size{n: int64(len(n.Nodes))}
	}
	if c.readsEvent(n) {
		return size{fromEvent: true}
	}
	return size{n: cost}
}

// readsEvent reports whether n reads the event, a predicate's element or
// a let variable that does.
func (c *coster) readsEvent(n ast.Node) bool {
	reads := &eventReader{vars: c.vars}
	ast.Walk(&n, reads)
	return reads.found
}

type eventReader struct {
	vars  map[string]size
	found bool
}

func (r *eventReader) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		if v, ok := r.vars[n.Value]; !ok || v.fromEvent {
			r.found = true
		}
	case *ast.PointerNode:
		r.found = true
	}
}

// intFields are the Event's int fields.
var intFields = map[string]bool{"facility": true, "severity": true, "src_port": true, "dst_port": true}

// isInt reports whether n is surely an int before type checking: what
// expr's optimizer needs to see to compile `n in a..b` to compares.
func (c *coster) isInt(n ast.Node) bool {
	if _, ok := constInt(n); ok {
		return true
	}
	switch n := n.(type) {
	case *ast.IdentifierNode:
		_, shadowed := c.vars[n.Value]
		return intFields[n.Value] && !shadowed
	case *ast.BuiltinNode:
		return n.Name == "int" || n.Name == "len"
	}
	return false
}

// rangeBounds returns a range's bounds, reporting one that is not an
// integer constant: its size would be chosen by the event.
func (c *coster) rangeBounds(n *ast.BinaryNode) (lo, hi int64, ok bool) {
	lo, okLo := constInt(n.Left)
	hi, okHi := constInt(n.Right)
	if !okLo || !okHi {
		c.bad("range bounds must be integer constants, not %s", n)
		return 0, 0, false
	}
	return lo, hi, true
}

// rangeSize is the length of lo..hi, capped at costCap.
func rangeSize(lo, hi int64) int64 {
	if hi < lo {
		return 0
	}
	d := uint64(hi) - uint64(lo) // exact: hi >= lo
	if d >= costCap {
		return costCap
	}
	return int64(d) + 1
}

// constInt returns an integer literal's value, negative ones included.
func constInt(n ast.Node) (int64, bool) {
	switch n := n.(type) {
	case *ast.IntegerNode:
		return int64(n.Value), true
	case *ast.UnaryNode:
		if i, ok := n.Node.(*ast.IntegerNode); ok && (n.Operator == "-" || n.Operator == "+") {
			v := int64(i.Value)
			if n.Operator == "-" {
				v = -v
			}
			return v, true
		}
	}
	return 0, false
}
