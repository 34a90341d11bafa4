package pipeline

import (
	"os"
	"regexp"
	"slices"
	"testing"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

// TestDocsListThePack: docs/rules.md's table of the shipped pack names
// every rule of the pack, and nothing else.
func TestDocsListThePack(t *testing.T) {
	doc, err := os.ReadFile("../../docs/rules.md")
	if err != nil {
		t.Fatal(err)
	}
	table := regexp.MustCompile("(?s)## The shipped pack\n(.*?)\n\n").FindSubmatch(doc)
	if table == nil {
		t.Fatal("docs/rules.md has no table under \"## The shipped pack\"")
	}
	var listed []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z0-9._-]+)` \\|").FindAllSubmatch(table[1], -1) {
		listed = append(listed, string(m[1]))
	}
	set, err := rules.Pack()
	if err != nil {
		t.Fatal(err)
	}
	var pack []string
	for _, r := range set.Rules {
		pack = append(pack, r.ID)
	}
	slices.Sort(listed)
	slices.Sort(pack)
	if !slices.Equal(listed, pack) {
		t.Errorf("docs/rules.md lists %d rules %v; the pack has %d: %v", len(listed), listed, len(pack), pack)
	}
}

// TestDocsListTheSchema: docs/fields.md's extended schema table names
// every field of event.Schema, and nothing else.
func TestDocsListTheSchema(t *testing.T) {
	doc, err := os.ReadFile("../../docs/fields.md")
	if err != nil {
		t.Fatal(err)
	}
	table := regexp.MustCompile("(?s)## The extended schema\n(.*?)\n## ").FindSubmatch(doc)
	if table == nil {
		t.Fatal("docs/fields.md has no section \"## The extended schema\"")
	}
	var listed []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+)`(?:, `([a-z_]+)`)? \\|").FindAllSubmatch(table[1], -1) {
		for _, g := range m[1:] {
			if len(g) > 0 {
				listed = append(listed, string(g))
			}
		}
	}
	schema := slices.Clone(event.Schema)
	slices.Sort(listed)
	slices.Sort(schema)
	if !slices.Equal(listed, schema) {
		t.Errorf("docs/fields.md lists %v; event.Schema is %v", listed, schema)
	}
}
