package engine

import (
	"fmt"
	"testing"
	"testing/fstest"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

func loadRule(t *testing.T, yaml string) *rules.Rule {
	t.Helper()
	return loadSet(t, yaml).Rules[0]
}

// loadSet loads the rules of one YAML file.
func loadSet(t *testing.T, yaml string) *rules.Set {
	t.Helper()
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(yaml)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	return set
}

const threshold3in60s = `
rules:
  - {id: t3, title: T, kind: threshold, severity: 5, condition: "true", group_by: [src_ip], threshold: 3, window: 60s}
`

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

// feed applies matches at the given second offsets and returns the verdicts
// and the alerts.
func feed(r *rules.Rule, st *State, offsets ...int) ([]Verdict, []*event.Alert) {
	var vs []Verdict
	var as []*event.Alert
	for i, off := range offsets {
		m := &event.Match{RuleID: r.ID, Key: "src_ip=203.0.113.5", Time: t0.Add(time.Duration(off) * time.Second), EventID: fmt.Sprintf("e%d@%d", i, off)}
		a, v := Apply(r, st, m, 0)
		vs = append(vs, v)
		if a != nil {
			as = append(as, a)
		}
	}
	return vs, as
}

func TestThreshold(t *testing.T) {
	r := loadRule(t, threshold3in60s)
	tests := []struct {
		name    string
		offsets []int
		alerts  int
		count   int // count of the first alert
	}{
		{"three within the window", []int{0, 10, 20}, 1, 3},
		{"spread wider than the window", []int{0, 40, 80, 120}, 0, 0},
		{"sliding, not tumbling", []int{0, 50, 70, 100}, 1, 3}, // 50,70,100 span 50s
		{"out of order", []int{30, 0, 20}, 1, 3},
		{"exactly the window", []int{0, 30, 60}, 1, 3},
		{"six fire twice", []int{0, 1, 2, 3, 4, 5}, 2, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, as := feed(r, &State{}, tt.offsets...)
			if len(as) != tt.alerts {
				t.Fatalf("alerts = %d, want %d", len(as), tt.alerts)
			}
			if tt.alerts > 0 && as[0].Count != tt.count {
				t.Errorf("count = %d, want %d", as[0].Count, tt.count)
			}
		})
	}
}

func TestThresholdAlertFields(t *testing.T) {
	r := loadRule(t, threshold3in60s)
	_, as := feed(r, &State{}, 5, 15, 25)
	a := as[0]
	if a.RuleID != "t3" || a.Kind != "threshold" || a.Key != "src_ip=203.0.113.5" || a.Severity != 5 {
		t.Errorf("alert = %+v", a)
	}
	if !a.FirstSeen.Equal(t0.Add(5*time.Second)) || !a.LastSeen.Equal(t0.Add(25*time.Second)) {
		t.Errorf("first/last = %v/%v", a.FirstSeen, a.LastSeen)
	}
	if len(a.EventIDs) != 3 || len(a.ID) != 32 {
		t.Errorf("evidence %v, id %q", a.EventIDs, a.ID)
	}
}

func TestDeterministicIDs(t *testing.T) {
	r := loadRule(t, threshold3in60s)
	_, a1 := feed(r, &State{}, 0, 10, 20)
	_, a2 := feed(r, &State{}, 0, 10, 20)
	_, a3 := feed(r, &State{}, 1, 10, 20)
	if a1[0].ID != a2[0].ID {
		t.Error("same input gave different alert ids")
	}
	if a1[0].ID == a3[0].ID {
		t.Error("different windows gave the same alert id")
	}
}

// Two windows of one key that begin in the same second (timestamps of
// one-second resolution) are two alerts, and must have two ids: the live
// pipeline publishes the id as Nats-Msg-Id, and JetStream drops the second
// as a duplicate of the first. The differential test with 10^5 keys
// (cmd/outpost TestUnorderedSequenceOnAHotKey) found 3 of 760 unordered-
// sequence alerts lost so.
func TestWindowsBeginningInOneSecondHaveTwoIDs(t *testing.T) {
	r := loadRule(t, threshold3in60s)
	_, as := feed(r, &State{}, 0, 0, 0, 0, 0, 0)
	if len(as) != 2 {
		t.Fatalf("alerts = %d, want 2", len(as))
	}
	if as[0].ID == as[1].ID {
		t.Errorf("two windows beginning at the same time have one id %s: evidence %v and %v", as[0].ID, as[0].EventIDs, as[1].EventIDs)
	}
}

func TestRedeliveryIsIdempotent(t *testing.T) {
	r := loadRule(t, threshold3in60s)
	st := &State{}
	feed(r, st, 0, 10)
	// The same two events again (same ids): not counted twice.
	vs, as := feed(r, st, 0, 10)
	if len(as) != 0 || vs[0] != Duplicate || vs[1] != Duplicate {
		t.Fatalf("verdicts %v, alerts %d", vs, len(as))
	}
	_, as = feed(r, st, 0, 10, 20) // ids e0@0, e1@10 dup; e2@20 new
	if len(as) != 1 {
		t.Fatalf("alerts = %d, want 1", len(as))
	}
	// The whole batch redelivered after the alert: nothing new.
	vs, as = feed(r, st, 0, 10, 20)
	if len(as) != 0 || vs[2] != Duplicate {
		t.Errorf("after fire: verdicts %v, alerts %d", vs, len(as))
	}
}

func TestSuppress(t *testing.T) {
	r := loadRule(t, `
rules:
  - {id: s, title: T, kind: threshold, severity: 5, condition: "true", group_by: [src_ip], threshold: 2, window: 60s, suppress: 10m}
`)
	vs, as := feed(r, &State{}, 0, 1, 100, 101, 700, 701)
	if len(as) != 2 {
		t.Fatalf("alerts = %d, want 2 (one suppressed): %v", len(as), vs)
	}
	if vs[3] != Suppressed {
		t.Errorf("verdicts = %v", vs)
	}
}

func TestMatchKind(t *testing.T) {
	r := loadRule(t, `
rules:
  - {id: m, title: T, kind: match, severity: 5, condition: "true", group_by: [src_ip], suppress: 1h}
`)
	vs, as := feed(r, &State{}, 0, 60, 4000)
	if len(as) != 2 || vs[1] != Suppressed {
		t.Fatalf("verdicts %v, alerts %d", vs, len(as))
	}
	if as[0].Count != 1 || as[0].ID == as[1].ID {
		t.Errorf("alerts %+v %+v", as[0], as[1])
	}
}

func TestStateBounded(t *testing.T) {
	r := loadRule(t, `
rules:
  - {id: b, title: T, kind: threshold, severity: 5, condition: "true", threshold: 1000, window: 24h}
`)
	st := &State{}
	offs := make([]int, 5000)
	for i := range offs {
		offs[i] = i * 100 // 100 s apart: never 1000 in 24h
	}
	feed(r, st, offs...)
	if len(st.Times) > 4000 {
		t.Errorf("state holds %d entries, want at most 4×threshold", len(st.Times))
	}
}
