package window

import (
	"context"
	"errors"
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

// Probes of the contract's "a crash between 4 and 5 redelivers matches
// the states already hold; apply treats them as duplicates": a stage is
// killed after a checkpoint's states (and mark) are durable but before its
// matches are acked, a new stage on the same Badger and JetStream is
// handed them again, and what it publishes and stores is compared with an
// uninterrupted run's.

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
	for k, v := range wantStates {
		var st engine.State
		_ = engine.DecodeState([]byte(v), &st)
		t.Logf("uninterrupted: state %q: %+v", k, st)
	}

	run := newProbeRun(t, ruleItems)
	n := 0
	s, stop = run.stage(ctx, func(name string) error {
		if name == "sealed" {
			n++
		}
		if name == step && n == at {
			return errors.New("kill -9")
		}
		return nil
	})
	acked := drive(ctx, t, s, batches)
	stop()
	if !s.killed.Load() {
		t.Fatalf("never killed at %s of checkpoint %d", step, at)
	}
	s2, stop2 := run.stage(ctx, nil)
	drive(ctx, t, s2, batches[acked:])
	stop2()
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

// at is t0 plus d.
func at(d time.Duration) time.Time { return t0.Add(d) }

// A threshold rule with an upper bound drops an event that finds the
// region after the open window's deadline already holding at_most+1
// events. A later event (past the deadline plus the lateness) judges the
// window within the same epoch, and the events that waited open the next,
// with room to spare. Handed again, the dropped event is neither spent
// (it is after the judged window) nor held: applyClosing inserts it into
// the new window, which then holds more than at_most and does not fire.
func TestProbeRedeliverAtMostThreshold(t *testing.T) {
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
	for _, step := range []string{"states", "marked"} {
		t.Run(step, func(t *testing.T) {
			probeRedeliver(t, rule, [][]*event.Match{batch}, step, 1)
		})
	}
}
