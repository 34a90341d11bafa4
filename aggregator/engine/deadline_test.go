package engine

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// When a driver checks deadlines must not change what an absence rule
// raises: the windows stage checks every second of wall time, rules test
// and replay after every event. For matches in time order, with deadline
// checks at random points (never with a watermark past the next match),
// the alerts (ids included) and the final state are those of no check
// at all until the end. Without expect and with it; a trigger after a
// passed deadline reports it and arms anew.
func TestAbsenceDeadlineChecksChangeNothing(t *testing.T) {
	for _, rule := range []string{`
rules:
  - {id: silent, title: T, kind: absence, severity: 5, condition: 'host != ""', group_by: [host], for: 10m}
`, `
rules:
  - {id: backup, title: T, kind: absence, severity: 5, group_by: [host], for: 10m, condition: 'action == "start"', expect: 'action == "done"'}
`} {
		r := loadRule(t, rule)
		rng := rand.New(rand.NewPCG(7, 11))
		for trial := range 300 {
			var ms []*event.Match
			at := t0
			for i := range 2 + rng.IntN(40) {
				at = at.Add(time.Duration(rng.IntN(16*60)) * time.Second)
				ms = append(ms, &event.Match{RuleID: r.ID, Key: "host=a", Time: at, Seen: at, EventID: fmt.Sprint(i), Step: rng.IntN(len(r.Steps))})
			}
			end := at.Add(time.Hour).UnixNano()
			run := func(check bool) ([]string, State) {
				st := &State{}
				var ids []string
				for i, m := range ms {
					if a, _ := Apply(r, st, m, 0); a != nil {
						ids = append(ids, a.ID)
					}
					if check && i+1 < len(ms) && rng.IntN(2) == 0 {
						// A watermark anywhere up to the next match.
						wm := m.Time.UnixNano() + rng.Int64N(ms[i+1].Time.UnixNano()-m.Time.UnixNano()+1)
						if a, _ := Expire(r, st, m.Key, wm); a != nil {
							ids = append(ids, a.ID)
						}
					}
				}
				if a, _ := Expire(r, st, "host=a", end); a != nil {
					ids = append(ids, a.ID)
				}
				return ids, *st
			}
			want, wantSt := run(false)
			got, gotSt := run(true)
			if !slices.Equal(got, want) || gotSt.Deadline != wantSt.Deadline || gotSt.Since != wantSt.Since || gotSt.LastAlert != wantSt.LastAlert {
				t.Fatalf("%s trial %d: with deadline checks %v (state %+v), without %v (state %+v)", r.ID, trial, got, gotSt, want, wantSt)
			}
		}
	}
}
