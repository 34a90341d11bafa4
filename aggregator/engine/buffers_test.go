package engine

import (
	"testing"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// A released batch of matches comes back empty, with its capacity, and
// keeps none of what it held.
func TestReleasedMatchesComeBackCleared(t *testing.T) {
	for MatchBuffer() != nil { // what other tests released
	}
	if ms := MatchBuffer(); ms != nil {
		t.Fatalf("nothing released, got a buffer of %d", cap(ms))
	}
	ms := make([]event.Match, 0, 100)
	for i := range 60 {
		ms = append(ms, event.Match{RuleID: "r", Key: "k", EventID: string(rune('a' + i%26)), Fields: map[string]string{"a": "b"}})
	}
	ReleaseMatches(ms)
	got := MatchBuffer()
	if len(got) != 0 || cap(got) != 100 {
		t.Fatalf("got len %d cap %d, want the released buffer empty (cap 100)", len(got), cap(got))
	}
	for i, m := range got[:cap(got)] {
		if m.RuleID != "" || m.EventID != "" || m.Fields != nil {
			t.Fatalf("match %d still holds %+v", i, m)
		}
	}
	ReleaseMatches(nil) // nothing to keep
	if ms := MatchBuffer(); ms != nil {
		t.Errorf("released nil, got a buffer of %d", cap(ms))
	}
}
