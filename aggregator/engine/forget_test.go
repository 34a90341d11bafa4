package engine

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/nats-io/nuid"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// failThenOK is three failures, then a success, within an hour.
const failThenOK = `
rules:
  - id: seq
    title: T
    kind: sequence
    severity: 9
    window: 1h
    steps:
      - {name: fail, condition: 'outcome == "failure"', by: [src_ip], count: 3}
      - {name: ok, condition: 'outcome == "success"', by: [src_ip]}
`

// A key that fails and fails keeps every failure's time, but only the
// newest 2 × count failures' ids; a success in order names every event of
// its chain.
func TestSequenceForgetsOldIDs(t *testing.T) {
	r := loadRule(t, failThenOK)
	st := &State{}
	gen := nuid.New()
	var ids []string
	for range 50 {
		// A key's events are far apart in the process's id sequence: the
		// other keys' come between.
		for range 3000 {
			gen.Next()
		}
		ids = append(ids, gen.Next())
	}
	for i := range 50 {
		if a, _ := Apply(r, st, match(0, 10*i, ids[i], ""), 0); a != nil {
			t.Fatal("fired before the last step")
		}
	}
	if len(st.Times) != 50 {
		t.Fatalf("the state holds %d failures, want 50", len(st.Times))
	}
	var named []string
	for _, id := range st.IDs {
		if id != "" {
			named = append(named, id)
		}
	}
	if want := ids[44:]; !slices.Equal(named, want) {
		t.Errorf("ids kept %v, want %v", named, want)
	}
	whole := st.Clone()
	for i := range whole.IDs {
		whole.IDs[i] = ids[i]
	}
	if got, all := len(AppendState(nil, st)), len(AppendState(nil, whole)); got*3 > all*2 {
		t.Errorf("encoded in %d bytes, with every id %d: want a third less at least", got, all)
	}
	a, v := Apply(r, st, match(1, 600, "s", ""), 0)
	if v != Fired {
		t.Fatalf("verdict %v", v)
	}
	if a.Count != 4 || !slices.Equal(a.EventIDs, append(ids[47:], "s")) {
		t.Errorf("alert count %d, ids %v", a.Count, a.EventIDs)
	}
}

// A success that arrives out of order, behind the failures whose ids were
// forgotten, still completes its chain and counts them; the alert names
// only the events whose ids are kept. A failure whose id was forgotten,
// applied again, is not recognised as a copy (the stage's positions skip a
// redelivered batch before it reaches Apply).
func TestSequenceForgottenIDsStillCount(t *testing.T) {
	r := loadRule(t, failThenOK)
	st := &State{}
	for i := range 50 {
		Apply(r, st, match(0, 10*i, fmt.Sprintf("f%02d", i), ""), 0)
	}
	if _, v := Apply(r, st, match(0, 490, "f49", ""), 0); v != Duplicate {
		t.Errorf("a copy of the newest failure: verdict %v, want Duplicate", v)
	}
	a, v := Apply(r, st, match(1, 25, "s", ""), 0)
	if v != Fired {
		t.Fatalf("verdict %v", v)
	}
	if a.Count != 4 || len(a.Steps) != 4 || !slices.Equal(a.EventIDs, []string{"s"}) {
		t.Errorf("alert count %d, steps %d, ids %v", a.Count, len(a.Steps), a.EventIDs)
	}
	if !a.FirstSeen.Equal(t0) || !a.LastSeen.Equal(t0.Add(25e9)) {
		t.Errorf("alert from %s to %s", a.FirstSeen, a.LastSeen)
	}
}

// Forgetting ids changes no alert but what it names: on random streams of
// several keys, out of order by up to a minute, the alerts (ids, counts,
// times, verdicts) are those of the engine that keeps every id, and each
// alert names a subset of the events that one names.
func TestForgottenIDsChangeNoAlert(t *testing.T) {
	rs := []string{failThenOK, `
rules:
  - id: seq3
    title: T
    kind: sequence
    severity: 9
    window: 20m
    steps:
      - {name: a, condition: 'action == "a"', by: [src_ip], count: 2}
      - {name: b, condition: 'action == "b"', by: [src_ip], count: 4}
      - {name: c, condition: 'action == "c"', by: [src_ip], count: 2}
`, `
rules:
  - id: useq
    title: T
    kind: sequence
    unordered: true
    severity: 9
    window: 10m
    steps:
      - {name: a, condition: 'action == "a"', by: [src_ip], count: 5}
      - {name: b, condition: 'action == "b"', by: [src_ip]}
`}
	defer func() { forgetIDs = true }()
	for ri, y := range rs {
		r := loadRule(t, y)
		for seed := range uint64(40) {
			rng := rand.New(rand.NewPCG(seed, uint64(ri)))
			var ms []*event.Match
			sec := 0
			for i := range 600 {
				sec += rng.IntN(20)
				step := 0
				if rng.IntN(12) == 0 {
					step = len(r.Steps) - 1
				} else if len(r.Steps) > 2 {
					step = rng.IntN(len(r.Steps) - 1)
				}
				m := match(step, max(0, sec-rng.IntN(60)), fmt.Sprintf("e%04d", i), "")
				m.Key = fmt.Sprintf("k=%d", rng.IntN(3))
				ms = append(ms, m)
			}
			run := func(forget bool) (out []string, named [][]string) {
				forgetIDs = forget
				states := map[string]*State{}
				for _, m := range ms {
					st := states[m.Key]
					if st == nil {
						st = &State{}
						states[m.Key] = st
					}
					a, v := Apply(r, st, m, 0)
					if a == nil {
						out = append(out, fmt.Sprint(v))
						continue
					}
					out = append(out, fmt.Sprint(v, a.ID, a.Count, a.FirstSeen.Unix(), a.LastSeen.Unix(), len(a.Steps)))
					named = append(named, a.EventIDs)
				}
				return out, named
			}
			want, wantNamed := run(false)
			got, gotNamed := run(true)
			if !slices.Equal(got, want) {
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("rule %s seed %d, match %d: %s, keeping every id %s", r.ID, seed, i, got[i], want[i])
					}
				}
			}
			fired := 0
			for i := range gotNamed {
				fired++
				for _, id := range gotNamed[i] {
					if !slices.Contains(wantNamed[i], id) {
						t.Fatalf("rule %s seed %d: alert %d names %s, which keeping every id does not", r.ID, seed, i, id)
					}
				}
			}
			if seed == 0 {
				t.Logf("rule %s: %d alerts on seed 0", r.ID, fired)
			}
		}
	}
}

// A key's lists grow by a quarter, not twice over: appended at the end
// and cut at the front for as long as the key lives, a doubled list sat
// half empty.
func TestStateListsGrowByAQuarter(t *testing.T) {
	r := loadRule(t, failThenOK)
	st := &State{}
	for i := range 2000 {
		Apply(r, st, match(0, i, fmt.Sprintf("f%d", i), ""), 0)
		if n := len(st.Times); cap(st.Times) > n+n/4+4 || cap(st.IDs) > n+n/4+4 || cap(st.Steps) > n+n/4+4 {
			t.Fatalf("after %d failures: %d events in lists of %d, %d, %d", i+1, n, cap(st.Times), cap(st.IDs), cap(st.Steps))
		}
	}
}
