package window

import (
	"context"
	"maps"
	"slices"
	"testing"
	"testing/fstest"
	"time"

	"github.com/outpost-siem/outpost/aggregator/bus/bustest"
	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/state/statetest"
	"github.com/outpost-siem/outpost/rules"
)

// Probes of the contract's "a crash after that redelivers messages the
// states already hold: the stage skips each by its position": a stage is
// killed once a checkpoint's record is whole in the state log (before or
// after its old timer keys and its mark are written) but before its
// matches are acked, a new stage on the same Badger and JetStream is
// handed them again at the positions they had, and what it publishes and
// stores is compared with an uninterrupted run's. Each case is a rule
// kind for which applying a match twice is not a no-op.

func newProbeRun(t *testing.T, ruleItems string) *crashRun {
	t.Helper()
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte("rules:" + ruleItems + "\n")}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	return &crashRun{t: t, db: statetest.Open(t), bus: bustest.Open(context.Background(), t), set: set, published: map[string]string{}}
}

// probeRedeliver runs batches uninterrupted, then again killed at step of
// the at-th checkpoint and restarted with the batches not acked handed
// again; it reports (t.Error) any alert or stored state that differs.
func probeRedeliver(t *testing.T, ruleItems string, batches [][]*event.Match, step string, at int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	ref := newProbeRun(t, ruleItems)
	s, stop := ref.stage(ctx, nil)
	drive(ctx, t, s, batches)
	stop()
	wantIDs, wantStates := ref.ids(), ref.states()
	t.Logf("uninterrupted: alerts %v", ref.published)

	run := newProbeRun(t, ruleItems)
	acked := run.killAndRedeliver(ctx, batches, "sealed", step, at)
	t.Logf("killed at %s of checkpoint %d, %d of %d batches acked, handed again %d", step, at, acked, len(batches), len(batches)-acked)

	got := run.ids()
	if !slices.Equal(got, wantIDs) {
		for _, id := range wantIDs {
			if !slices.Contains(got, id) {
				t.Errorf("alert %s (%s) raised by the uninterrupted run is missing", id, ref.published[id])
			}
		}
		for _, id := range got {
			if !slices.Contains(wantIDs, id) {
				t.Errorf("alert %s (%s) not raised by the uninterrupted run", id, run.published[id])
			}
		}
	}
	gotStates := run.states()
	if !maps.Equal(gotStates, wantStates) {
		for _, k := range slices.Sorted(maps.Keys(wantStates)) {
			if gotStates[k] != wantStates[k] {
				var a, b engine.State
				_ = engine.DecodeState([]byte(wantStates[k]), &a)
				_ = engine.DecodeState([]byte(gotStates[k]), &b)
				t.Errorf("state %q differs:\n got %+v\nwant %+v", k, b, a)
			}
		}
		for k := range gotStates {
			if _, ok := wantStates[k]; !ok {
				t.Errorf("state %q stored, none in the uninterrupted run", k)
			}
		}
	}
}

// afterStates are the kill points at which the checkpoint's states are
// durable (its state log record whole: "logged"; the old timer keys
// deleted: "deleted"; and the mark: "marked") but its matches not acked.
var afterStates = []string{"logged", "deleted", "marked"}

// beforeStates are the kill points before the state log holds the
// checkpoint: the matches are applied again to the states before it.
var beforeStates = []string{"sealed", "acked", "sets", "half"}

// TestProbeRedeliverControl: killed before the states are durable, every
// probe's stream gives the uninterrupted run's alerts and states.
func TestProbeRedeliverControl(t *testing.T) {
	for name, c := range probeCases() {
		for _, step := range beforeStates {
			t.Run(name+"/"+step, func(t *testing.T) { probeRedeliver(t, c.rule, c.batches, step, 1) })
		}
	}
}

func probeCases() map[string]probeCase {
	return map[string]probeCase{
		"atMostThreshold":            atMostThresholdCase(),
		"thresholdTiedSpent":         thresholdTiedSpentCase(),
		"unorderedSequenceTiedSpent": unorderedSequenceTiedSpentCase(),
		"distinctSameValue":          distinctSameValueCase(),
		"absenceExpect":              absenceExpectCase(),
	}
}

// TestProbeRedeliverAfterTheRecord: killed once the checkpoint's record
// is whole, every probe's stream, handed again at its positions, gives
// the uninterrupted run's alerts and states.
func TestProbeRedeliverAfterTheRecord(t *testing.T) {
	for name, c := range probeCases() {
		for _, step := range afterStates {
			t.Run(name+"/"+step, func(t *testing.T) { probeRedeliver(t, c.rule, c.batches, step, 1) })
		}
	}
}

type probeCase struct {
	rule    string
	batches [][]*event.Match
}

// at is t0 plus d.
func at(d time.Duration) time.Time { return t0.Add(d) }

// A threshold rule with an upper bound drops an event that finds the
// region after the open window's deadline already holding at_most+1
// events. A later event (past the deadline plus the lateness) judges the
// window within the same epoch, and the events that waited open the next,
// with room to spare. Handed again, the dropped event is neither spent
// (it is after the judged window) nor held: applyClosing inserts it into
// the new window, which then holds more than at_most and does not fire.
func atMostThresholdCase() probeCase {
	const rule = `
  - {id: few, title: T, kind: threshold, severity: 5, condition: 'host != ""', group_by: [host], threshold: 2, at_most: 2, window: 10m}`
	m := func(id string, d time.Duration) *event.Match { return match("few", "h1", id, at(d)) }
	batch := []*event.Match{
		m("a", 0),              // opens window 1: [0, 10m]
		m("b", 11*time.Minute), // after its deadline: waits for window 2
		m("c", 12*time.Minute), // waits
		m("d", time.Hour),      // waits (the region after the deadline holds 3 = at_most+1)
		m("e", 15*time.Minute), // the region is full: dropped
		m("f", 5*time.Hour),    // > deadline + lateness (2h): judges window 1; window 2 is [11m, 21m]
	}
	return probeCase{rule, [][]*event.Match{batch}}
}

// pad makes batches of the first ones, then empty batches up to the fifth
// (drive checkpoints after it: checkpoint 1 holds them), then the rest.
func pad(first [][]*event.Match, rest ...[]*event.Match) [][]*event.Match {
	out := slices.Clone(first)
	for len(out) < 5 {
		out = append(out, nil)
	}
	return append(out, rest...)
}

// withStep is m with its step set.
func withStep(m *event.Match, step int) *event.Match { m.Step = step; return m }

// withValue is m with its value set.
func withValue(m *event.Match, v string) *event.Match { m.Value = v; return m }

// A threshold rule (no upper bound) with ties at the second: an alert
// spends its events through its last time, remembering in SpentIDs the ids
// held at exactly that time. A second alert whose window begins at that
// same second replaces SpentIDs with its own ids, so the first alert's
// event at that second (y) is no longer recognised as spent: handed
// again, it is inserted, and with the next event it completes a window the
// uninterrupted run never saw (a new alert id).
func thresholdTiedSpentCase() probeCase {
	const rule = `
  - {id: many, title: T, kind: threshold, severity: 5, condition: 'host != ""', group_by: [host], threshold: 2, window: 1m}`
	m := func(id string, d time.Duration) *event.Match { return match("many", "h1", id, at(d)) }
	batches := pad([][]*event.Match{{
		m("x", 10*time.Second),
		m("y", 12*time.Second), // fires [x, y]: spent through 12s, SpentIDs [y]
		m("z", 12*time.Second), // at the spent second, not spent: held
		m("w", 12*time.Second), // fires [z, w]: SpentIDs [z, w]
	}}, []*event.Match{m("v", 13*time.Second)}) // alone, no alert
	return probeCase{rule, batches}
}

// The same with an unordered sequence: SpentIDs replaced by a second
// alert at the same second.
func unorderedSequenceTiedSpentCase() probeCase {
	const rule = `
  - id: useq
    title: T
    kind: sequence
    unordered: true
    severity: 9
    window: 10m
    group_by: [host]
    steps:
      - {name: a, condition: 'host != ""'}
      - {name: b, condition: 'host == "x"'}`
	m := func(id string, d time.Duration, step int) *event.Match {
		return withStep(match("useq", "h1", id, at(d)), step)
	}
	batches := pad([][]*event.Match{{
		m("e0", 23*time.Minute, 0),
		m("e1", 18*time.Minute, 1), // fires [e1, e0]: spent through 23m, SpentIDs [e0]
		m("e2", 23*time.Minute, 0),
		m("e3", 23*time.Minute, 1), // fires [e2, e3]: SpentIDs [e2, e3]
	}}, []*event.Match{m("e4", 24*time.Minute, 1)}) // alone, no alert
	return probeCase{rule, batches}
}

// A distinct rule keeps one entry per value, its latest: an event whose
// value is already held at the same time or later is not inserted (e1).
// An alert at that time spends the ids held then (SpentIDs [e0]): e1 is
// not among them. Handed again, e1 is neither spent nor held, and is
// inserted: with suppress, the next window then begins at e1's time, within
// suppress of the last alert, is suppressed and spends e3, so the window
// the uninterrupted run fired for (e3, e4) never forms.
func distinctSameValueCase() probeCase {
	const rule = `
  - {id: spread, title: T, kind: distinct, severity: 5, condition: 'host != ""', group_by: [host], field: user, threshold: 2, window: 10m, suppress: 5m}`
	m := func(id string, d time.Duration, v string) *event.Match {
		return withValue(match("spread", "h1", id, at(d)), v)
	}
	batches := pad([][]*event.Match{{
		m("e0", 24*time.Minute, "u2"),
		m("e1", 24*time.Minute, "u2"), // u2 held at 24m already: not inserted
		m("e2", 23*time.Minute, "u1"), // fires [e2, e0]: spent through 24m, SpentIDs [e0]
	}}, []*event.Match{
		m("e3", 33*time.Minute, "u3"),
		m("e4", 35*time.Minute, "u1"), // fires [e3, e4]: 9m after the last alert
	})
	return probeCase{rule, batches}
}

// An absence rule with expect: applyAbsence first expires a deadline any
// match is later than, duplicate or not. An expected event (done at 34m)
// that came before its trigger (start at 18m, armed to 33m) and that the
// watermark (34m less the lateness) has not let fire, handed again,
// passes the deadline: the alert is raised at once, and the redelivered
// trigger arms it again. The uninterrupted run's next expected event (done
// at 30m) disarms it in time: no alert.
func absenceExpectCase() probeCase {
	const rule = `
  - {id: ack, title: T, kind: absence, severity: 5, condition: 'host != ""', expect: 'host == "x"', group_by: [host], for: 15m, fields: [host]}`
	m := func(id string, d time.Duration, step int) *event.Match {
		return withStep(match("ack", "h1", id, at(d)), step)
	}
	batches := pad([][]*event.Match{{
		m("done1", 34*time.Minute, 1), // nothing armed: nothing
		m("start", 18*time.Minute, 0), // arms 33m
	}}, []*event.Match{m("done2", 30*time.Minute, 1)}) // within for: disarms
	return probeCase{rule, batches}
}
