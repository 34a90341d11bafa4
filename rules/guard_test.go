package rules

import (
	"testing"
	"testing/fstest"

	"github.com/expr-lang/expr/vm"
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
