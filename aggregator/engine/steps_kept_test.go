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

// flaggedThenRDP has the shape of the pack's rdp-from-malicious-ip: three
// steps of one event each, by source address.
const flaggedThenRDP = `
rules:
  - id: flagged-rdp
    title: T
    kind: sequence
    severity: 9
    window: 1h
    steps:
      - {name: flagged, condition: 'category == "alert"', by: [src_ip]}
      - {name: rdp-allowed, condition: 'action == "flow"', by: [src_ip]}
      - {name: rdp-logon, condition: 'action == "logon"', by: [src_ip]}
`

// A flagged address that opens many RDP connections before its logon
// succeeds (a brute force does, and an attacker can at will) must not push
// its flag out of the key's bounded state: the chain still completes. With
// one bound for the whole key, the oldest events went first whatever their
// step, and 64 connections were enough to evade the rule.
func TestAFloodOfOneStepKeepsTheStepBefore(t *testing.T) {
	pack, err := rules.Pack()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*rules.Rule{loadRule(t, flaggedThenRDP), pack.Rule("rdp-from-malicious-ip")} {
		t.Run(r.ID, func(t *testing.T) { floodTheMiddleStep(t, r) })
	}
}

func floodTheMiddleStep(t *testing.T, r *rules.Rule) {
	st := &State{}
	Apply(r, st, match(0, 0, "flag", ""), 0)
	for i := range 200 {
		if a, _ := Apply(r, st, match(1, 1+i, fmt.Sprintf("flow%03d", i), ""), 0); a != nil {
			t.Fatal("fired before the logon")
		}
	}
	a, v := Apply(r, st, match(2, 300, "logon", ""), 0)
	if v != Fired {
		t.Fatalf("verdict %v after 200 connections, want Fired", v)
	}
	if len(a.Steps) != 3 || a.Steps[0].EventID != "flag" || a.Steps[1].EventID != "flow199" || a.Steps[2].EventID != "logon" {
		t.Errorf("alert steps %+v", a.Steps)
	}
}

// A flood of the first step after the second keeps the first step's event
// that came before the second: the chain through it is still there.
func TestAFloodOfTheFirstStepKeepsTheOneBeforeTheNext(t *testing.T) {
	r := loadRule(t, flaggedThenRDP)
	st := &State{}
	Apply(r, st, match(0, 0, "flag", ""), 0)
	Apply(r, st, match(1, 1, "flow", ""), 0)
	for i := range 200 {
		Apply(r, st, match(0, 2+i, fmt.Sprintf("flag%03d", i), ""), 0)
	}
	a, v := Apply(r, st, match(2, 300, "logon", ""), 0)
	if v != Fired {
		t.Fatalf("verdict %v after 200 more flags, want Fired", v)
	}
	// The flag's id may be forgotten (forgetOldIDs keeps the ids of a
	// step's newest events only); its time says the chain went through it.
	if len(a.Steps) != 3 || !a.Steps[0].Time.Equal(t0) || a.Steps[1].EventID != "flow" {
		t.Errorf("alert steps %+v", a.Steps)
	}
}

// However a key's events are mixed, its state stays bounded: at most twice
// the bound for the whole key (4 × the chain, or 64) even when every event
// is one a chain could use.
func TestSequenceStateStaysBounded(t *testing.T) {
	for _, yaml := range []string{flaggedThenRDP, failThenOK} {
		r := loadRule(t, yaml)
		need := 0
		for _, s := range r.Steps {
			need = max(need, s.Count*len(r.Steps))
		}
		bound := 2 * max(4*need, 64)
		rng := rand.New(rand.NewPCG(1, 2))
		st := &State{}
		most := 0
		for i := range 20_000 {
			// Mostly early steps (the last one completes chains, which
			// empties the state); a few out of order by up to a minute.
			step := 0
			if x := rng.IntN(100); x < 2 {
				step = len(r.Steps) - 1
			} else if x < 60 && len(r.Steps) > 2 {
				step = 1
			}
			Apply(r, st, match(step, i/4-rng.IntN(60), fmt.Sprintf("e%05d", i), ""), 0)
			most = max(most, len(st.Times))
			if len(st.Times) > bound {
				t.Fatalf("%s: %d events held after %d matches, bound %d", r.ID, len(st.Times), i+1, bound)
			}
		}
		t.Logf("%s: at most %d events held (bound %d)", r.ID, most, bound)
	}
}

// When the events chains could pick are more than twice the bound (a long
// sequence, its steps interleaved against their order), the oldest of them
// go too: the state stays at twice the bound, in time order, each event
// with its own id and step.
func TestTrimStepsHoldsTwiceTheBound(t *testing.T) {
	yaml := "rules:\n  - id: ten\n    title: T\n    kind: sequence\n    severity: 9\n    window: 1h\n    steps:\n"
	for k := range 10 {
		yaml += fmt.Sprintf("      - {name: s%d, condition: 'action == \"%d\"', by: [src_ip]}\n", k, k)
	}
	r := loadRule(t, yaml)
	st := &State{}
	for i := range 500 {
		step := 9 - i%10 // each round of ten against the steps' order
		st.Times = append(st.Times, t0.UnixNano()+int64(i)*1e9)
		st.IDs = append(st.IDs, fmt.Sprintf("%03d/%d", i, step))
		st.Steps = append(st.Steps, uint8(step))
	}
	// Bound 64: the events chains could pick are more than 64 and fewer
	// than 128; only the others go.
	st.trimSteps(r, 64, 128)
	if n := len(st.Times); n <= 64 || n > 128 {
		t.Fatalf("%d events held with a bound of 64, want 65 to 128", n)
	}
	// Bound 32: they are more than twice it; the oldest of them go too,
	// down to an eighth below twice the bound.
	st.trimSteps(r, 32, 64)
	if len(st.Times) != 56 || len(st.IDs) != 56 || len(st.Steps) != 56 {
		t.Fatalf("%d times, %d ids, %d steps held, want 56", len(st.Times), len(st.IDs), len(st.Steps))
	}
	for i := range st.Times {
		var n, step int
		fmt.Sscanf(st.IDs[i], "%d/%d", &n, &step)
		if st.Times[i] != t0.UnixNano()+int64(n)*1e9 || int(st.Steps[i]) != step {
			t.Fatalf("event %d: time %d, id %s, step %d: not the event's own", i, st.Times[i], st.IDs[i], st.Steps[i])
		}
		if i > 0 && st.Times[i] <= st.Times[i-1] {
			t.Fatalf("event %d out of order", i)
		}
	}
	if st.IDs[55] != "499/0" {
		t.Errorf("the newest event held is %s, want 499/0", st.IDs[55])
	}
}

// trimStepsPlain is trimSteps as first written, each kept event of a step
// looking back over the whole state for the events of the step before: a
// cost of steps × events × kept events, which a flood of a long rule made
// tens of microseconds a match. The test holds trimSteps to it.
func trimStepsPlain(st *State, r *rules.Rule, to, most int) {
	n := len(st.Times)
	keep := make([]bool, n)
	left := make([]int, len(r.Steps))
	for k, s := range r.Steps {
		left[k] = max(4*s.Count, minKeptPerStep)
	}
	for i := n - 1; i >= 0; i-- {
		if k := int(st.Steps[i]); k < len(left) && left[k] > 0 {
			left[k]--
			keep[i] = true
		}
	}
	if !r.Unordered {
		for k := len(r.Steps) - 2; k >= 0; k-- {
			for j := n - 1; j >= 0; j-- {
				if !keep[j] || int(st.Steps[j]) != k+1 {
					continue
				}
				for i, c := n-1, max(r.Steps[k].Count, 1); i >= 0 && c > 0; i-- {
					if int(st.Steps[i]) == k && st.Times[i] <= st.Times[j] {
						keep[i] = true
						c--
					}
				}
			}
		}
	}
	unkept := 0
	for _, k := range keep {
		if !k {
			unkept++
		}
	}
	dropUnkept := max(min(unkept, n-to), 0)
	dropKept := 0
	if n-dropUnkept > most {
		dropKept = n - dropUnkept - (most - most/8)
	}
	var out State
	for i := range n {
		if !keep[i] && dropUnkept > 0 {
			dropUnkept--
			continue
		}
		if keep[i] && dropKept > 0 {
			dropKept--
			continue
		}
		out.Times, out.IDs, out.Steps = append(out.Times, st.Times[i]), append(out.IDs, st.IDs[i]), append(out.Steps, st.Steps[i])
	}
	st.Times, st.IDs, st.Steps = out.Times, out.IDs, out.Steps
}

// On random states (ties, every step, rules of 2 to 8 steps of counts 1
// to 4, ordered or not, bounds small enough to trim), trimSteps keeps
// exactly what the plain version does.
func TestTrimStepsIsThePlainOne(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for round := range 2000 {
		steps := 2 + rng.IntN(7)
		yaml := fmt.Sprintf("rules:\n  - id: r%d\n    title: T\n    kind: sequence\n    severity: 9\n    window: 1h\n    unordered: %t\n    steps:\n", round, rng.IntN(4) == 0)
		for k := range steps {
			yaml += fmt.Sprintf("      - {name: s%d, condition: 'action == \"%d\"', by: [src_ip], count: %d}\n", k, k, 1+rng.IntN(4))
		}
		r := loadRule(t, yaml)
		st := &State{}
		at := t0.UnixNano()
		for i := range 20 + rng.IntN(300) {
			if rng.IntN(3) > 0 {
				at += int64(rng.IntN(3)) * 1e9 // ties are common
			}
			st.Times = append(st.Times, at)
			st.IDs = append(st.IDs, fmt.Sprintf("e%d", i))
			st.Steps = append(st.Steps, uint8(rng.IntN(steps)))
		}
		to := 1 + rng.IntN(len(st.Times))
		most := to + rng.IntN(to+1)
		want := st.Clone()
		trimStepsPlain(want, r, to, most)
		st.trimSteps(r, to, most)
		if !slices.Equal(st.Times, want.Times) || !slices.Equal(st.IDs, want.IDs) || !slices.Equal(st.Steps, want.Steps) {
			t.Fatalf("round %d (%d steps, to %d, most %d): kept %v, the plain version %v", round, steps, to, most, st.IDs, want.IDs)
		}
	}
}

// BenchmarkTrimStepsFlood: a key of a ten-step rule (count 10 each) full
// of events of every step that never make a chain; one op is one match.
func BenchmarkTrimStepsFlood(b *testing.B) {
	yaml := "rules:\n  - id: ten\n    title: T\n    kind: sequence\n    severity: 9\n    window: 1h\n    steps:\n"
	for k := range 10 {
		yaml += fmt.Sprintf("      - {name: s%d, condition: 'action == \"%d\"', by: [src_ip], count: 10}\n", k, k)
	}
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(yaml)}}, ".")
	if err != nil {
		b.Fatal(err)
	}
	r := set.Rules[0]
	st := &State{}
	ids := make([]string, 4096)
	for i := range ids {
		ids[i] = fmt.Sprintf("e%05d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		// Against the steps' order, a step per second: never a chain.
		Apply(r, st, &event.Match{Key: "k", Time: t0.Add(time.Duration(i) * time.Second), EventID: ids[i%len(ids)], Step: 9 - i%10}, 0)
	}
}
