package rules

import (
	"encoding/json"
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// Test is a rule test case from a rule file's `tests:` section: events with
// their event times, fed through the real engine, and the alerts expected.
type Test struct {
	Name  string
	File  string
	Line  int
	Rules []string // the rules under test; default: every rule of the file
	// Events, in the order they are fed (which need not be time order:
	// late events are part of what a test can say).
	Events []*event.Event
	// Advance moves the watermark this far past the last event time after
	// the events, so absence rules whose deadline passed can fire.
	Advance time.Duration
	Expect  []Expected // empty: no alert expected
}

// Expected is one alert a test expects. Empty fields are not compared.
type Expected struct {
	Rule   string   `yaml:"rule"`
	Key    string   `yaml:"key"`
	Count  int      `yaml:"count"`
	Values []string `yaml:"values"`
}

var testKeys = []string{"name", "rules", "base", "events", "advance", "expect"}

// testBase is the default time that `at:` offsets count from.
var testBase = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func (l *loader) testSection(file string, n *yaml.Node) {
	if n.Kind != yaml.SequenceNode {
		l.errorf(file, n.Line, "", "tests: expected a list of test cases")
		return
	}
	var fileRules []string
	for _, r := range l.set.Rules {
		if r.File == file {
			fileRules = append(fileRules, r.ID)
		}
	}
	for _, tn := range n.Content {
		nodes, ok := l.mapping(file, tn, "", testKeys)
		if !ok {
			continue
		}
		t := &Test{Name: scalar(nodes["name"]), File: file, Line: tn.Line}
		bad := func(format string, args ...any) {
			l.errorf(file, tn.Line, "", "test %q: %s", t.Name, fmt.Sprintf(format, args...))
		}
		if t.Name == "" {
			bad("name: required")
		}
		t.Rules = stringList(nodes["rules"], bad)
		if len(t.Rules) == 0 {
			t.Rules = fileRules
		}
		for _, id := range t.Rules {
			if l.set.Rule(id) == nil {
				bad("rules: no enabled rule %q", id)
			}
		}
		base := testBase
		if b := scalar(nodes["base"]); b != "" {
			var err error
			if base, err = time.Parse(time.RFC3339, b); err != nil {
				bad("base: %q is not an RFC 3339 time", b)
			}
		}
		if a := scalar(nodes["advance"]); a != "" {
			d, err := time.ParseDuration(a)
			if err != nil {
				bad("advance: %q is not a duration", a)
			}
			t.Advance = d
		}
		if en := nodes["events"]; en == nil || en.Kind != yaml.SequenceNode {
			bad("events: required, a list of events")
		} else {
			for i, e := range en.Content {
				ev, err := testEvent(e, base, i)
				if err != nil {
					l.errorf(file, e.Line, "", "test %q: events[%d]: %v", t.Name, i, err)
					continue
				}
				t.Events = append(t.Events, ev)
			}
		}
		if xn := nodes["expect"]; xn != nil {
			if err := xn.Decode(&t.Expect); err != nil {
				bad("expect: a list of {rule, key, count, values}: %v", err)
			}
		}
		l.set.Tests = append(l.set.Tests, t)
	}
}

// testEvent reads one event: the Event's fields by their rule names, plus
// `at:` (an offset from the test's base) or `time:` (RFC 3339).
func testEvent(n *yaml.Node, base time.Time, i int) (*event.Event, error) {
	var m map[string]any
	if err := n.Decode(&m); err != nil {
		return nil, fmt.Errorf("expected a mapping of event fields")
	}
	at, hasAt := m["at"]
	delete(m, "at")
	if hasAt {
		d, err := time.ParseDuration(fmt.Sprint(at))
		if err != nil {
			return nil, fmt.Errorf("at: %q is not a duration offset such as 90s", at)
		}
		m["time"] = base.Add(d).Format(time.RFC3339Nano)
	} else if _, ok := m["time"]; !ok {
		m["time"] = base.Format(time.RFC3339Nano)
	}
	for k, v := range m {
		if !isEventField(k) && k != "id" {
			return nil, fmt.Errorf("unknown event field %q", k)
		}
		if event.IsSchemaField(k) {
			// An extended schema field is an attribute (event/schema.go).
			attrs, _ := m["attrs"].(map[string]any)
			if attrs == nil {
				attrs = map[string]any{}
				m["attrs"] = attrs
			}
			attrs[k] = v
			delete(m, k)
		}
	}
	data, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	ev := &event.Event{}
	if err := json.Unmarshal(data, ev); err != nil {
		return nil, err
	}
	if ev.ID == "" {
		ev.ID = fmt.Sprintf("e%d", i+1)
	}
	if ev.Source == "" {
		ev.Source = "test"
	}
	if ev.Received.IsZero() {
		ev.Received = ev.Time // `received:` given: an event stamped ahead of it
	}
	return ev, nil
}
