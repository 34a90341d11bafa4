package azure

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// evaluator computes template values for given parameter values, for the
// few functions the cloud-init substitution goes through. A function it
// does not know is an error naming it, so a template change that needs more
// shows up as a test failure, not as a wrong value.
type evaluator struct {
	tmpl    *template
	params  map[string]any // the deployment's parameter values; defaults fill the rest
	context map[string]any // subscription(), resourceGroup(), environment()
	vars    map[string]any // evaluated variables
	loops   map[string]int // copy loop name -> current index
	busy    map[string]bool
}

func newEvaluator(t *template, params, context map[string]any) *evaluator {
	return &evaluator{tmpl: t, params: params, context: context, vars: map[string]any{},
		loops: map[string]int{}, busy: map[string]bool{}}
}

// value evaluates a JSON value of the template: expressions in strings,
// recursively through objects and arrays.
func (e *evaluator) value(v any) (any, error) {
	switch v := v.(type) {
	case string:
		n, ok, err := parseTemplateString(v)
		if err != nil {
			return nil, err
		}
		if !ok {
			if strings.HasPrefix(v, "[[") && strings.HasSuffix(v, "]") {
				return v[1:], nil // "[[x]" is the literal "[x]"
			}
			return v, nil
		}
		return e.eval(n)
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			y, err := e.value(x)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			out[k] = y
		}
		return out, nil
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			y, err := e.value(x)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			out[i] = y
		}
		return out, nil
	}
	return v, nil
}

func (e *evaluator) parameter(name string) (any, error) {
	if v, ok := e.params[name]; ok {
		return v, nil
	}
	p, ok := e.tmpl.Parameters[name]
	if !ok {
		return nil, fmt.Errorf("parameters(%q): not declared", name)
	}
	if p.DefaultValue == nil {
		return nil, fmt.Errorf("parameters(%q): no value given and no default", name)
	}
	return e.value(p.DefaultValue)
}

func (e *evaluator) variable(name string) (any, error) {
	if v, ok := e.vars[name]; ok {
		return v, nil
	}
	if e.busy[name] {
		return nil, fmt.Errorf("variables(%q) refers to itself", name)
	}
	e.busy[name] = true
	defer delete(e.busy, name)
	var v any
	var err error
	if raw, ok := e.tmpl.Variables[name]; ok && name != "copy" {
		v, err = e.value(raw)
	} else if loop, ok := e.tmpl.variableLoop(name); ok {
		v, err = e.loop(loop)
	} else {
		return nil, fmt.Errorf("variables(%q): not declared", name)
	}
	if err != nil {
		return nil, fmt.Errorf("variables(%q): %w", name, err)
	}
	e.vars[name] = v
	return v, nil
}

func (e *evaluator) loop(l copyLoop) (any, error) {
	c, err := e.value(l.Count)
	if err != nil {
		return nil, err
	}
	count, ok := c.(float64)
	if !ok {
		return nil, fmt.Errorf("count is %T, not a number", c)
	}
	out := make([]any, 0, int(count))
	for i := range int(count) {
		e.loops[l.Name] = i
		v, err := e.value(l.Input)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	delete(e.loops, l.Name)
	return out, nil
}

func (e *evaluator) eval(n *node) (any, error) {
	v, err := e.term(n)
	if err != nil {
		return nil, err
	}
	for _, a := range n.access {
		if a.index == nil {
			m, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s: .%s of a %T", n, a.prop, v)
			}
			if v, ok = m[a.prop]; !ok {
				return nil, fmt.Errorf("%s: no property %s", n, a.prop)
			}
			continue
		}
		i, err := e.eval(a.index)
		if err != nil {
			return nil, err
		}
		arr, ok1 := v.([]any)
		idx, ok2 := i.(float64)
		if !ok1 || !ok2 || int(idx) < 0 || int(idx) >= len(arr) {
			return nil, fmt.Errorf("%s: cannot index %T with %v", n, v, i)
		}
		v = arr[int(idx)]
	}
	return v, nil
}

func (e *evaluator) term(n *node) (any, error) {
	switch n.kind {
	case nodeString:
		return n.text, nil
	case nodeNumber:
		f, err := strconv.ParseFloat(n.text, 64)
		return f, err
	}
	args := make([]any, len(n.args))
	for i, a := range n.args {
		v, err := e.eval(a)
		if err != nil {
			return nil, err
		}
		args[i] = v
	}
	str := func(i int) (string, error) {
		if i >= len(args) {
			return "", fmt.Errorf("%s: argument %d missing", n.name, i+1)
		}
		s, ok := args[i].(string)
		if !ok {
			return "", fmt.Errorf("%s: argument %d is %T, not a string", n.name, i+1, args[i])
		}
		return s, nil
	}
	switch strings.ToLower(n.name) {
	case "parameters":
		name, err := str(0)
		if err != nil {
			return nil, err
		}
		return e.parameter(name)
	case "variables":
		name, err := str(0)
		if err != nil {
			return nil, err
		}
		return e.variable(name)
	case "copyindex":
		name, err := str(0)
		if err != nil {
			return nil, err
		}
		i, ok := e.loops[name]
		if !ok {
			return nil, fmt.Errorf("copyIndex(%q) outside that loop", name)
		}
		return float64(i), nil
	case "subscription", "resourcegroup", "environment":
		v, ok := e.context[strings.ToLower(n.name)]
		if !ok {
			return nil, fmt.Errorf("%s(): no sample value", n.name)
		}
		return v, nil
	case "format":
		f, err := str(0)
		if err != nil {
			return nil, err
		}
		return armFormat(f, args[1:])
	case "tolower", "toupper", "base64":
		s, err := str(0)
		if err != nil {
			return nil, err
		}
		switch strings.ToLower(n.name) {
		case "tolower":
			return strings.ToLower(s), nil
		case "toupper":
			return strings.ToUpper(s), nil
		}
		return base64.StdEncoding.EncodeToString([]byte(s)), nil
	case "replace":
		s, err := str(0)
		if err != nil {
			return nil, err
		}
		old, err := str(1)
		if err != nil {
			return nil, err
		}
		repl, err := str(2)
		if err != nil {
			return nil, err
		}
		return strings.ReplaceAll(s, old, repl), nil
	case "string":
		if len(args) != 1 {
			return nil, fmt.Errorf("string takes one argument")
		}
		return armString(args[0])
	case "length":
		switch v := args[0].(type) {
		case []any:
			return float64(len(v)), nil
		case string:
			return float64(len(v)), nil
		}
		return nil, fmt.Errorf("length of a %T", args[0])
	}
	return nil, fmt.Errorf("%s(): not known to this evaluator", n.name)
}

// armFormat is format() for the {N} items ARM templates use ({{ and }}
// are braces).
func armFormat(f string, args []any) (string, error) {
	var b strings.Builder
	for i := 0; i < len(f); i++ {
		switch {
		case strings.HasPrefix(f[i:], "{{"):
			b.WriteByte('{')
			i++
		case strings.HasPrefix(f[i:], "}}"):
			b.WriteByte('}')
			i++
		case f[i] == '{':
			end := strings.IndexByte(f[i:], '}')
			if end < 0 {
				return "", fmt.Errorf("format %q: unclosed {", f)
			}
			k, err := strconv.Atoi(f[i+1 : i+end])
			if err != nil || k < 0 || k >= len(args) {
				return "", fmt.Errorf("format %q: no argument for %s", f, f[i:i+end+1])
			}
			s, err := armString(args[k])
			if err != nil {
				return "", err
			}
			b.WriteString(s)
			i += end
		default:
			b.WriteByte(f[i])
		}
	}
	return b.String(), nil
}

// armString is string(): a string as it is, anything else as compact JSON
// (ARM does not escape <, > and & as Go does by default).
func armString(v any) (string, error) {
	if s, ok := v.(string); ok {
		return s, nil
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}
