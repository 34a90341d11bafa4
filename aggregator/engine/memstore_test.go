package engine

import (
	"hash/maphash"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

// States are found by the hash of the key and told apart by the key
// itself, short (inline) or long, when hashes collide.
func TestMemStoreKeys(t *testing.T) {
	r := loadRule(t, threshold3in60s)
	s := NewMemStore()
	s.collide = true // every key hashes alike
	long := "src_ip=" + strings.Repeat("a", memInlineKey)
	keys := []string{"src_ip=192.0.2.1", "src_ip=192.0.2.2", long, long + "b", ""}
	states := map[*State]string{}
	for _, k := range keys {
		st, _ := s.State(r, k, true)
		if other, ok := states[st]; ok {
			t.Fatalf("%q and %q share a state", k, other)
		}
		states[st] = k
	}
	for st, k := range states {
		if got, _ := s.State(r, k, true); got != st {
			t.Errorf("%q: a second lookup found another state", k)
		}
	}
	if n := len(s.rules[r]); n != 1 {
		t.Errorf("%d hash buckets, want 1", n)
	}
	if s.Keys() != len(keys) {
		t.Errorf("Keys() = %d, want %d", s.Keys(), len(keys))
	}
}

// A deadline that moves later fires once, at its last time; one disarmed
// and armed again fires once; Due lists only what the states still hold.
func TestMemStoreDeadlines(t *testing.T) {
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(`
rules:
  - {id: silent, title: T, kind: absence, severity: 5, condition: 'host != ""', group_by: [host], for: 10m}
  - {id: backup, title: T, kind: absence, severity: 5, group_by: [host], for: 10m, condition: 'message == "start"', expect: 'message == "done"'}
`)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	w := NewWindows(Lateness{})
	s := NewMemStore()
	apply := func(rule, host, id string, min int) {
		at := t0.Add(time.Duration(min) * time.Minute)
		m := &event.Match{RuleID: rule, Key: "host=" + host, Time: at, Seen: at, EventID: id}
		if rule == "backup" && strings.HasPrefix(id, "done") {
			m.Step = 1
		}
		if _, err := w.Apply(s, set.Rule(rule), m); err != nil {
			t.Fatal(err)
		}
	}
	fire := func(atMin int) []string {
		var got []string
		_, err := w.FireDue(s, set.Rule, t0.Add(time.Duration(atMin)*time.Minute).UnixNano(), 0, func(r *rules.Rule, d Deadline, a *event.Alert, v Verdict) {
			got = append(got, r.ID+"/"+d.Key)
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	apply("silent", "a", "a1", 0)     // deadline 10
	apply("silent", "a", "a2", 5)     // moves to 15
	apply("backup", "b", "start1", 0) // deadline 10
	apply("backup", "b", "done1", 3)  // disarmed
	apply("backup", "b", "start2", 4) // armed again, 14
	if got := fire(11); len(got) != 0 {
		t.Errorf("at 11m fired %v, want nothing (15m and 14m are ahead)", got)
	}
	if got := fire(16); len(got) != 2 {
		t.Errorf("at 16m fired %v, want silent/host=a and backup/host=b once each", got)
	}
	if got := fire(60); len(got) != 0 {
		t.Errorf("at 60m fired %v again", got)
	}
	if s.NextDeadline() != 0 {
		t.Errorf("a deadline still queued: %d", s.NextDeadline())
	}
}

// A key hinted with its hash under the store's seed finds the same state
// as the key unhinted; a hint for another key is ignored; a hint is used
// once (a wrong one — a driver's bug — misplaces one lookup, no more).
func TestMemStoreHint(t *testing.T) {
	r := loadRule(t, threshold3in60s)
	seed := maphash.MakeSeed()
	s := NewMemStoreSeeded(seed)
	const key = "src_ip=192.0.2.1"
	a, _ := s.State(r, key, true)
	s.Hint(key, maphash.String(seed, key))
	if got, _ := s.State(r, key, true); got != a {
		t.Error("the hinted key found another state")
	}
	s.Hint("src_ip=192.0.2.9", 42)
	if got, _ := s.State(r, key, true); got != a {
		t.Error("a hint for another key was taken")
	}
	s.Hint(key, 42)
	if got, _ := s.State(r, key, true); got == a {
		t.Error("a wrong hint was not taken: the test proves nothing")
	}
	if got, _ := s.State(r, key, true); got != a {
		t.Error("a hint was taken twice")
	}
}
