package engine

import (
	"fmt"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// A datagram claiming a key and stamped far ahead (2099) must not freeze
// the key's window: the windows place a match at Seen, its time capped at
// its reception. Per kind: one forged match, then genuine ones (and, for
// absence, a silence); the alert the genuine ones call for must still
// come, at the right time.
func TestFarFutureStampDoesNotFreezeAKey(t *testing.T) {
	future := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	forged := func(step int, sec int, value string) *event.Match {
		at := t0.Add(time.Duration(sec) * time.Second)
		return &event.Match{Key: "host=victim01", Time: future, Seen: at, EventID: "forged", Step: step, Value: value}
	}
	genuine := func(step int, sec int, id, value string) *event.Match {
		at := t0.Add(time.Duration(sec) * time.Second)
		return &event.Match{Key: "host=victim01", Time: at, Seen: at, EventID: id, Step: step, Value: value}
	}
	// applyAll applies ms in order and returns the alerts.
	applyAll := func(t *testing.T, rule string, ms ...*event.Match) (*State, []*event.Alert) {
		t.Helper()
		r := loadRule(t, rule)
		st := &State{}
		var alerts []*event.Alert
		for _, m := range ms {
			m.RuleID = r.ID
			if a, _ := Apply(r, st, m, 2*time.Minute); a != nil {
				alerts = append(alerts, a)
			}
			st = roundTrip(t, st)
		}
		return st, alerts
	}

	t.Run("absence", func(t *testing.T) {
		rule := `
rules:
  - {id: silent, title: T, kind: absence, severity: 5, condition: 'host != ""', group_by: [host], for: 30m}
`
		r := loadRule(t, rule)
		st, alerts := applyAll(t, rule, genuine(0, 0, "g0", ""), forged(0, 10, ""), genuine(0, 20, "g1", ""))
		for _, a := range alerts {
			t.Errorf("a silence alert before any silence, since %s", a.FirstSeen.Format(time.RFC3339))
		}
		// The silence counts from the last genuine event, at 20s: its
		// deadline is 30m20s, whatever the forged one claims.
		deadline := t0.Add(30*time.Minute + 20*time.Second).UnixNano()
		if a, _ := Expire(r, st.Clone(), "host=victim01", deadline); a != nil {
			t.Fatalf("fired at the deadline, before it passed: %+v", a)
		}
		a, _ := Expire(r, st, "host=victim01", deadline+int64(time.Second))
		if a == nil {
			t.Fatalf("no silence alert a second after the deadline; state since %s, deadline %s",
				time.Unix(0, st.Since).UTC().Format(time.RFC3339), time.Unix(0, st.Deadline).UTC().Format(time.RFC3339))
		}
		if want := t0.Add(20 * time.Second); !a.FirstSeen.Equal(want) || a.EventIDs[0] != "g1" {
			t.Errorf("silence since %s (event %v), want %s (g1)", a.FirstSeen.Format(time.RFC3339), a.EventIDs, want.Format(time.RFC3339))
		}
	})

	t.Run("absence with expect", func(t *testing.T) {
		rule := `
rules:
  - {id: answered, title: T, kind: absence, severity: 5, condition: 'action == "start"', expect: 'action == "done"', group_by: [host], for: 5m}
`
		r := loadRule(t, rule)
		// A forged trigger, then the genuine trigger and no expected event:
		// the silence fires 5m after the forged one's reception.
		st, _ := applyAll(t, rule, forged(0, 0, ""), genuine(0, 1, "g0", ""))
		if a, _ := Expire(r, st, "host=victim01", t0.Add(5*time.Minute+2*time.Second).UnixNano()); a == nil {
			t.Errorf("no alert when the expected event never came; deadline %s",
				time.Unix(0, st.Deadline).UTC().Format(time.RFC3339))
		}
		// The expected event after a forged trigger disarms it, as after
		// a genuine one.
		st, _ = applyAll(t, rule, forged(0, 0, ""), genuine(1, 60, "g1", ""))
		if st.Deadline != 0 {
			t.Errorf("the expected event did not disarm the key (deadline %s)", time.Unix(0, st.Deadline).UTC().Format(time.RFC3339))
		}
	})

	var ms []*event.Match
	for i := range 6 {
		ms = append(ms, genuine(0, 10+i, fmt.Sprintf("g%d", i), fmt.Sprintf("v%d", i)))
	}
	for _, tc := range []struct {
		name, rule string
		ms         []*event.Match
	}{
		{"threshold", `
rules:
  - {id: many, title: T, kind: threshold, severity: 5, condition: 'host != ""', group_by: [host], threshold: 3, window: 1m}
`, ms[:3]},
		{"distinct", `
rules:
  - {id: spread, title: T, kind: distinct, severity: 5, condition: 'host != ""', group_by: [host], field: dst_port, threshold: 3, window: 1m}
`, ms[:3]},
		{"sequence", `
rules:
  - id: seq
    title: T
    kind: sequence
    severity: 5
    window: 1m
    steps:
      - {name: a, condition: 'action == "a"', by: [host]}
      - {name: b, condition: 'action == "b"', by: [host]}
`, []*event.Match{genuine(0, 10, "a", ""), genuine(1, 11, "b", "")}},
		{"new_value", `
rules:
  - {id: novel, title: T, kind: new_value, severity: 5, condition: 'host != ""', group_by: [host], field: user, learning: 1h}
`, []*event.Match{genuine(0, 10, "old", "alice"), genuine(0, 3600+20, "new", "mallory")}},
		{"match with suppress", `
rules:
  - {id: each, title: T, kind: match, severity: 5, condition: 'host != ""', group_by: [host], suppress: 10m}
`, []*event.Match{genuine(0, 11*60, "g", "")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, want := applyAll(t, tc.rule, tc.ms...)
			if len(want) == 0 {
				t.Fatal("the genuine matches alone raise no alert: a bad case")
			}
			st, got := applyAll(t, tc.rule, append([]*event.Match{forged(0, 0, "v-forged")}, tc.ms...)...)
			fired := 0
			for _, a := range got {
				if a.EventIDs[len(a.EventIDs)-1] != "forged" {
					fired++
				}
				if a.LastSeen.After(t0.Add(2 * time.Hour)) {
					t.Errorf("alert placed at %s, after every reception", a.LastSeen.Format(time.RFC3339))
				}
			}
			if fired == 0 {
				t.Errorf("after one match stamped 2099: no alert from the genuine matches (state times %v)", st.Times)
			}
		})
	}
}
