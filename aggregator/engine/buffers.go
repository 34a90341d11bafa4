package engine

import "github.com/outpost-siem/outpost/aggregator/event"

// matchBuffers recycles the slices of matches the rule filter hands the
// windows in process (windows.fused): a batch of events gives tens of
// thousands of matches, and growing a new slice for each batch was a fifth
// of the pipeline's CPU (docs/benchmarks.md, sixteenth session). Three are
// in use at a time (the filter's, one queued, one being applied).
var matchBuffers = make(chan []event.Match, 3)

// MatchBuffer returns an empty slice of matches: one released before if
// there is one, else nil.
func MatchBuffer() []event.Match {
	select {
	case ms := <-matchBuffers:
		return ms
	default:
		return nil
	}
}

// ReleaseMatches hands ms back for a later MatchBuffer. The caller must
// hold no pointer into it: its matches are cleared (they keep nothing
// alive) and will be overwritten.
func ReleaseMatches(ms []event.Match) {
	if cap(ms) == 0 {
		return
	}
	clear(ms[:cap(ms)])
	select {
	case matchBuffers <- ms[:0]:
	default:
	}
}
