package engine

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/fstest"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

// Coalescing an absence rule's matches must leave the windows exactly where
// every match would: the same alerts (ids included) and the same state.
// Random batches of matches for a few keys — mostly in time order, with
// gaps longer than `for`, ties, and some out of order — go to the windows'
// own Apply once as they are and once through a Coalescer.
func TestCoalescedAbsenceMatchesChangeNothing(t *testing.T) {
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(`
rules:
  - {id: silent, title: T, kind: absence, severity: 5, condition: 'host != ""', group_by: [host], for: 30m}
`)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	r := set.Rules[0]
	base := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(1, 2))
	totalIn, totalOut := 0, 0
	for trial := range 300 {
		var matches []event.Match
		now := map[string]time.Duration{}
		for i := range 5 + rng.IntN(200) {
			host := fmt.Sprintf("h%d", rng.IntN(3))
			step := time.Duration(rng.IntN(90)) * time.Second
			switch rng.IntN(20) {
			case 0:
				step = 31*time.Minute + time.Duration(rng.IntN(120))*time.Minute // a silence
			case 1:
				step = -time.Duration(rng.IntN(600)) * time.Second // out of order
			case 2:
				step = 0 // a tie
			}
			now[host] += step
			at := base.Add(now[host])
			m := event.Match{RuleID: r.ID, Key: "host=" + host, Time: at, Seen: at, EventID: fmt.Sprintf("e%d-%d", trial, i)}
			if rng.IntN(15) == 0 {
				// Stamped ahead of its reception (up to 2099): placed
				// at its reception, Seen.
				m.Time = at.Add(time.Second + time.Duration(rng.Int64N(int64(73*365*24*time.Hour))))
				if rng.IntN(2) == 0 {
					m.Time = at.Add(time.Duration(1+rng.IntN(600)) * time.Second)
				}
			}
			matches = append(matches, m)
		}
		// Cut into batches of events, as the filter sees them.
		var coalesced []event.Match
		emit := func(m *event.Match) error { coalesced = append(coalesced, *m); return nil }
		var c Coalescer
		for start := 0; start < len(matches); {
			end := min(len(matches), start+1+rng.IntN(60))
			for i := range matches[start:end] {
				if err := c.Add(r, &matches[start+i], emit); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Flush(emit); err != nil {
				t.Fatal(err)
			}
			start = end
		}
		totalIn, totalOut = totalIn+len(matches), totalOut+len(coalesced)
		wantAlerts, wantStates := applyAll(r, matches)
		gotAlerts, gotStates := applyAll(r, coalesced)
		if !slices.Equal(gotAlerts, wantAlerts) {
			t.Fatalf("trial %d: alerts %v, want %v", trial, gotAlerts, wantAlerts)
		}
		for k, want := range wantStates {
			if got := gotStates[k]; got != want {
				t.Fatalf("trial %d, key %s: state %+v, want %+v", trial, k, got, want)
			}
		}
	}
	if totalOut*4 > totalIn*3 {
		t.Errorf("%d matches became %d: coalescing hardly coalesced", totalIn, totalOut)
	}
	t.Logf("%d matches published as %d", totalIn, totalOut)

	// One host sending every second: a batch of 1,000 events publishes the
	// first and the last.
	var c Coalescer
	var ids []string
	emit := func(m *event.Match) error { ids = append(ids, m.EventID); return nil }
	for i := range 1000 {
		at := base.Add(time.Duration(i) * time.Second)
		m := event.Match{RuleID: r.ID, Key: "host=a", Time: at, Seen: at, EventID: fmt.Sprint(i)}
		if err := c.Add(r, &m, emit); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(emit); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, []string{"0", "999"}) {
		t.Errorf("published %v, want [0 999]", ids)
	}
}

type absenceState struct {
	since, deadline, lastAlert int64
	sinceID                    string
}

// applyAll applies ms in order per key, as the windows would, and returns
// the alert ids and the final states.
func applyAll(r *rules.Rule, ms []event.Match) ([]string, map[string]absenceState) {
	states := map[string]*State{}
	var alerts []string
	for i := range ms {
		m := &ms[i]
		st := states[m.Key]
		if st == nil {
			st = &State{}
			states[m.Key] = st
		}
		if a, _ := Apply(r, st, m, 2*time.Minute); a != nil {
			alerts = append(alerts, a.ID)
		}
	}
	out := map[string]absenceState{}
	for k, st := range states {
		out[k] = absenceState{since: st.Since, deadline: st.Deadline, lastAlert: st.LastAlert, sinceID: st.SinceID}
	}
	return alerts, out
}
