package engine

import (
	"fmt"
	"testing"
)

const threshold2in1m = `
rules:
  - {id: many, title: T, kind: threshold, severity: 5, condition: 'true', group_by: [host], threshold: 2, window: 1m}
`

// Two alerts ending at the same second: the second must not forget the
// events the first spent at that second, or a redelivery of one of them
// is counted again (and completes a window no uninterrupted run saw).
func TestSpentAtATiedSecondStaysSpent(t *testing.T) {
	r := loadRule(t, threshold2in1m)
	st := &State{}
	fired := 0
	for _, m := range []struct {
		sec int
		id  string
	}{{10, "x"}, {12, "y"}, {12, "z"}, {12, "w"}} {
		if a, _ := Apply(r, st, match(0, m.sec, m.id, ""), 0); a != nil {
			fired++
		}
	}
	if fired != 2 {
		t.Fatalf("fired %d alerts, want 2 ([x y] and [z w])", fired)
	}
	st = roundTrip(t, st)
	for _, m := range []struct {
		sec int
		id  string
	}{{10, "x"}, {12, "y"}, {12, "z"}, {12, "w"}} {
		if _, v := Apply(r, st, match(0, m.sec, m.id, ""), 0); v != Duplicate {
			t.Errorf("redelivered %s: %v, want Duplicate", m.id, v)
		}
	}
}

// A flood of events stamped with one second, alert after alert: the ids
// remembered as spent at that second stay bounded.
func TestSpentAtOneSecondIsBounded(t *testing.T) {
	r := loadRule(t, threshold2in1m)
	st := &State{}
	fired := 0
	for i := range 10 * maxSpentIDs {
		if a, _ := Apply(r, st, match(0, 12, fmt.Sprint("e", i), ""), 0); a != nil {
			fired++
		}
	}
	if fired != 5*maxSpentIDs {
		t.Fatalf("fired %d alerts, want %d", fired, 5*maxSpentIDs)
	}
	if n := len(st.SpentIDs); n > maxSpentIDs {
		t.Fatalf("%d ids remembered as spent at one second, want at most %d", n, maxSpentIDs)
	}
}
