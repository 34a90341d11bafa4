package rules

import (
	"encoding/csv"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"path"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
	"go.yaml.in/yaml/v3"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// List is a named set of values for in_list: exact values (compared without
// regard to case) and CIDR prefixes (an IP value matches when a prefix
// contains it).
type List struct {
	Name     string
	values   map[string]struct{}
	prefixes []netip.Prefix
}

// Contains reports whether v is in the list.
func (l *List) Contains(v string) bool {
	ip, err := netip.ParseAddr(v)
	return l.contains(v, ip, err == nil)
}

// contains is Contains with v already parsed as an address (isIP) or not.
func (l *List) contains(v string, ip netip.Addr, isIP bool) bool {
	if _, ok := l.values[strings.ToLower(v)]; ok {
		return true
	}
	if !isIP {
		return false
	}
	// An IPv4 address parses only from its canonical form, which was just
	// looked up; others are looked up canonical.
	if !ip.Is4() {
		ip = ip.Unmap()
		if _, ok := l.values[ip.String()]; ok {
			return true
		}
	}
	for _, p := range l.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Len is the number of entries.
func (l *List) Len() int { return len(l.values) + len(l.prefixes) }

func (l *List) add(v string) {
	v = strings.TrimSpace(v)
	if v == "" || strings.HasPrefix(v, "#") {
		return
	}
	if strings.Contains(v, "/") {
		if p, err := netip.ParsePrefix(v); err == nil {
			l.prefixes = append(l.prefixes, p.Masked())
			return
		}
	}
	if ip, err := netip.ParseAddr(v); err == nil {
		v = ip.Unmap().String()
	}
	l.values[strings.ToLower(v)] = struct{}{}
}

var listKeys = []string{"file", "column", "header"}

// listSection reads `lists:`: name → inline list, or {file, column, header}
// for a file of one value per line, or a CSV file's column.
func (l *loader) listSection(file string, n *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		l.errorf(file, n.Line, "", "lists: expected a mapping of name to list")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		name, v := n.Content[i].Value, n.Content[i+1]
		if _, dup := l.lists[name]; dup {
			l.errorf(file, n.Content[i].Line, "", "lists: duplicate list %q", name)
			continue
		}
		list := &List{Name: name, values: map[string]struct{}{}}
		switch v.Kind {
		case yaml.SequenceNode:
			var items []string
			if err := v.Decode(&items); err != nil {
				l.errorf(file, v.Line, "", "lists.%s: expected a list of strings", name)
				continue
			}
			for _, it := range items {
				list.add(it)
			}
		case yaml.MappingNode:
			if _, ok := l.mapping(file, v, "", listKeys); !ok {
				continue
			}
			var spec struct {
				File   string `yaml:"file"`
				Column int    `yaml:"column"`
				Header bool   `yaml:"header"`
			}
			if err := v.Decode(&spec); err != nil || spec.File == "" {
				l.errorf(file, v.Line, "", "lists.%s: expected {file: PATH, column: N, header: BOOL}", name)
				continue
			}
			p := path.Join(path.Dir(l.rel[file]), spec.File)
			if path.IsAbs(spec.File) || !fs.ValidPath(p) {
				l.errorf(file, v.Line, "", "lists.%s: list file %q %s", name, spec.File, outsideDir)
				continue
			}
			if err := l.readListFile(p, spec.Column, spec.Header, list); escapes(err) {
				l.errorf(file, v.Line, "", "lists.%s: list file %q %s", name, spec.File, outsideDir)
				continue
			} else if err != nil {
				l.errorf(file, v.Line, "", "lists.%s: %v", name, err)
				continue
			}
		default:
			l.errorf(file, v.Line, "", "lists.%s: expected a list or {file: PATH}", name)
			continue
		}
		l.lists[name] = list
	}
}

// readListFile reads p (a valid path inside the rules dir): *.csv by
// column, any other file one value per line; '#' starts a comment line.
func (l *loader) readListFile(p string, column int, header bool, list *List) error {
	f, err := l.fsys.Open(p)
	if err != nil {
		return fmt.Errorf("reading list file: %w", err)
	}
	defer f.Close()
	if !strings.HasSuffix(p, ".csv") {
		data, err := io.ReadAll(f)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(data), "\n") {
			list.add(line)
		}
		return nil
	}
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	r.Comment = '#'
	for first := true; ; first = false {
		rec, err := r.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", p, err)
		}
		if first && header {
			continue
		}
		if column >= len(rec) {
			line, _ := r.FieldPos(0)
			return fmt.Errorf("%s:%d: no column %d", p, line, column)
		}
		list.add(rec[column])
	}
}

type macro struct {
	src  string
	file string
	line int
}

// macroSection reads `macros:`: name → condition fragment. A macro is used
// in a condition by its bare name and may use other macros.
func (l *loader) macroSection(file string, n *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		l.errorf(file, n.Line, "", "macros: expected a mapping of name to expression")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case v.Kind != yaml.ScalarNode:
			l.errorf(file, v.Line, "", "macros.%s: expected an expression", k.Value)
		case l.macros[k.Value] != nil:
			l.errorf(file, k.Line, "", "macros: duplicate macro %q", k.Value)
		case isEventField(k.Value) || helperNames[k.Value]:
			l.errorf(file, k.Line, "", "macros: %q is an event field or a helper; choose another name", k.Value)
		default:
			if _, err := parser.Parse(v.Value); err != nil {
				l.errorf(file, v.Line, "", "macros.%s: %v", k.Value, err)
				continue
			}
			l.macros[k.Value] = &macro{src: v.Value, file: file, line: v.Line}
		}
	}
}

func countNodes(n ast.Node) int {
	c := nodeCounter(0)
	ast.Walk(&n, &c)
	return int(c)
}

type nodeCounter int

func (c *nodeCounter) Visit(*ast.Node) { *c++ }

func isEventField(name string) bool {
	_, ok := fieldGetters[name]
	return ok || name == "time" || name == "received" || name == "attrs" || event.IsSchemaField(name)
}

// patcher expands macros and checks in_list's list names while expr
// compiles a condition. nodes counts the nodes its macros expanded to, over
// every depth, so macros that use each other several times cannot blow a
// condition up past maxMacroNodes.
type patcher struct {
	l     *loader
	depth int
	nodes *int
	errs  []string
}

func newPatcher(l *loader) *patcher { return &patcher{l: l, nodes: new(int)} }

func (p *patcher) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		if event.IsSchemaField(n.Value) {
			// An extended schema field (event/schema.go) lives in Attrs.
			ast.Patch(node, &ast.MemberNode{Node: &ast.IdentifierNode{Value: "attrs"}, Property: &ast.StringNode{Value: n.Value}})
			return
		}
		m, ok := p.l.macros[n.Value]
		if !ok {
			return
		}
		if p.depth > 8 {
			p.errs = append(p.errs, fmt.Sprintf("macro %q: macros nest too deep (a cycle?)", n.Value))
			return
		}
		if *p.nodes > maxMacroNodes {
			return // reported once, where the count went over
		}
		tree, err := parser.Parse(m.src)
		if err != nil {
			return // reported when the macro was read
		}
		if *p.nodes += countNodes(tree.Node); *p.nodes > maxMacroNodes {
			p.errs = append(p.errs, fmt.Sprintf("macro %q: the condition's macros expand to more than %d nodes", n.Value, maxMacroNodes))
			return
		}
		inner := &patcher{l: p.l, depth: p.depth + 1, nodes: p.nodes}
		ast.Walk(&tree.Node, inner)
		p.errs = append(p.errs, inner.errs...)
		ast.Patch(node, tree.Node)
	case *ast.CallNode:
		if id, ok := n.Callee.(*ast.IdentifierNode); ok && id.Value == "in_list" && len(n.Arguments) > 0 {
			s, ok := n.Arguments[0].(*ast.StringNode)
			if !ok {
				p.errs = append(p.errs, "in_list: the list name must be a string literal")
			} else if p.l.lists[s.Value] == nil {
				p.errs = append(p.errs, fmt.Sprintf("in_list: no list named %q (define it under lists:)", s.Value))
			}
		}
	}
}

var helperNames = map[string]bool{"cidr": true, "is_private": true, "is_public": true, "in_list": true, "iequals": true,
	"like": true, "like_cased": true, "num": true}

// compileStep compiles st's condition against the Event with the helpers.
func (l *loader) compileStep(r *Rule, st *Step, bad func(string, ...any)) {
	if strings.TrimSpace(st.Condition) == "" {
		// Reported by the caller; a step without a program must never load.
		bad("empty condition")
		return
	}
	// Expand macros and bound the cost on a tree of our own first: a
	// condition too costly to run is not compiled either (expr's optimizer
	// would build the arrays of its constant ranges). Syntax and macro
	// errors are left to expr.Compile and its patcher, which report them
	// with the type errors.
	if tree, err := parser.Parse(st.Condition); err == nil {
		p := newPatcher(l)
		if ast.Walk(&tree.Node, p); len(p.errs) == 0 {
			if _, errs := conditionCost(tree.Node); len(errs) > 0 {
				for _, e := range errs {
					bad("%s", e)
				}
				return
			}
		}
	}
	p := newPatcher(l)
	prog, err := expr.Compile(st.Condition,
		expr.Env(event.Event{}), expr.AsBool(), expr.Patch(p),
		expr.Function("cidr", fnCIDR, new(func(string, string) bool)),
		expr.Function("is_private", fnIsPrivate, new(func(string) bool)),
		expr.Function("is_public", fnIsPublic, new(func(string) bool)),
		expr.Function("iequals", fnIEquals, new(func(string, string) bool)),
		expr.Function("in_list", l.fnInList(), new(func(string, string) bool)),
		expr.Function("like", fnLike, new(func(string, string) bool)),
		expr.Function("like_cased", fnLikeCased, new(func(string, string) bool)),
		expr.Function("num", fnNum, new(func(string) float64)),
	)
	for _, e := range p.errs {
		bad("%s", e)
	}
	if err != nil {
		// expr's message carries the position inside the expression.
		bad("%s", strings.ReplaceAll(err.Error(), "\n", "\n    "))
		return
	}
	st.program = prog
	st.guards = guardsOf(prog.Node())
	st.native, _ = (&nativeCompiler{lists: l.lists}).condition(prog.Node())
}

// prefixCache holds parsed CIDR arguments (at most maxLikeCache); rule conditions use a handful of
// constants, so it stays small.
var (
	prefixCache     sync.Map // string -> netip.Prefix
	prefixCacheSize atomic.Int64
)

func fnCIDR(params ...any) (any, error) {
	ip, err := netip.ParseAddr(params[0].(string))
	if err != nil {
		return false, nil
	}
	s := params[1].(string)
	v, ok := prefixCache.Load(s)
	if !ok {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("cidr: %q is not a CIDR prefix", s)
		}
		v = p.Masked()
		// Bounded, as like()'s: a prefix taken from the event must not
		// grow it without limit.
		if prefixCacheSize.Load() < maxLikeCache {
			if _, loaded := prefixCache.LoadOrStore(s, v); !loaded {
				prefixCacheSize.Add(1)
			}
		}
	}
	// A zone (fe80::1%eth0) does not take an address out of its prefix.
	return v.(netip.Prefix).Contains(ip.Unmap().WithZone("")), nil
}

// cgnat is RFC 6598 shared address space, not routable on the Internet.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

func fnIsPrivate(params ...any) (any, error) {
	ip, err := netip.ParseAddr(params[0].(string))
	if err != nil {
		return false, nil
	}
	ip = ip.Unmap()
	return ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast() || cgnat.Contains(ip), nil
}

func fnIsPublic(params ...any) (any, error) {
	ip, err := netip.ParseAddr(params[0].(string))
	if err != nil {
		return false, nil
	}
	ip = ip.Unmap()
	return ip.IsGlobalUnicast() && !ip.IsPrivate() && !cgnat.Contains(ip), nil
}

func fnIEquals(params ...any) (any, error) {
	return strings.EqualFold(params[0].(string), params[1].(string)), nil
}

func (l *loader) fnInList() func(params ...any) (any, error) {
	lists := l.lists
	return func(params ...any) (any, error) {
		list := lists[params[0].(string)]
		if list == nil {
			return false, nil
		}
		return list.Contains(params[1].(string)), nil
	}
}
