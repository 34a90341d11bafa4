package engine

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

const failThenAny = `
rules:
  - id: seqany
    title: T
    kind: sequence
    severity: 9
    window: 1h
    steps:
      - {name: fail, condition: 'outcome == "failure"', by: [src_ip]}
      - {name: any, condition: 'outcome != ""', by: [src_ip]}
`

// One event that satisfies two steps of a sequence is two matches with the
// same id (rules.Rule.Evaluate: a hit per step), applied one after the
// other. They are not copies of each other (has tells them apart by step).
// When the first completes a chain that ends at its second, the engine that
// keeps every id remembers the event as spent, so its second match is
// Duplicate; forgetting must not change that. Here the first match arrives
// out of order, behind three later failures, so its id is forgotten in the
// very Apply that spends it: the second match was counted, and completed an
// alert the keep-all engine never raised.
func TestReview13StepsOfOneEventSpentTogether(t *testing.T) {
	r := loadRule(t, failThenAny)
	defer func() { forgetIDs = true }()
	type m struct {
		step, sec int
		id        string
	}
	stream := []m{
		{0, 101, "g1"}, {0, 102, "g2"}, {0, 103, "g3"}, // later failures
		{1, 100, "f"},                // a later step at 100s: nothing before it yet
		{0, 100, "e"}, {1, 100, "e"}, // e matches both steps: fires [f, e] at 100s
		{0, 100, "k"}, // another failure at 100s
	}
	run := func(forget bool) (out []string) {
		forgetIDs = forget
		st := &State{}
		for _, x := range stream {
			a, v := Apply(r, st, match(x.step, x.sec, x.id, ""), 0)
			s := fmt.Sprint(x.id, "/", x.step, ": ", v)
			if a != nil {
				s += fmt.Sprint(" ", a.ID[:8], " count ", a.Count, " ", a.FirstSeen.Unix()-t0.Unix(), "-", a.LastSeen.Unix()-t0.Unix())
			}
			out = append(out, s)
		}
		return out
	}
	want, got := run(false), run(true)
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("match %d: %s; keeping every id: %s", i, got[i], want[i])
		}
	}
}

// review13Rule is a random sequence rule: 2 to 4 steps of counts 1 to 5,
// ordered or not, with or without suppress.
func review13Rule(t *testing.T, rng *rand.Rand) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rules:\n  - id: r\n    title: T\n    kind: sequence\n    severity: 5\n    window: %ds\n", 5+rng.IntN(120))
	if rng.IntN(2) == 0 {
		b.WriteString("    unordered: true\n")
	}
	if rng.IntN(3) == 0 {
		fmt.Fprintf(&b, "    suppress: %ds\n", 1+rng.IntN(60))
	}
	b.WriteString("    steps:\n")
	for i := range 2 + rng.IntN(3) {
		fmt.Fprintf(&b, "      - {name: s%d, condition: 'action == \"%d\"', by: [src_ip], count: %d}\n", i, i, 1+rng.IntN(5))
	}
	return b.String()
}

// review13Stream is n events of a few keys, many at the same second, out of
// order by up to lag seconds; each is one match, or (multi) sometimes a
// match for each of several steps, with the event's id, one after the other
// as Evaluate emits them.
func review13Stream(rng *rand.Rand, steps, n, lag int, multi bool) []*event.Match {
	var ms []*event.Match
	sec := 1000
	stay := []int{1, 2, 3, 40}[rng.IntN(4)] // 40: floods at one second
	for i := range n {
		if rng.IntN(stay) == 0 {
			sec += rng.IntN(6)
		}
		at := sec
		if lag > 0 && rng.IntN(2) == 0 {
			at -= rng.IntN(lag)
		}
		key := fmt.Sprintf("k=%d", rng.IntN(2))
		first := rng.IntN(steps)
		hit := []int{first}
		if multi && rng.IntN(2) == 0 {
			hit = nil
			for s := range steps {
				if s == first || rng.IntN(2) == 0 {
					hit = append(hit, s)
				}
			}
		}
		for _, s := range hit {
			m := match(s, at, fmt.Sprintf("e%05d", i), "")
			m.Key = key
			ms = append(ms, m)
		}
	}
	return ms
}

// review13Run applies ms and describes every verdict and alert (all but the
// ids it names), and the ids named, alert by alert. roundTrip > 0 sends the
// states through the codec every roundTrip matches.
func review13Run(t *testing.T, r *rules.Rule, ms []*event.Match, lateness time.Duration, forget bool, every int) (out []string, named [][]string) {
	forgetIDs = forget
	defer func() { forgetIDs = true }()
	states := map[string]*State{}
	for i, m := range ms {
		st := states[m.Key]
		if st == nil {
			st = &State{}
			states[m.Key] = st
		}
		a, v := Apply(r, st, m, lateness)
		if every > 0 && i%every == every-1 {
			states[m.Key] = roundTrip(t, st)
		}
		if a == nil {
			out = append(out, fmt.Sprint(v))
			continue
		}
		var hits []string
		for _, h := range a.Steps {
			hits = append(hits, fmt.Sprint(h.Name, "@", h.Time.Unix()))
		}
		out = append(out, fmt.Sprint(v, " ", a.ID, " ", a.Count, " ", a.FirstSeen.Unix(), "-", a.LastSeen.Unix(), " ", hits))
		named = append(named, a.EventIDs)
	}
	return out, named
}

func review13Diff(t *testing.T, what string, r *rules.Rule, ms []*event.Match, lateness time.Duration, every int) bool {
	t.Helper()
	want, wantNamed := review13Run(t, r, ms, lateness, false, every)
	got, gotNamed := review13Run(t, r, ms, lateness, true, every)
	review13Fired += len(wantNamed)
	for _, x := range want {
		if strings.HasPrefix(x, "3") {
			review13Dups++
		}
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%s, match %d (%s/%d at %d): %s; keeping every id: %s", what, i, ms[i].EventID, ms[i].Step, ms[i].Time.Unix()-t0.Unix(), got[i], want[i])
			return false
		}
	}
	for i := range gotNamed {
		for _, id := range gotNamed[i] {
			if !slices.Contains(wantNamed[i], id) {
				t.Errorf("%s: alert %d names %s, which keeping every id does not", what, i, id)
				return false
			}
		}
	}
	return true
}

// Forgetting ids changes no alert and no verdict, on random rules (2 to 4
// steps, counts 1 to 5, ordered or not, suppress), streams with many ties at
// one second, out of order, with a lateness, through the codec or not, each
// event one match with its own id.
func TestReview13ForgettingChangesNothingOneMatchPerEvent(t *testing.T) {
	review13Differential(t, false)
}

// The same where an event can satisfy several steps: a match per step, with
// the event's id, one after the other (rules.Rule.Evaluate).
func TestReview13ForgettingChangesNothingMatchPerStep(t *testing.T) {
	review13Differential(t, true)
}

var review13Fired, review13Dups int

func review13Differential(t *testing.T, multi bool) {
	review13Fired, review13Dups = 0, 0
	defer func() { t.Logf("%d alerts, %d duplicates", review13Fired, review13Dups) }()
	fails := 0
	for seed := range uint64(400) {
		rng := rand.New(rand.NewPCG(seed, 13))
		y := review13Rule(t, rng)
		r := loadRule(t, y)
		lag := []int{0, 3, 30, 200}[rng.IntN(4)]
		lateness := time.Duration(rng.IntN(3)*rng.IntN(100)) * time.Second
		n := []int{60, 300, 1200, 3000}[rng.IntN(4)]
		ms := review13Stream(rng, len(r.Steps), n, lag, multi)
		every := []int{0, 0, 7}[rng.IntN(3)]
		if !review13Diff(t, fmt.Sprintf("seed %d (lag %d, lateness %s, codec every %d)\n%s", seed, lag, lateness, every, y), r, ms, lateness, every) {
			if fails++; fails > 2 {
				return
			}
		}
	}
}

// DecodeState refuses lists not parallel to the times (983b5f1: "a damaged
// state must be refused here, not panic there"), but lets Steps and Values
// be empty: it cannot tell a sequence's state from a threshold's. A sequence
// state whose encoding lost one byte's worth of steps decodes cleanly, and
// Apply then panicked on it; so did a state of one kind applied under a rule
// of another (Badger, the state log and cold hold states by rule
// fingerprint, so only damage gets there). A state whose lists do not fit
// its rule's kind is damage, and the key starts over, as for any unreadable
// state.
func TestReview13DamagedStateDoesNotPanicApply(t *testing.T) {
	seq, thr := loadRule(t, failThenOK), loadRule(t, threshold3in60s)
	dis := loadRule(t, `
rules:
  - {id: d, title: T, kind: distinct, severity: 5, condition: "true", group_by: [src_ip], field: user, threshold: 3, window: 60s}
`)
	st := &State{}
	for i := range 12 {
		Apply(seq, st, match(0, 10*i, fmt.Sprintf("f%d", i), ""), 0)
	}
	v := AppendState(nil, st)
	apply := func(what string, r *rules.Rule, st *State) (ok bool) {
		t.Helper()
		defer func() {
			if p := recover(); p != nil {
				t.Errorf("%s: Apply of rule %s panics: %v", what, r.ID, p)
			}
		}()
		Apply(r, st, match(len(r.Steps)-1, 500, "zz", "u1"), 0)
		Apply(r, st, match(0, 50, "zy", "u2"), 0)
		Apply(r, st, match(0, 501, "zx", "u3"), 0)
		return true
	}
	failed := 0
	for n := 0; n < len(v) && failed < 3; n++ {
		for b := range 256 {
			bad := append([]byte(nil), v...)
			bad[n] = byte(b)
			var got State
			if DecodeState(bad, &got) != nil {
				continue
			}
			if !apply(fmt.Sprintf("byte %d set to %02x", n, b), seq, &got) {
				if failed++; failed == 3 {
					break
				}
			}
		}
	}
	// A state of each kind under a rule of each other kind.
	thrSt, disSt := &State{}, &State{}
	for i := range 2 {
		Apply(thr, thrSt, match(0, i, fmt.Sprint("t", i), ""), 0)
		Apply(dis, disSt, match(0, i, fmt.Sprint("d", i), fmt.Sprint("u", i)), 0)
	}
	for _, c := range []struct {
		name string
		st   *State
	}{{"sequence", st}, {"threshold", thrSt}, {"distinct", disSt}} {
		for _, r := range []*rules.Rule{seq, thr, dis} {
			got := roundTrip(t, c.st)
			apply(c.name+" state", r, got)
		}
	}
}
