package rules

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"testing/fstest"

	"github.com/expr-lang/expr/vm"

	"github.com/outpost-siem/outpost/aggregator/event"
)

func TestGuardsOf(t *testing.T) {
	set, err := LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(`
macros:
  ssh: app == "sshd" && action == "logon"
rules:
  - {id: a, title: T, kind: match, severity: 1, condition: 'ssh && outcome == "failure" && src_ip != ""'}
  - {id: b, title: T, kind: match, severity: 1, condition: '"syslog" == source and (app == "x" || app == "y")'}
  - {id: c, title: T, kind: match, severity: 1, condition: 'source == "a" || source == "b"'}
  - {id: d, title: T, kind: match, severity: 1, condition: 'severity == 3 && attrs["k"] == "v"'}
`)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"a": {"sshd", "logon", "failure"}, "b": {"syslog"}, "c": nil, "d": nil}
	for _, r := range set.Rules {
		var got []string
		for _, g := range r.Steps[0].guards {
			got = append(got, g.want)
		}
		if len(got) != len(want[r.ID]) {
			t.Errorf("rule %s: guards %v, want %v", r.ID, got, want[r.ID])
			continue
		}
		for i := range got {
			if got[i] != want[r.ID][i] {
				t.Errorf("rule %s: guards %v, want %v", r.ID, got, want[r.ID])
			}
		}
	}
}

// A guard only ever rules out what the condition would reject: over every
// event of the shipped pack's tests, and every step of every rule, an event
// that fails a step's guards never satisfies its condition.
func TestGuardsNeverChangeAVerdict(t *testing.T) {
	set, err := Pack()
	if err != nil {
		t.Fatal(err)
	}
	checkGuards(t, set)
}

// The same over the Sigma conformance rules and their tests' events, whose
// guards include literals of like() patterns and regular expressions.
func TestLiteralGuardsNeverChangeAVerdict(t *testing.T) {
	set, err := LoadDir("sigma/testdata/conformance")
	if err != nil {
		t.Fatal(err)
	}
	checkGuards(t, set)
}

// FuzzLiteralGuards: for any pattern, regular expression and message, a
// condition's literal guard never rules out a message the condition
// accepts.
func FuzzLiteralGuards(f *testing.F) {
	f.Add("*Failed password*", "(?i)kex.*closed", "Failed password for root", false)
	f.Add("abc?def*", "^rx[0-9]+(foo|bar)baz$", "ABCxDEF rx12barbaz", true)
	f.Add(`a\*bcd`, "(?i)(ab|cd)efg", "a*bcd abefg", false)
	f.Add("*", "(?i)kelvin", "\u212aelvin", false)       // (?i)k matches the Kelvin sign
	f.Add("*\u2013Flag*", "x", "ps \u2013FLAG x", false) // a non-ASCII pattern: both sides lowercased
	f.Add("*\u00c4rger*", "x", "\u00e4RGER x", false)
	f.Fuzz(func(t *testing.T, pattern, re, msg string, cased bool) {
		if len(pattern) > 64 || len(re) > 64 || len(msg) > 256 {
			return
		}
		if _, err := regexp.Compile(re); err != nil {
			return
		}
		fn := "like"
		if cased {
			fn = "like_cased"
		}
		lp, rq := strconv.Quote(pattern), strconv.Quote(re)
		for _, cond := range []string{
			fmt.Sprintf(`%s(message, %s)`, fn, lp),
			fmt.Sprintf(`message matches %s`, rq),
			fmt.Sprintf(`attrs["x"] matches %s or %s(message, %s)`, rq, fn, lp),
			fmt.Sprintf(`%s(attrs["x"], %s) and message matches %s`, fn, lp, rq),
		} {
			set, err := LoadFS(fstest.MapFS{"r.yaml": {Data: []byte("rules:\n  - {id: a, title: T, kind: match, severity: 1, condition: " + strconv.Quote(cond) + "}\n")}}, ".")
			if err != nil {
				continue
			}
			st := set.Rules[0].Steps[0]
			for _, ev := range []*event.Event{{Message: msg}, {Attrs: map[string]string{"x": msg}}, {Message: msg, Attrs: map[string]string{"x": msg}}} {
				var v vm.VM
				out, err := v.Run(st.program, ev)
				if err == nil && out.(bool) && !passes(st.guards, ev) {
					t.Fatalf("guards rule out %+v, which %s accepts", ev, cond)
				}
			}
		}
	})
}

// checkGuards runs every step of set's rules on every event of its tests:
// an event a step's guards rule out must not satisfy its condition.
func checkGuards(t *testing.T, set *Set) {
	t.Helper()
	var v vm.VM
	checked, ruledOut := 0, 0
	for _, tc := range set.Tests {
		for _, ev := range tc.Events {
			for _, r := range set.Rules {
				for _, st := range r.Steps {
					out, err := v.Run(st.program, ev)
					if err != nil {
						continue
					}
					checked++
					if !passes(st.guards, ev) {
						ruledOut++
						if out.(bool) {
							t.Errorf("rule %s step %q: guards rule out an event the condition accepts: %+v", r.ID, st.Name, ev)
						}
					}
				}
			}
		}
	}
	if ruledOut == 0 || checked == 0 {
		t.Fatalf("checked %d, ruled out %d: the test tests nothing", checked, ruledOut)
	}
	t.Logf("%d (event, step) pairs, %d ruled out by guards", checked, ruledOut)
}
