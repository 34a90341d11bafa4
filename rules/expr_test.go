package rules

import (
	"strings"
	"testing"
	"testing/fstest"

	"github.com/expr-lang/expr/vm"

	"github.com/outpost-siem/outpost/aggregator/event"
)

func TestHelpersListsMacros(t *testing.T) {
	set, err := LoadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		rule string
		ev   event.Event
		want bool
	}{
		{"admin-fail", event.Event{Outcome: "failure", User: "alice@contoso.example"}, true}, // lists ignore case
		{"admin-fail", event.Event{Outcome: "success", User: "alice@contoso.example"}, false},
		{"admin-fail", event.Event{Outcome: "failure", User: "mallory"}, false},
		{"ti", event.Event{SrcIP: "192.0.2.44"}, true}, // CIDR entry of a CSV column
		{"ti", event.Event{SrcIP: "198.51.100.7"}, true},
		{"ti", event.Event{SrcIP: "::ffff:198.51.100.7"}, true}, // IPv4-mapped
		{"ti", event.Event{SrcIP: "198.51.100.8"}, false},
		{"ti", event.Event{SrcIP: "ip"}, false}, // the CSV header is skipped
		{"inline", event.Event{SrcIP: "10.9.3.4"}, true},
		{"inline", event.Event{User: "X"}, true},
		{"inline", event.Event{SrcIP: "10.8.3.4"}, false},
		{"private", event.Event{SrcIP: "10.1.2.3"}, true},
		{"private", event.Event{SrcIP: "100.64.1.1"}, true},
		{"private", event.Event{SrcIP: "fd00::1"}, true},
		{"private", event.Event{SrcIP: "203.0.113.5"}, false},
		{"private", event.Event{SrcIP: "not an ip"}, false},
		{"public", event.Event{SrcIP: "203.0.113.5"}, true},
		{"public", event.Event{SrcIP: "192.168.1.1"}, false},
		{"public", event.Event{SrcIP: "127.0.0.1"}, false},
		{"public", event.Event{SrcIP: ""}, false},
		{"cidr", event.Event{SrcIP: "10.200.0.1"}, true},
		{"cidr", event.Event{SrcIP: "11.0.0.1"}, false},
		{"iequals", event.Event{User: "Administrator"}, true},
		{"iequals", event.Event{User: "admin"}, false},
		{"regex", event.Event{Message: "Failed publickey for git from 192.0.2.1"}, true},
		{"regex", event.Event{Message: "Accepted publickey for git"}, false},
	}
	var v vm.VM
	for _, tt := range tests {
		t.Run(tt.rule+"/"+tt.ev.SrcIP+tt.ev.User+tt.ev.Message, func(t *testing.T) {
			hits, _, err := set.Rule(tt.rule).Evaluate(&v, &tt.ev, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(hits) == 1; got != tt.want {
				t.Errorf("matched = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestListAndMacroErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown list", `
rules:
  - {id: r, title: T, kind: match, severity: 1, condition: 'in_list("nope", user)'}
`, `in_list: no list named "nope"`},
		{"list name not a literal", `
rules:
  - {id: r, title: T, kind: match, severity: 1, condition: 'in_list(user, user)'}
`, "the list name must be a string literal"},
		{"missing list file", `
lists:
  gone: {file: lists/gone.txt}
rules: []
`, "lists.gone: reading list file"},
		{"macro shadows a field", `
macros:
  user: 'true'
rules: []
`, `"user" is an event field`},
		{"macro cycle", `
macros:
  a: b
  b: a
rules:
  - {id: r, title: T, kind: match, severity: 1, condition: a}
`, "nest too deep"},
		{"empty expect", `
rules:
  - {id: r, title: T, kind: absence, severity: 1, condition: 'true', for: 5m, expect: ""}
`, "expect: expected an expression"},
		{"bad cidr at run time is an eval error, a bad list entry is skipped", `
lists:
  l: ["not/a/prefix"]
rules: []
`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(tt.yaml)}}, ".")
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestFingerprintFollowsTheDefinition(t *testing.T) {
	load := func(y string) *Rule {
		t.Helper()
		set, err := LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(y)}}, ".")
		if err != nil {
			t.Fatal(err)
		}
		return set.Rules[0]
	}
	a := load("rules:\n  - {id: r, title: T, kind: threshold, severity: 1, condition: 'true', threshold: 3, window: 1m}\n")
	b := load("rules:\n  - {id: r, title: T, kind: threshold, severity: 1, condition: 'true', threshold: 3, window: 1m}\n")
	c := load("rules:\n  - {id: r, title: T, kind: threshold, severity: 1, condition: 'true', threshold: 4, window: 1m}\n")
	if a.Fingerprint != b.Fingerprint || a.Fingerprint == c.Fingerprint {
		t.Errorf("fingerprints %s %s %s", a.Fingerprint, b.Fingerprint, c.Fingerprint)
	}
}

// List files are found whatever form the rules dir is given in.
func TestListFilesRelativeToTheDir(t *testing.T) {
	for _, dir := range []string{"testdata", "./testdata", "testdata/"} {
		if _, err := LoadDir(dir); err != nil {
			t.Errorf("LoadDir(%q): %v", dir, err)
		}
	}
}

func TestCEFMapping(t *testing.T) {
	set, err := LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(`
rules:
  - id: del
    title: T
    kind: match
    severity: 5
    condition: "true"
    fields: [user]
    cef: {act: action, duser: attrs.target, cn1: attrs.count}
`)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	r := set.Rules[0]
	carried := r.CarriedFields(&event.Event{User: "dana", Action: "delete", Attrs: map[string]string{"target": "eve", "count": "7"}})
	fields, cefMap := r.AlertFields(carried)
	if len(fields) != 1 || fields["user"] != "dana" {
		t.Errorf("fields %v", fields)
	}
	if cefMap["act"] != "delete" || cefMap["duser"] != "eve" || cefMap["cn1"] != "7" || cefMap["cn1Label"] != "attrs.count" {
		t.Errorf("cef %v", cefMap)
	}
	_, err = LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(`
rules:
  - {id: bad, title: T, kind: match, severity: 5, condition: "true", cef: {externalId: user, act: nosuch}}
`)}}, ".")
	for _, want := range []string{`cef: "externalId" is not a CEF key a rule may map`, `cef: act: unknown field "nosuch"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err %v lacks %q", err, want)
		}
	}
}
