package rules

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// A condition runs on every event: one whose cost has no bound a rule
// author can see (a range of a million elements, a nested walk over the
// event's own data) is a load error, with the file, line and rule id.
func TestConditionCostIsBounded(t *testing.T) {
	tests := []struct {
		name, cond, want string
	}{
		{"the reported condition", `all(1..999999, # > 0)`, "1..999999 (999999 elements)"},
		{"nested constant ranges", `any(1..100, {any(1..100, {# == dst_port})})`, "exceeds the limit"},
		{"range bound from the event", `any(1..dst_port, # == 7)`, "range bounds must be integer constants"},
		{"range bound computed", `any(1..(2*5000000), # == 7)`, "range bounds must be integer constants"},
		{"nested walk over event data", `any(split(message, " "), {any(split(message, " "), {# == "x"})})`,
			"iterates over event data inside another iteration over event data"},
		{"repeat", `repeat(message, 1000000) != ""`, "repeat"},
		{"in a range, not an int", `float(dst_port) in 1..999999`, "1..999999 (999999 elements)"},
		{"a macro hides the range", `big`, "1..999999 (999999 elements)"},
		{"macros multiply", `m5`, "expand"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			y := "macros:\n  big: 'all(1..999999, # > 0)'\n" +
				"  m0: 'dst_port == 1 || dst_port == 2 || dst_port == 3 || dst_port == 4 || dst_port == 5 || dst_port == 6 || dst_port == 7 || dst_port == 8'\n" +
				"  m1: m0 || m0 || m0 || m0 || m0 || m0 || m0 || m0\n" +
				"  m2: m1 || m1 || m1 || m1 || m1 || m1 || m1 || m1\n" +
				"  m3: m2 || m2 || m2 || m2 || m2 || m2 || m2 || m2\n" +
				"  m4: m3 || m3 || m3 || m3 || m3 || m3 || m3 || m3\n" +
				"  m5: m4 || m4 || m4 || m4 || m4 || m4 || m4 || m4\n" +
				"rules:\n  - id: costly\n    title: T\n    kind: match\n    severity: 1\n    condition: '" + tt.cond + "'\n"
			start := time.Now()
			_, err := LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(y)}}, "rules")
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("loading took %s", took)
			}
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("err = %v, want a LoadError", err)
			}
			if !strings.Contains(err.Error(), `rules/r.yaml:14: rule "costly": condition:`) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v\nwant it to name rules/r.yaml:14, rule \"costly\", and mention %q", err, tt.want)
			}
		})
	}
}

// What a rule may reasonably do still loads, and runs: a small constant
// range, a port range test (compiled to two compares), one walk over the
// event's data with a constant list inside.
func TestConditionCostAllowsTheReasonable(t *testing.T) {
	conds := []string{
		`any(1..10, {# == dst_port})`,
		`dst_port in 1..65535`,
		`dst_port in -5..5 || dst_port not in 0..1023 || len(message) in 1..99999`,
		`any(split(message, " "), {# in ["root", "admin"]})`,
		`all(1..20, {any(1..20, {# + 1 > 0})})`,
		`let p = dst_port; p > 0 && count(keys(attrs), {len(#) > 3}) > 1`,
	}
	for _, c := range conds {
		set, err := LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(
			"rules:\n  - {id: ok, title: T, kind: match, severity: 1, condition: '" + c + "'}\n")}}, ".")
		if err != nil {
			t.Errorf("%s: %v", c, err)
			continue
		}
		var v vm.VM
		if _, _, err := set.Rules[0].Evaluate(&v, &event.Event{DstPort: 22, Message: "root logon", Attrs: map[string]string{"country": "x"}}, nil); err != nil {
			t.Errorf("%s: %v", c, err)
		}
	}
}

// `outpost rules lint DIR` is LoadDir: the reported condition in a file on
// disk is refused with its place.
func TestLoadDirRejectsCostlyCondition(t *testing.T) {
	dir := t.TempDir()
	y := "rules:\n  - id: loop\n    title: T\n    kind: match\n    severity: 1\n    condition: 'all(1..999999, # > 0)'\n"
	if err := os.WriteFile(filepath.Join(dir, "r.yaml"), []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadDir(dir)
	want := filepath.Join(dir, "r.yaml") + `:6: rule "loop": condition:`
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "999999 elements") {
		t.Errorf("err = %v, want %q ... 999999 elements", err, want)
	}
}

// FuzzConditionCost: on any parsable condition the estimate terminates
// without panicking, is positive, and a condition it accepts compiles to a
// tree no larger than the limit.
func FuzzConditionCost(f *testing.F) {
	for _, s := range []string{
		`all(1..999999, # > 0)`, `any(1..10, {# == dst_port})`, `dst_port in 1..65535`,
		`let a = 1..10; any(a, {any(a, {# == 1})})`, `any(split(message, " "), {any(split(message, " "), {# == "x"})})`,
		`reduce(1..100, #acc + #, 0) > 3`, `-9223372036854775807..9223372036854775807`, `repeat("x", 3)`,
		`sortBy(keys(attrs), #, "desc")[0] == "a"`, `filter(map(1..30, {# * 2}), # > 3)`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		tree, err := parser.Parse(src)
		if err != nil {
			return
		}
		cost, errs := conditionCost(tree.Node)
		if cost < 1 {
			t.Errorf("%q: cost %d", src, cost)
		}
		if len(errs) == 0 && countNodes(tree.Node) > maxConditionCost {
			t.Errorf("%q: accepted with %d nodes", src, countNodes(tree.Node))
		}
	})
}
