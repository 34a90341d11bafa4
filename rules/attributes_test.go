package rules

import (
	"maps"
	"slices"
	"testing"
	"testing/fstest"
)

// Attributes lists every attribute key a rule reads, wherever it names
// it, and says so when a condition reads the attributes in a way that
// names no key.
func TestAttributes(t *testing.T) {
	for _, tc := range []struct {
		name, rules string
		want        []string
		all         bool
	}{
		{"condition, carried field, group-by, counted field",
			`rules:
  - {id: a, title: T, kind: match, severity: 1, condition: 'attrs["cef.cs3"] == "x" && attrs["kv.devname"] != ""', fields: [attrs.win.Image]}
  - {id: b, title: T, kind: distinct, severity: 1, condition: 'source == "syslog"', group_by: [attrs.leef.cat], field: attrs.json.user, threshold: 3, window: 1m}
  - {id: c, title: T, kind: match, severity: 1, condition: 'process != ""'}
`, []string{"cef.cs3", "json.user", "kv.devname", "leef.cat", "process", "win.Image"}, false},
		{"a computed key", `rules:
  - {id: a, title: T, kind: match, severity: 1, condition: 'attrs["cef." + app] == "x"'}
`, nil, true},
		{"the whole map", `rules:
  - {id: a, title: T, kind: match, severity: 1, condition: '"cef.cs1" in attrs'}
`, nil, true},
		// $env is the whole environment: $env.attrs is attrs (found by
		// review: these keys were missed, and attributes: read dropped
		// what the rule matched on).
		{"through $env", `rules:
  - {id: a, title: T, kind: match, severity: 1, condition: '$env.attrs["cef.cs3"] == "x" && $env["attrs"].cs4 == "y" && $env.user != ""'}
`, []string{"cef.cs3", "cs4"}, false},
		{"the whole $env", `rules:
  - {id: a, title: T, kind: match, severity: 1, condition: 'get($env, "attrs")["cef.cs3"] == "x"'}
`, nil, true},
		{"$env's attributes whole", `rules:
  - {id: a, title: T, kind: match, severity: 1, condition: 'len($env.attrs) > 3'}
`, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set, err := LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(tc.rules)}}, ".")
			if err != nil {
				t.Fatal(err)
			}
			keys, all := set.Attributes()
			if all != tc.all {
				t.Errorf("all = %v, want %v", all, tc.all)
			}
			if got := slices.Sorted(maps.Keys(keys)); !tc.all && !slices.Equal(got, tc.want) {
				t.Errorf("keys = %v, want %v", got, tc.want)
			}
		})
	}
}
